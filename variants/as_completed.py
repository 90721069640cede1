"""Every result stays in memory until the run ends, and an exception or a timeout waits for every queued task to run.

``ProcessPoolExecutor`` the textbook way: submit everything, keep the list of futures, loop over
``as_completed``, all inside a ``with`` block. Start method: spawn (as the article, for every variant).

    In the main process                                   |  worker processes
                                                          |
    futures = [submit(job, item) for item in items] ------+--> job(item)
      ^ the list keeps every future, so every result      |       |
        (1,000,000 ints each in the article) stays alive  |       |
    for f in as_completed(futures, timeout): <------------+-------+
        on_result(item, f.result())                       |
    with-block exit: shutdown(wait=True) ---------------->|  waits for every queued task

Why it breaks:
- Memory grows with the task count: the retained futures hold their results until ``run()`` returns.
- A worker exception surfaces at ``f.result()``, but leaving the ``with`` block waits for every
  remaining task first (``shutdown(wait=True)`` does not cancel), so the fault is reported late.
- A hung task: ``as_completed(timeout=...)`` raises, and then ``shutdown(wait=True)`` waits for the
  hung task forever.
- A killed worker is noticed (``BrokenProcessPool`` for every unfinished future), but nothing says
  which item the dead worker was running.

Fixed by: ``variants.supervisor`` (bounded in-flight, results dropped once handled, stop on first fault).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .contract import Clock, RunFailed, RunReport, check_arguments, no_task_timeout, unsupported

NAME = "as_completed"


def run(job: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 4,
        on_result: Callable[[Any, Any], Any] | None = None, timeout: float | None = None,
        task_timeout: float | None = None, initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (), max_tasks_per_worker: int | None = None,
        memory_limit: int | None = None) -> RunReport:
    """The contract's ``run()``, plus the executor's own worker lifecycle options:

    - ``initializer(*initargs)``: ``ProcessPoolExecutor(initializer=, initargs=)``. One that raises
      breaks the pool: every future fails with BrokenProcessPool, which does not name the initializer
      (its traceback is only logged, on the worker's stderr).
    - ``max_tasks_per_worker``: ``ProcessPoolExecutor(max_tasks_per_child=)``. With more tasks queued than
      the workers' lifespans cover, the executor can stop starting replacements and hang
      (https://github.com/python/cpython/issues/115634).
    - ``memory_limit``: the executor has none; NotImplementedError.
    """
    check_arguments(NAME, job, items, workers, on_result, timeout, task_timeout)
    no_task_timeout(NAME, task_timeout)
    unsupported(NAME, "memory_limit", memory_limit,
                "ProcessPoolExecutor has no per-worker memory limit")
    clock = Clock()
    report = RunReport(NAME)
    try:
        with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=initializer,
                                    initargs=initargs, max_tasks_per_child=max_tasks_per_worker) as ex:
            futures = []
            item_of = {}
            for item in items:
                f = ex.submit(job, item)
                futures.append(f)  # the retained list: the memory cost this variant shows
                item_of[f] = item
            for f in cf.as_completed(futures, timeout=timeout):
                try:
                    result = f.result()
                except BrokenProcessPool as e:
                    raise RunFailed(f"a worker died: {e}", kind="worker_died", report=report) from e
                except Exception as e:
                    raise RunFailed(f"worker raised {type(e).__name__}: {e} (item {item_of[f]!r})",
                                    kind="worker_error", item=item_of[f], report=report) from e
                if on_result is not None:
                    try:
                        on_result(item_of[f], result)
                    except Exception as e:
                        raise RunFailed(f"on_result raised {type(e).__name__}: {e} (item {item_of[f]!r})",
                                        kind="callback_error", item=item_of[f], report=report) from e
                report.completed += 1
    except cf.TimeoutError as e:
        # Reached only after the with-block's shutdown(wait=True) returned, i.e. after every queued
        # task ran (or never, if one hangs).
        raise RunFailed(f"run exceeded its timeout of {timeout} s", kind="timeout", report=report) from e
    finally:
        report.elapsed = clock.elapsed()
    return report
