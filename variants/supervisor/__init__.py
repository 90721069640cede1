"""Every fault wakes the supervisor at once; it names the culprit, stops every worker for real, and accounts for every item.

Our recommended design. It owns its worker processes (``multiprocessing.Process``, spawn) instead of
driving an executor, because the two things a fault report needs are things an executor hides: which
item a dead worker was running, and when that item started. Start method: spawn, as every variant.

    In the main process (one thread: the supervisor loop)        |  worker processes (one pipe each)
                                                                 |
    pull items lazily, at most max_in_flight at a time           |
    idle worker? --- send (tid, item) over its pipe -------------+--> job(item)
    wait(pipes + process sentinels, timeout=nearest deadline)    |      | ("ok", tid, result)
      <- ("ok", tid, result): on_result(item, result), drop it <-+------+ ("err", tid, message, traceback)
      <- ("err", ...):        worker_error, culprit = tid        |
      <- sentinel ready:      worker_died, culprit = its tid,    |  dies with the parent:
                              exit code, OOM evidence            |  PR_SET_PDEATHSIG + a thread on the
      <- deadline:            timeout / task_timeout             |  parent's sentinel
    fault: stop pulling; SIGTERM the busy, SIGKILL after grace; join; raise RunFailed(report)

Rules it keeps (each one is an experiment):
1. Nothing polls: every fault is an event on a pipe, a process sentinel, or the wait's own timeout set
   to the nearest deadline, so detection costs one wake-up.
2. A worker runs one task at a time and gets it only when idle, so "the task it was running" is never
   ambiguous, its start time is the send time (the task timeout counts from there), and a dead worker
   takes no innocent task with it.
3. Memory is bounded by ``max_in_flight`` items and one result at a time: nothing keeps a future or a
   result after ``on_result`` returns.
4. Every wait has a limit and every exit path runs the same stop: no thread, process or Manager outlives
   ``run()``, whatever raised (the job, ``on_result``, ``items``, Ctrl-C).
5. Every item pulled from ``items`` ends with a fate (done / failed / never run) in the report, so a
   caller resumes exactly ``report.unfinished()``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from ..contract import Clock, Fate, ItemFate, RunFailed, RunReport, check_arguments
from . import _worker

NAME = "supervisor"


def _vmstat_oom_kills() -> int | None:
    """The kernel's count of OOM kills on this machine (Linux >= 4.13), or None where unknown."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def describe_exit(exitcode: int | None, oom_before: int | None, oom_after: int | None) -> str:
    """Say how a worker died, and whether the kernel recorded an OOM kill meanwhile."""
    if exitcode is None:
        return "worker vanished with no exit code"
    if exitcode >= 0:
        return f"worker exited with code {exitcode}"
    sig = -exitcode
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    text = f"worker was killed by {name} (exit code {exitcode})"
    if sig == signal.SIGKILL:
        if oom_before is not None and oom_after is not None and oom_after > oom_before:
            text += (f": the kernel OOM killer did it (/proc/vmstat oom_kill rose from {oom_before} "
                     f"to {oom_after} during the task)")
        else:
            text += ("; SIGKILL is what the kernel OOM killer sends, but the kernel recorded no OOM kill "
                     "during the task, so something else sent it (kill -9?)")
    return text


@dataclass
class _Worker:
    proc: multiprocessing.process.BaseProcess
    conn: Connection
    ready: bool = False
    tid: int | None = None  # the task it is running
    started: float = 0.0  # monotonic time the task was sent, i.e. started (the worker was idle)
    oom_before: int | None = None


