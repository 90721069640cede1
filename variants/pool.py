"""A SIGKILLed worker leaves the parent waiting forever.

``multiprocessing.Pool`` written the way people write it: ``apply_async`` with a success callback and
an error callback, then wait for the callbacks. Start method: spawn (as the article, for every variant).

    In the main process                          |  Pool worker processes
                                                 |
    for item in items:                           |
        apply_async(job, item) --> task queue ---+--> job(item)
                                                 |       |
    result-handler thread <---- result queue <---+-------+
        callback(result) -> on_result            |
        error_callback(exc) -> wake main         |   a worker SIGKILLed mid-task: the pool's
    main: wait until all callbacks ran           |   worker-handler thread quietly starts a new
                                                 |   worker; the lost task's result never comes.

Why it breaks:
- A worker killed from outside (OOM killer, ``kill -9``) is replaced silently; its task is neither
  retried nor failed, so the wait for "all callbacks ran" never ends (or ends as a whole-run timeout,
  which blames no one). CPython documents this: https://github.com/python/cpython/issues/66587
- ``on_result`` runs in the pool's result-handler thread: if it raises, that thread dies and no
  further result is ever delivered, so the main process waits forever here too.
- ``terminate()`` (the ``with`` block's exit) can itself hang, whatever ended the run: it SIGTERMs
  the workers while its task-handler thread may still have to put the last message on the result
  queue, whose lock a worker killed mid-send holds forever; it then joins that thread forever
  (https://github.com/python/cpython/issues/96995; rare, accepted by the experiments only on the
  stack dump's evidence: experiments/expect.py, POOL_TERMINATE_DEADLOCK).

Fixed by: ``variants.supervisor`` (process sentinels name the dead worker and its item).
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .contract import Clock, RunFailed, RunReport, check_arguments, no_task_timeout, unsupported

NAME = "pool"


def run(job: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 4,
        on_result: Callable[[Any, Any], Any] | None = None, timeout: float | None = None,
        task_timeout: float | None = None, initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (), max_tasks_per_worker: int | None = None,
        memory_limit: int | None = None) -> RunReport:
    """The contract's ``run()``, plus the Pool's own worker lifecycle options:

    - ``initializer(*initargs)``: ``Pool(initializer=, initargs=)``, run in every worker it starts. One
      that raises kills its worker, and the pool starts another, which fails the same way, forever: the
      run never ends (https://github.com/python/cpython/issues/87472; experiments/test_worker_lifecycle.py).
    - ``max_tasks_per_worker``: ``Pool(maxtasksperchild=)``.
    - ``memory_limit``: the Pool has none; NotImplementedError.
    """
    check_arguments(NAME, job, items, workers, on_result, timeout, task_timeout)
    no_task_timeout(NAME, task_timeout)
    unsupported(NAME, "memory_limit", memory_limit,
                "multiprocessing.Pool has no per-worker memory limit")
    clock = Clock()
    report = RunReport(NAME)
    lock = threading.Lock()
    wake = threading.Event()  # set when every task has called back, or on the first error
    state: dict[str, Any] = {"outstanding": 0, "submitted_all": False, "error": None}

    def finished_one() -> None:
        with lock:
            state["outstanding"] -= 1
            if state["submitted_all"] and state["outstanding"] == 0:
                wake.set()

    def succeeded(item: Any, result: Any) -> None:
        # Runs in the pool's result-handler thread. Not wrapped on purpose: this is the way the
        # callback is usually written, and an exception here kills that thread (see docstring).
        if on_result is not None:
            on_result(item, result)
        report.completed += 1
        finished_one()

    def failed(item: Any, exc: BaseException) -> None:
        state["error"] = (item, exc)
        wake.set()

    with multiprocessing.get_context("spawn").Pool(workers, initializer, initargs,
                                                   max_tasks_per_worker) as pool:  # __exit__ calls terminate()
        for item in items:
            with lock:
                state["outstanding"] += 1
            pool.apply_async(job, (item,),
                             callback=lambda result, item=item: succeeded(item, result),
                             error_callback=lambda exc, item=item: failed(item, exc))
        pool.close()
        with lock:
            state["submitted_all"] = True
            if state["outstanding"] == 0:
                wake.set()
        # With timeout=None this wait has no limit: that is the design under test. The lab's
        # harness bounds it from outside with a watchdog and records the hang.
        finished = wake.wait(timeout)
    report.elapsed = clock.elapsed()
    if state["error"] is not None:
        item, exc = state["error"]
        raise RunFailed(f"worker raised {type(exc).__name__}: {exc} (item {item!r})",
                        kind="worker_error", item=item, report=report) from exc
    if not finished:
        raise RunFailed(f"run exceeded its timeout of {timeout} s with {state['outstanding']} task(s) "
                        f"unfinished", kind="timeout", report=report)
    return report
