"""Where Python itself has moved since the article: the public replacements for its reach into the executor.

- ``ProcessPoolExecutor(max_tasks_per_child=N)`` (3.11): a worker is replaced after N tasks. It bounds what a
  leaking job costs, and changes no fault row: a killed worker still breaks the whole pool, naming no item.
- ``ProcessPoolExecutor.terminate_workers()`` / ``kill_workers()`` (3.14, cpython gh-128041): what the article
  does through ``executor._processes``, public. ``kill_workers()`` sends SIGKILL, so it stops the hang that
  ignores SIGTERM, which the article's ``terminate()`` (SIGTERM) leaves running (the matrix row "a worker hangs
  ignoring SIGTERM"). It detects nothing: a caller still needs its own deadline to decide to call it.

Each runs where the interpreter has it and is skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from experiments.expect import PROMPT

# How long a SIGTERM-ignoring worker is given to prove it is still alive after terminate(): SIGTERM is delivered
# at once, and a worker that honoured it would be gone in milliseconds; 1 s is far past that on a loaded machine.
STILL_ALIVE_AFTER = 1.0
HAS_KILL_WORKERS = hasattr(cf.ProcessPoolExecutor, "kill_workers")
NEEDS_3_14 = pytest.mark.skipif(not HAS_KILL_WORKERS, reason="ProcessPoolExecutor.kill_workers() is new in Python "
                                f"3.14 (cpython gh-128041); this is {sys.version.split()[0]}")


def _pid(_: int) -> int:
    time.sleep(0.05)  # long enough that one worker cannot take every task before another starts
    return os.getpid()


def _hang_ignoring_sigterm(_: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(3600)


def _started(ex: cf.ProcessPoolExecutor, fut: cf.Future, limit: float = 30.0) -> psutil.Process:
    """The one worker process, once the hanging task has begun (its future is running and SIGTERM is ignored)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        procs = list((ex._processes or {}).values())  # read-only, to find the pid the test will watch
        if fut.running() and procs:
            p = psutil.Process(procs[0].pid)
            try:
                status = Path(f"/proc/{p.pid}/status").read_text()
                if int(status.split("SigIgn:")[1].split()[0], 16) & (1 << (signal.SIGTERM - 1)):
                    return p  # SIGTERM is in the worker's ignored-signals mask: the job has started
            except (OSError, IndexError):
                pass
        time.sleep(0.01)
    raise AssertionError(f"the hanging task did not start within {limit} s")


@pytest.mark.timeout(60)
def test_max_tasks_per_child_recycles_workers_and_changes_no_fault_row():
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(2, mp_context=ctx, max_tasks_per_child=1) as ex:
        pids = list(ex.map(_pid, range(6)))
    assert len(set(pids)) == 6, f"one task per worker: {pids}"

    ex = cf.ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=1)
    try:
        fut = ex.submit(_hang_ignoring_sigterm, 0)
        worker = _started(ex, fut)
        waiting = ex.submit(_pid, 1)
        worker.kill()
        for f in (fut, waiting):  # recycling or not, a death breaks the pool: every unfinished task, no item
            with pytest.raises(cf.process.BrokenProcessPool):
                f.result(timeout=PROMPT + 5)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stop", ["terminate_through_processes", pytest.param("kill_workers", marks=NEEDS_3_14)])
def test_stopping_a_hang_that_ignores_sigterm(stop):
    """The article stops workers with ``terminate()`` on ``executor._processes``: SIGTERM, which this hang ignores.
    3.14's public ``kill_workers()`` sends SIGKILL."""
    ex = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    fut = ex.submit(_hang_ignoring_sigterm, 0)
    worker = _started(ex, fut)
    try:
        if stop == "terminate_through_processes":
            for proc in list(ex._processes.values()):  # the article's way (private)
                proc.terminate()
            time.sleep(STILL_ALIVE_AFTER)
            assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE, "SIGTERM stopped the hang"
        else:
            t0 = time.monotonic()
            ex.kill_workers()
            worker.wait(timeout=PROMPT + 5)
            assert time.monotonic() - t0 < PROMPT, "kill_workers() took longer than a prompt SIGKILL"
    finally:
        if worker.is_running():
            worker.kill()
        ex.shutdown(wait=True, cancel_futures=True)