class _Supervisor:
    def __init__(self, job, items, workers, on_result, timeout, task_timeout, on_error, retries,
                 max_in_flight, grace):
        self.job, self.on_result = job, on_result
        self.items: Iterator[Any] = iter(items)
        self.n_workers, self.timeout, self.task_timeout = workers, timeout, task_timeout
        self.on_error, self.retries, self.grace = on_error, retries, grace
        self.max_in_flight = max_in_flight
        self.ctx = multiprocessing.get_context("spawn")
        self.clock = Clock()
        self.report = RunReport(NAME, fates=[])
        self.pending: deque[int] = deque()  # tids pulled from items, not yet sent to a worker
        self.exhausted = False
        self.workers: list[_Worker] = []
        self.failures: list[RunFailed] = []

    # -- workers --------------------------------------------------------------------------------
    def spawn(self) -> None:
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(target=_worker.main, args=(child_conn, self.job, os.getpid()),
                                name=f"supervisor-worker-{len(self.workers)}", daemon=True)
        proc.start()
        child_conn.close()  # ours is closed so that a dead worker shows as EOF on parent_conn
        self.workers.append(_Worker(proc, parent_conn))

    def retire(self, w: _Worker) -> None:
        self.workers.remove(w)
        w.conn.close()
        w.proc.join(0)

    def stop_all(self, orderly: bool) -> None:
        """Orderly: ask idle workers to exit. Otherwise (or if they do not): SIGTERM, grace, SIGKILL."""
        alive = [w for w in self.workers if w.proc.exitcode is None]
        if orderly:
            for w in alive:
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        else:
            for w in alive:
                w.proc.terminate()
        deadline = time.monotonic() + self.grace
        while alive and (left := deadline - time.monotonic()) > 0:
            wait([w.proc.sentinel for w in alive], left)
            alive = [w for w in alive if w.proc.exitcode is None]
        for w in alive:  # ignored SIGTERM (or the orderly request) for `grace` seconds
            w.proc.kill()
        for w in list(self.workers):
            w.proc.join(5)  # SIGKILL cannot be ignored; 5 s only bounds a kernel stuck in D state
            self.retire(w)

    # -- items ----------------------------------------------------------------------------------
    def busy(self) -> list[_Worker]:
        return [w for w in self.workers if w.tid is not None]

    def pull(self) -> None:
        """Take items lazily, so a generator of millions costs max_in_flight items of memory."""
        while not self.exhausted and len(self.pending) + len(self.busy()) < self.max_in_flight:
            try:
                item = next(self.items)  # an exception here is the caller's: it propagates after stop
            except StopIteration:
                self.exhausted = True
                return
            self.report.fates.append(ItemFate(item, Fate.NEVER_RUN))
            self.pending.append(len(self.report.fates) - 1)

    def dispatch(self) -> None:
        for w in self.workers:
            if not self.pending:
                return
            if w.ready and w.tid is None and w.proc.exitcode is None:
                tid = self.pending.popleft()
                try:
                    w.conn.send((tid, self.report.fates[tid].item))
                except OSError:  # it died while idle: its sentinel reports that, this task is innocent
                    self.pending.appendleft(tid)
                    continue
                w.tid, w.started, w.oom_before = tid, time.monotonic(), _vmstat_oom_kills()
                self.report.fates[tid].attempts += 1

    # -- faults ---------------------------------------------------------------------------------
    def fail(self, tid: int | None, kind: str, message: str, exitcode: int | None = None) -> None:
        """Record a fault; retry the culprit if allowed; abort (raise) or carry on per on_error."""
        item = self.report.fates[tid].item if tid is not None else None
        if tid is not None and self.report.fates[tid].attempts <= self.retries and kind != "callback_error":
            self.report.notes.append(f"retrying item {item!r} after {kind}: {message}")
            self.pending.appendleft(tid)
            return
        if tid is not None:
            fate = self.report.fates[tid]
            fate.fate, fate.kind, fate.message, fate.exitcode = Fate.FAILED, kind, message, exitcode
        text = f"{kind}: {message}" + (f" (item {item!r})" if tid is not None else "")
        error = RunFailed(text, kind=kind, item=item, exitcode=exitcode, report=self.report)
        if self.on_error == "abort" or tid is None:
            raise error
        self.failures.append(error)

    def replace(self, w: _Worker) -> None:
        """A worker that died or hung is replaced (continue mode, or a retry); only its own task is affected."""
        if w.proc.exitcode is None:  # hung: the same escalation as stop_all, for this one worker
            w.proc.terminate()
            w.proc.join(self.grace)
            if w.proc.exitcode is None:
                w.proc.kill()
                w.proc.join(5)
        self.retire(w)
        self.spawn()
        self.report.notes.append(f"replaced worker pid {w.proc.pid} (exit code {w.proc.exitcode})")

    def on_message(self, w: _Worker) -> None:
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            self.on_death(w)
            return
        if msg[0] == "ready":
            w.ready = True
            return
        tid = w.tid
        w.tid = None
        if msg[0] == "err":
            self.fail(tid, "worker_error", f"job raised {msg[2]}")
            return
        result = msg[2]
        try:
            if self.on_result is not None:
                self.on_result(self.report.fates[tid].item, result)
        except Exception as e:
            self.fail(tid, "callback_error", f"on_result raised {type(e).__name__}: {e}")
            return
        finally:
            del result, msg  # drop the result now: memory must not grow with the task count
        self.report.fates[tid].fate = Fate.DONE
        self.report.completed += 1

    def on_death(self, w: _Worker) -> None:
        w.proc.join(1)  # the sentinel (or EOF) says it is gone; join only reaps it
        tid = w.tid
        if not w.ready:
            self.retire(w)
            raise RunFailed(f"worker_died: a worker could not start ({describe_exit(w.proc.exitcode, None, None)}"
                            "); can it import and unpickle the job? Its stderr says why.",
                            kind="worker_died", exitcode=w.proc.exitcode, report=self.report)
        message = describe_exit(w.proc.exitcode, w.oom_before, _vmstat_oom_kills())
        if tid is None and self.on_error == "continue":
            self.report.notes.append(f"idle worker pid {w.proc.pid} died: {message}")
        else:
            self.fail(tid, "worker_died", message, w.proc.exitcode)  # raises when aborting
        self.replace(w)

    def check_deadlines(self, now: float) -> None:
        if self.timeout is not None and now >= self.clock.start + self.timeout:
            raise RunFailed(f"timeout: the run exceeded its timeout of {self.timeout} s "
                            f"({len(self.busy())} task(s) running, {len(self.pending)} waiting)",
                            kind="timeout", report=self.report)
        if self.task_timeout is None:
            return
        for w in self.busy():
            if now >= w.started + self.task_timeout:
                tid = w.tid
                w.tid = None
                self.fail(tid, "task_timeout", f"task exceeded its task_timeout of {self.task_timeout} s")
                self.replace(w)  # reached only when the run goes on (continue mode or a retry)

    def next_deadline(self) -> float | None:
        deadlines = [w.started + self.task_timeout for w in self.busy()] if self.task_timeout else []
        if self.timeout is not None:
            deadlines.append(self.clock.start + self.timeout)
        return min(deadlines) if deadlines else None

    # -- the loop -------------------------------------------------------------------------------
    def loop(self) -> None:
        for _ in range(self.n_workers):
            self.spawn()
        while True:
            self.pull()
            self.dispatch()
            if self.exhausted and not self.pending and not self.busy():
                break
            deadline = self.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            by_fd: dict[Any, _Worker] = {}
            for w in self.workers:
                by_fd[w.conn] = w
                by_fd[w.proc.sentinel] = w
            ready = wait(list(by_fd), timeout)
            # Messages first: a worker that sent its result and then died still delivered it.
            for obj in ready:
                w = by_fd[obj]
                if isinstance(obj, Connection) and w in self.workers:
                    self.on_message(w)
            for obj in ready:
                w = by_fd[obj]
                if not isinstance(obj, Connection) and w in self.workers and not w.conn.poll():
                    self.on_death(w)
            self.check_deadlines(time.monotonic())
        if self.failures:
            first = self.failures[0]
            raise RunFailed(f"{len(self.failures)} item(s) failed (on_error='continue'); first: {first}",
                            kind=first.kind, item=first.item, exitcode=first.exitcode, report=self.report)


