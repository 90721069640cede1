"""The article's monitor thread: polls a shared error message every ``poll_interval`` seconds (5 s).

Kept in its own module, as in the article. Faithful on purpose, flaws included: the poll interval is
the detection latency; the thread is non-daemon and only leaves its loop on ``stop()``, an error or
the timeout; it walks the executor's private ``_pending_work_items`` and ``_processes`` from this
thread while the executor's own manager thread mutates them; ``terminate()`` is SIGTERM only.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..contract import RunFailed


def classify(message: str) -> str:
    """The article's message says who failed; that is all the design knows, so it is all we map."""
    if message.startswith("Worker process error"):
        return "worker_error"
    if message.startswith("Process timeout"):
        return "timeout"
    return "callback_error"  # including a killed worker: its BrokenProcessPool reaches the callback


class ProcessMonitor:
    def __init__(self, error_message: Any, timeout: float | None, poll_interval: float = 5.0) -> None:
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._elapsed_time = 0.0
        self._error_message = error_message  # a Manager().Value(c_wchar_p) proxy
        self._stop_event = threading.Event()
        self._start_time: float | None = None
        self._monitor_thread: threading.Thread | None = None

    def start(self, executor: Any) -> None:
        self._start_time = time.time()
        print(f"Process monitor has started. (timeout threshold: {_fmt(self._timeout)} sec)", flush=True)
        self._monitor_thread = threading.Thread(target=self._monitor, args=(executor,),
                                                name="ProcessMonitor")  # non-daemon, as in the article
        self._monitor_thread.start()

    def stop(self) -> None:
        self._stop_event.set()

    def wait(self, report: Any = None) -> None:
        # No limit on either wait: the article's design. The lab's watchdog bounds it from outside.
        self._stop_event.wait()
        self._stop_event.clear()
        assert self._monitor_thread is not None
        self._monitor_thread.join()
        message = self._error_message.value
        if message is not None:
            raise RunFailed(message, kind=classify(message), report=report)
        print("Process monitor has finished.", flush=True)

    def _monitor(self, executor: Any) -> None:
        while not self._stop_event.wait(self._poll_interval):
            assert self._start_time is not None
            self._elapsed_time = time.time() - self._start_time
            if self._timeout is not None and self._elapsed_time > self._timeout:
                self._error_message.value = " ".join([
                    "Process timeout",
                    f"(elapsed time: {self._elapsed_time:.2f} sec / timeout threshold: {_fmt(self._timeout)} sec)",
                ])
            if self._error_message.value is not None:
                self._cancel_futures(executor)
                self._terminate_executor_processes(executor)
                self._stop_event.set()

    def _cancel_futures(self, executor: Any) -> None:
        # Private attribute, iterated from this thread while the executor's manager thread deletes
        # from it: "dictionary changed size during iteration" is possible (an experiment provokes it).
        for _work_id, work_item in executor._pending_work_items.items():
            if not work_item.future.running():
                work_item.future.cancel()

    def _terminate_executor_processes(self, executor: Any) -> None:
        if executor._processes is not None:
            for proc in executor._processes.values():
                proc.terminate()  # SIGTERM only: a worker that ignores it keeps running


def _fmt(seconds: float | None) -> str:
    """Print 60 as the article does ("60 sec"), and 0.5 as "0.5 sec"."""
    if seconds is not None and float(seconds).is_integer():
        return str(int(seconds))
    return str(seconds)
