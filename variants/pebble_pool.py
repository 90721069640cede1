"""A dead worker fails only its own task, with exit code and pid; pebble also enforces per-task timeouts.

``pebble.ProcessPool`` (spawn context), ``schedule(job, args=(item,), timeout=task_timeout)``, driven by the
bounded-submission loop in ``variants._bounded``. Start method: spawn (as every variant).

    In the main process                                   |  pebble worker processes
                                                          |
    bounded loop: schedule(job, item, timeout) -----------+--> job(item)
      wait(futures, FIRST_COMPLETED, deadline)            |
    pebble's pool-manager thread:                         |
      worker exited      -> ProcessExpired(exitcode, pid) on the task it was running
      task past timeout  -> stop that worker, TimeoutError on that task
    fault: pool.stop() (terminates workers), join(limit)

What the experiments check: detection latency (pebble's manager thread polls), whether a worker ignoring
SIGTERM is stopped, what happens to workers when the parent dies, and memory.

Compared with: ``variants.supervisor``.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Callable, Iterable
from typing import Any

from ._bounded import Classified, drive
from .contract import RunReport, check_arguments, unsupported

NAME = "pebble_pool"
JOIN_LIMIT = 10.0  # seconds: every join has a limit; pebble's stop() terminates, so this is ample


def classify(e: BaseException) -> Classified:
    from pebble import ProcessExpired

    if isinstance(e, ProcessExpired):
        return "worker_died", e.exitcode, True  # pebble fails only the dead worker's own task
    if isinstance(e, cf.TimeoutError):
        return "task_timeout", None, True
    if isinstance(e, cf.CancelledError):
        return "worker_error", None, False
    return "worker_error", None, True


def run(job: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 4,
        on_result: Callable[[Any, Any], Any] | None = None, timeout: float | None = None,
        task_timeout: float | None = None, max_in_flight: int | None = None,
        initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = (),
        max_tasks_per_worker: int | None = None, memory_limit: int | None = None) -> RunReport:
    """The contract's ``run()``, plus pebble's own worker lifecycle options:

    - ``initializer(*initargs)``: ``ProcessPool(initializer=, initargs=)``, run in every worker it starts.
      One that raises is logged and its worker exits; once no worker is left pebble fails every task
      with ``BrokenProcessPool("All workers expired")``.
    - ``max_tasks_per_worker``: ``ProcessPool(max_tasks=)``.
    - ``memory_limit``: pebble has none; NotImplementedError.
    """
    check_arguments(NAME, job, items, workers, on_result, timeout, task_timeout)
    unsupported(NAME, "memory_limit", memory_limit,
                "pebble's ProcessPool has no per-worker memory limit")
    from pebble import ProcessPool

    pool = ProcessPool(max_workers=workers, max_tasks=max_tasks_per_worker or 0, initializer=initializer,
                       initargs=initargs, context=multiprocessing.get_context("spawn"))

    def stop() -> None:
        pool.stop()
        pool.join(JOIN_LIMIT)

    def close() -> None:
        pool.close()
        pool.join(JOIN_LIMIT)

    return drive(NAME, lambda item: pool.schedule(job, args=(item,), timeout=task_timeout), items, on_result,
                 timeout, max_in_flight or 2 * workers, classify, stop, close)
