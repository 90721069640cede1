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
from .contract import RunReport, check_arguments, no_task_timeout, unsupported

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
        task_timeout: float | None = None, max_in_flight: int | None = None,
        initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = (),
        max_tasks_per_worker: int | None = None, memory_limit: int | None = None) -> RunReport:
    """The contract's ``run()``, plus loky's own worker lifecycle options:

    - ``initializer(*initargs)``: ``ProcessPoolExecutor(initializer=, initargs=)``. One that raises is
      logged and its worker exits with code 0: TerminatedWorkerError ("exit codes ... {EXIT(0)}").
    - ``max_tasks_per_worker``: loky has no task-count recycling (its ``timeout`` ends idle workers);
      NotImplementedError.
    - ``memory_limit``: NotImplementedError. What loky has instead is a leak check, not a limit: after a
      task, at most once a second, a worker compares its RSS with the one it had after its first task
      and, past ``LOKY_MAX_MEMORY_LEAK_SIZE`` (300 MB by default) more even after ``gc.collect()``, exits
      to be replaced. The task that grew it has already finished; a task that allocates and frees is
      never seen.
    """
    check_arguments(NAME, job, items, workers, on_result, timeout, task_timeout)
    no_task_timeout(NAME, task_timeout)
    unsupported(NAME, "max_tasks_per_worker", max_tasks_per_worker,
                "loky recycles workers only when idle past its timeout or after a suspected memory leak, never "
                "after N tasks")
    unsupported(NAME, "memory_limit", memory_limit,
                "loky only restarts a worker, between tasks, whose RSS grew past LOKY_MAX_MEMORY_LEAK_SIZE (300 "
                "MB) over its size after its first task; that is a leak check, not a per-worker limit")
    from loky import ProcessPoolExecutor
    from loky.backend.context import get_context

    ex = ProcessPoolExecutor(max_workers=workers, context=get_context("spawn"), initializer=initializer,
                             initargs=initargs)
    return drive(NAME, lambda item: ex.submit(job, item), items, on_result, timeout, max_in_flight or 2 * workers,
                 classify, stop=lambda: ex.shutdown(wait=True, kill_workers=True),
                 close=lambda: ex.shutdown(wait=True))
