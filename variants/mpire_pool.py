"""A dead worker fails every pending task with one "Worker-N died unexpectedly": no item, no exit code, seconds later.

``mpire.WorkerPool`` (spawn), ``apply_async(job, (item,), task_timeout=task_timeout)`` per item, driven by
the bounded-submission loop in ``variants._bounded``. ``apply_async`` returns an ``AsyncResult`` that
cannot be waited on together with others; its callbacks settle a Future (``variants._as_future``).

    In the main process                                   |  mpire worker processes
                                                          |  (one task queue each)
    bounded loop: apply_async(job, item, task_timeout) ---+--> job(item)
      wait(futures, FIRST_COMPLETED, deadline)            |
    mpire's handler threads (each sleeps 0.1 s between checks):
      death watch: a worker the OS says is dead -> RuntimeError("Worker-N died unexpectedly")
                   on every pending task, and it stops watching
      timeouts:    task past task_timeout -> SIGUSR1 to that worker (raises inside the job),
                   TimeoutError on that task
    fault: pool.terminate(): SIGUSR1 to busy workers, joins, then one process per queue to drain it
           (~1 s with 4 workers under spawn, ~2 s after a death: every mpire fault costs that before run() raises)

Worker liveness, the task timeout and the SIGUSR1 that stops a task are mpire's own; no exit code or PDEATHSIG:
workers outlive a SIGKILLed parent. Progress bars and worker insights exist for ``map``; not used here.

Fixed by: ``variants.supervisor``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any

from ._as_future import settled_by_callbacks
from ._bounded import Classified, drive
from .contract import RunReport, check_arguments, unsupported

NAME = "mpire_pool"
DIED = re.compile(r"Worker-\d+ died unexpectedly")
TASK_TIMED_OUT = re.compile(r"Worker-\d+ task timed out")


def classify(e: BaseException) -> Classified:
    if isinstance(e, RuntimeError) and DIED.fullmatch(str(e)):
        # mpire fails every pending task with this one error: it names the worker, not the task.
        return "worker_died", None, False
    if isinstance(e, TimeoutError) and TASK_TIMED_OUT.match(str(e)):
        return "task_timeout", None, True  # set on the timed-out task only
    return "worker_error", None, True


def run(job: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 4,
        on_result: Callable[[Any, Any], Any] | None = None, timeout: float | None = None,
        task_timeout: float | None = None, max_in_flight: int | None = None,
        initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = (),
        max_tasks_per_worker: int | None = None, memory_limit: int | None = None) -> RunReport:
    """The contract's ``run()``, plus mpire's own worker lifecycle options:

    - ``initializer(*initargs)``: ``apply_async(worker_init=)``, which mpire calls with no arguments (the
      worker id, shared objects or worker state only when the pool is set up to pass them), hence
      ``functools.partial(initializer, *initargs)``; it runs before a worker's first task. One that
      raises fails the pending tasks with its own exception.
    - ``max_tasks_per_worker``: mpire's ``worker_lifespan`` is a parameter of ``map``/``imap`` only;
      ``apply_async`` starts the workers with none. NotImplementedError.
    - ``memory_limit``: mpire has none; NotImplementedError.
    """
    check_arguments(NAME, job, items, workers, on_result, timeout, task_timeout)
    unsupported(NAME, "max_tasks_per_worker", max_tasks_per_worker,
                "mpire's worker_lifespan exists for map/imap only, and apply_async starts its workers without one")
    unsupported(NAME, "memory_limit", memory_limit,
                "mpire has no per-worker memory limit")
    from mpire import WorkerPool

    pool = WorkerPool(n_jobs=workers, start_method="spawn")
    # The first apply_async starts the workers with its worker_init; later calls must pass the same one
    # (mpire warns when it changes), so it is built once.
    worker_init = None if initializer is None else functools.partial(initializer, *initargs)

    def submit(item: Any) -> Any:
        future, callback, error_callback = settled_by_callbacks()
        pool.apply_async(job, args=(item,), callback=callback, error_callback=error_callback,
                         task_timeout=task_timeout, worker_init=worker_init)
        return future

    return drive(NAME, submit, items, on_result, timeout, max_in_flight or 2 * workers, classify,
                 stop=pool.terminate, close=pool.stop_and_join)
