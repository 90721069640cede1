"""A dead worker is noticed at once and its exit code reported, but every in-flight task fails with it and none is named.

``loky.ProcessPoolExecutor``, the non-reusable one (``get_reusable_executor`` keeps its workers alive
after ``run()`` returns, by design, which the contract forbids), with the spawn context, driven by the
bounded-submission loop in ``variants._bounded``. Start method: spawn (as every variant).

    In the main process                                   |  loky worker processes
                                                          |
    bounded loop: submit(job, item) ----------------------+--> job(item)
      wait(futures, FIRST_COMPLETED, deadline)            |
    loky's executor-manager thread:                       |
      worker exited -> TerminatedWorkerError("... exit codes of the workers are {SIGKILL(-9)}")
                       on every unfinished future         |
    fault: shutdown(wait=False, kill_workers=True)        |

No per-task timeout in loky: ``task_timeout`` raises NotImplementedError.

Compared with: ``variants.supervisor``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from ._bounded import Classified, drive
from .contract import RunReport, check_arguments, no_task_timeout

NAME = "loky_executor"


def classify(e: BaseException) -> Classified:
    from loky.process_executor import BrokenProcessPool, TerminatedWorkerError

    if isinstance(e, TerminatedWorkerError):
        # loky says which exit codes its dead workers had, not which task each was running.
        codes = [int(c) for c in re.findall(r"\((-?\d+)\)", str(e).rsplit("exit codes", 1)[-1])]
        return "worker_died", codes[0] if len(codes) == 1 else None, False
    if isinstance(e, BrokenProcessPool):
        return "worker_died", None, False
    return "worker_error", None, True


def run(job: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 4,
        on_result: Callable[[Any, Any], Any] | None = None, timeout: float | None = None,
        task_timeout: float | None = None, max_in_flight: int | None = None) -> RunReport:
    check_arguments(NAME, job, items, workers, on_result, timeout, task_timeout)
    no_task_timeout(NAME, task_timeout)
    from loky import ProcessPoolExecutor
    from loky.backend.context import get_context

    ex = ProcessPoolExecutor(max_workers=workers, context=get_context("spawn"))
    return drive(NAME, lambda item: ex.submit(job, item), items, on_result, timeout, max_in_flight or 2 * workers,
                 classify, stop=lambda: ex.shutdown(wait=True, kill_workers=True),
                 close=lambda: ex.shutdown(wait=True))
