"""A lone failure is noticed only at the next 5 s poll, and a killed worker is reported as a callback error.

The source article's design, reproduced faithfully (its flaws are what we show): a done-callback per
future instead of a retained futures list, a ``Manager().Value`` holding one error message that the
worker's and the callback's ``except`` blocks write, and a monitor thread (``process_monitor.py``)
that polls the message every 5 s and then cancels pending futures through ``_pending_work_items``
and terminates workers through ``_processes``. Start method: spawn, as in the article.

    In the main process                                  |  Out of process
                                                         |
    for item in items:                                   |  worker:  try: job(item)
        submit(_worker, message, job, item) -------------+--->       except: message = "Worker process error..."
        add_done_callback(_callback)                     |
    executor.shutdown()  (waits for every task)          |  Manager process: holds `message`
                                                         |          ^            ^
    _callback(future): if message set: return  ----------+----------+            |
        on_result(item, future.result())                 |                       |
        except: message = "Callback process error..."    |                       |
                                                         |                       |
    ProcessMonitor thread: every 5 s --------------------+-----------------------+
        timeout? message = "Process timeout ..."         |
        message set? cancel _pending_work_items, terminate() _processes, stop
    monitor.wait(): raise Exception(message)  (here: RunFailed(message))

What the experiments show it leaves open: detection waits for the poll; a killed worker is reported
as a callback error with no item; SIGTERM has no SIGKILL behind it; the monitor is non-daemon, so an
exception in the main process leaves it polling until its timeout; a Manager process per run.

Fixed by: ``variants.supervisor``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from ctypes import c_wchar_p
from functools import partial
from typing import Any

from ..contract import Clock, RunReport, check_arguments, no_task_timeout, unsupported
from .process_monitor import ProcessMonitor

NAME = "callback_monitor"


def _worker(error_message: Any, job: Callable[[Any], Any], item: Any) -> Any:
    try:
        return job(item)
    except Exception as e:
        error_message.value = "\n".join([
            "Worker process error has occurred.",
            f">> Error message: {e}",
        ])
        return None


def _callback(error_message: Any, on_result: Callable[[Any, Any], Any] | None, item: Any,
              report: RunReport, future: Any) -> None:
    if error_message.value is not None:
        return  # another task failed first: do nothing (as the article)
    try:
        result = future.result()
        if on_result is not None:
            on_result(item, result)
        report.completed += 1
    except Exception as e:
        error_message.value = "\n".join([
            "Callback process error has occurred.",
            f">> Error message: {e}",
        ])


def run(job: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 4,
        on_result: Callable[[Any, Any], Any] | None = None, timeout: float | None = None,
        task_timeout: float | None = None, poll_interval: float = 5.0,
        initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = (),
        max_tasks_per_worker: int | None = None, memory_limit: int | None = None) -> RunReport:
    """The article's ``run()``. Not in the article, passed through to its ``ProcessPoolExecutor`` unchanged:
    ``initializer``/``initargs`` and ``max_tasks_per_worker`` (as ``max_tasks_per_child``); the design
    itself is untouched. ``memory_limit``: none in the executor; NotImplementedError."""
    check_arguments(NAME, job, items, workers, on_result, timeout, task_timeout)
    no_task_timeout(NAME, task_timeout)
    unsupported(NAME, "memory_limit", memory_limit,
                "the article's ProcessPoolExecutor has no per-worker memory limit")
    clock = Clock()
    report = RunReport(NAME)
    mp_context = multiprocessing.get_context("spawn")
    error_message = mp_context.Manager().Value(c_wchar_p, None)
    process_monitor = ProcessMonitor(error_message, timeout, poll_interval)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=mp_context, initializer=initializer,
                                   initargs=initargs, max_tasks_per_child=max_tasks_per_worker)

    process_monitor.start(executor)
    # No try/finally around this block, as in the article: if `items` raises here, the exception
    # leaves run() while the monitor thread keeps polling and the executor keeps running.
    for item in items:
        future = executor.submit(_worker, error_message, job, item)
        future.add_done_callback(partial(_callback, error_message, on_result, item, report))
    executor.shutdown()
    process_monitor.stop()
    report.elapsed = clock.elapsed()
    process_monitor.wait(report)
    report.elapsed = clock.elapsed()
    return report