def run(job: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 4,
        on_result: Callable[[Any, Any], Any] | None = None, timeout: float | None = None,
        task_timeout: float | None = None, on_error: str = "abort", retries: int = 0,
        max_in_flight: int | None = None, grace: float = 1.0) -> RunReport:
    """The contract's ``run()``, plus:

    - ``on_error``: "abort" (stop at the first fault, the article's semantics) or "continue" (record
      the failure, replace a dead or hung worker, go on; ``RunFailed`` at the end if anything failed).
    - ``retries``: how many times a failed item (worker error, death, task timeout) is run again.
    - ``max_in_flight``: items pulled from ``items`` and not yet finished (default ``2 * workers``).
    - ``grace``: seconds between SIGTERM and SIGKILL when stopping workers.
    """
    check_arguments(NAME, job, items, workers, on_result, timeout, task_timeout)
    if on_error not in ("abort", "continue"):
        raise ValueError(f"{NAME}: on_error must be 'abort' or 'continue', got {on_error!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"{NAME}: retries must be an int >= 0, got {retries!r}")
    max_in_flight = 2 * workers if max_in_flight is None else max_in_flight
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
        raise ValueError(f"{NAME}: max_in_flight must be an int >= 1, got {max_in_flight!r}")
    if not isinstance(grace, int | float) or not grace >= 0:
        raise ValueError(f"{NAME}: grace must be a number of seconds >= 0, got {grace!r}")
    sup = _Supervisor(job, items, workers, on_result, timeout, task_timeout, on_error, retries,
                      max_in_flight, grace)
    orderly = False
    try:
        sup.loop()
        orderly = True
    finally:
        # One stop for every exit path: RunFailed, an exception from items or on_result, Ctrl-C.
        sup.stop_all(orderly)
        sup.report.elapsed = sup.clock.elapsed()
    return sup.report
