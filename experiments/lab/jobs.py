"""The article's workload and jobs that misbehave on cue at a chosen item.

Every job is a small frozen dataclass named effect-at-phase, picklable under spawn. ``at`` is the item
that misbehaves (``EVERY`` for all of them, as in the article's ``print(hoge)``). Before misbehaving a
job stamps the fault time into the ``events`` file (:mod:`.events`); healthy items also stamp ``start``
(with the worker's pid), which is how the harness finds a busy worker to kill from outside.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from .events import read_events, stamp

__all__ = ["read_events", "stamp"]  # kept importable as jobs.stamp / jobs.read_events (runner.py uses them)

EVERY = "every"  # `at` value: misbehave on every item
_RUNNING = 0  # tasks of this process inside Workload.__call__ now (DieIdleAt waits until there are none)
ARTICLE_N = 1_000_000  # the article's payload: a list of 1,000,000 ints built one append at a time


@dataclass(frozen=True, kw_only=True)
class Workload:
    """The healthy task: optionally sleep ``delay`` s (a slow API), then build a list of ``n`` ints."""

    n: int = ARTICLE_N
    delay: float = 0.0
    events: str | None = None
    at: Any = None  # the item that misbehaves (subclasses); None: none
    summary: bool = False  # return {"n", "sum"} of the list instead of the list (a row for the database)
    instant: bool = False  # build the list in one step ([1] * n): the same result, without the loop's CPU

    def __call__(self, item: Any) -> list[int]:
        global _RUNNING
        _RUNNING += 1
        try:
            return self._run(item)
        finally:
            _RUNNING -= 1

    def _run(self, item: Any) -> list[int]:
        stamp(self.events, "start", item)
        if self.at == EVERY or (self.at is not None and item == self.at):
            self.misbehave(item)
        if self.delay:
            time.sleep(self.delay)
        if self.instant:
            large_data = [1] * self.n
        else:
            large_data = []
            count = self.n
            while count >= 1:  # the article's loop, one append at a time
                large_data.append(1)
                count -= 1
        if self.summary:
            return {"n": len(large_data), "sum": sum(large_data)}
        return large_data

    def misbehave(self, item: Any) -> None:
        pass


@dataclass(frozen=True, kw_only=True)
class RaiseAt(Workload):
    """Raise NameError at the item, like the article's ``print(hoge)``, after building its list."""

    def misbehave(self, item: Any) -> None:
        stamp(self.events, "fault", item)
        print(hoge)  # noqa: F821  (the article's undefined name, on purpose)


@dataclass(frozen=True, kw_only=True)
class SleepAt(Workload):
    """Sleep ``seconds`` at the item (every item: the article's timeout scenario), then finish normally."""

    seconds: float = 30.0

    def misbehave(self, item: Any) -> None:
        time.sleep(self.seconds)


@dataclass(frozen=True, kw_only=True)
class HangAt(Workload):
    """Never return from the item (a request that never answers); SIGTERM ends it."""

    def misbehave(self, item: Any) -> None:
        stamp(self.events, "fault", item)
        while True:
            time.sleep(3600)


@dataclass(frozen=True, kw_only=True)
class HangInChildAt(Workload):
    """Wait at the item on a process the job started, which never ends (a command-line tool that hangs):
    ``subprocess.run(["sleep", ...])`` with no timeout of its own. Stopping the worker leaves that child.
    ``ignore_hup``: the tool ignores SIGHUP (as ``nohup`` makes it), so a lost terminal or an orphaned process
    group does not end it by that signal."""

    ignore_hup: bool = False
    seconds: str = "3600"  # how long the tool sleeps: a test may make it unique, to find it after the run
    new_session: bool = False  # the tool leaves the worker's session and process group (setsid), as daemons do

    def misbehave(self, item: Any) -> None:
        import subprocess

        stamp(self.events, "fault", item)
        command = (["sh", "-c", f"trap '' HUP; exec sleep {self.seconds}"] if self.ignore_hup
                   else ["sleep", self.seconds])
        # One that leaves the session gets no descriptor of the run's: the lab reads the runner's stdout until EOF.
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} if self.new_session else {}
        subprocess.run(command, check=False, start_new_session=self.new_session, **quiet)


@dataclass(frozen=True, kw_only=True)
class KillSelfWithChildAt(Workload):
    """Start a child process that never ends (``sleep``), then SIGKILL the worker itself at the item: the
    child is orphaned before anyone could list it."""

    def misbehave(self, item: Any) -> None:
        import subprocess

        subprocess.Popen(["sleep", "3600"])
        stamp(self.events, "fault", item)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True, kw_only=True)
class HangIgnoringTermAt(Workload):
    """Never return and ignore SIGTERM (a C extension stuck in a call, or a handler that swallows it)."""

    def misbehave(self, item: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:  # a pool that runs tasks in a worker thread (dask): set the process-wide disposition in C
            ctypes.CDLL(None).signal(signal.SIGTERM, ctypes.c_void_p(1))  # 1 == SIG_IGN
        stamp(self.events, "fault", item)
        while True:
            time.sleep(3600)


@dataclass(frozen=True, kw_only=True)
class KillSelfAt(Workload):
    """SIGKILL itself at the item (what the OOM killer sends)."""

    def misbehave(self, item: Any) -> None:
        stamp(self.events, "fault", item)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True, kw_only=True)
class OomAt(Workload):
    """Get OOM-killed for real: move into a memory cgroup limited to ``limit_mb`` MiB and allocate."""

    limit_mb: int = 64

    def misbehave(self, item: Any) -> None:
        from . import cgroup  # here, not at the top: psutil, which it imports, is most of a worker's import time

        cgroup.enter_limited_cgroup(self.limit_mb << 20)
        stamp(self.events, "fault", item)
        hog = []
        # Bounded: if the limit were not enforced we stop at 8x it instead of eating the machine.
        for _ in range(self.limit_mb):  # limit_mb chunks of 8 MiB: 8x the limit
            hog.append(b"x" * (8 << 20))  # written, so the pages are really charged
        raise MemoryError(f"allocated {8 * len(hog)} MiB under a {self.limit_mb} MiB cgroup limit "
                          "without being OOM-killed: the limit is not enforced")


@dataclass(frozen=True, kw_only=True)
class SegfaultAt(Workload):
    """Crash with SIGSEGV at the item (a buggy C extension)."""

    def misbehave(self, item: Any) -> None:
        stamp(self.events, "fault", item)
        ctypes.string_at(0)


@dataclass(frozen=True, kw_only=True)
class ExitAt(Workload):
    """Call ``os._exit(1)`` at the item (a library that exits instead of raising)."""

    def misbehave(self, item: Any) -> None:
        stamp(self.events, "fault", item)
        os._exit(1)


@dataclass(frozen=True, kw_only=True)
class ReturnsAt(Workload):
    """Return a serialization fault (``returns``: a ``pickling.INJECTORS`` name) at the item instead of a list."""

    returns: str = "ErrorAtPickle"

    def __call__(self, item: Any) -> Any:
        result = super().__call__(item)
        if self.at == EVERY or item == self.at:
            from . import pickling

            return pickling.make(self.returns, item, self.events)
        return result


@dataclass(frozen=True, kw_only=True)
class RaiseUnpicklableAt(Workload):
    """Raise an exception that cannot be pickled at the item."""

    def misbehave(self, item: Any) -> None:
        from .pickling import UnpicklableError

        stamp(self.events, "fault", item)
        raise UnpicklableError(item)


BYSTANDER = """
import sys
from experiments.lab import cgroup
cgroup.enter_limited_cgroup(32 << 20)
hog = [b"x" * (8 << 20) for _ in range(32)]
"""


@dataclass(frozen=True, kw_only=True)
class KillSelfAfterOtherOomAt(Workload):
    """At the item: another process is OOM-killed by the kernel, then this worker is SIGKILLed (kill -9).

    The death looks like an OOM kill to anyone who only watches the machine-wide OOM counter.
    """

    def misbehave(self, item: Any) -> None:
        import subprocess
        import sys

        other = subprocess.run([sys.executable, "-c", BYSTANDER], timeout=30, capture_output=True)
        stamp(self.events, "fault", item, bystander_exit=other.returncode)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True, kw_only=True)
class AllocateAt(Workload):
    """Allocate (and touch) ``mb`` MiB at the item, hold it ``hold`` s (a response being processed), then
    finish normally: a response too large to trust."""

    mb: int = 400
    hold: float = 0.0

    def misbehave(self, item: Any) -> None:
        stamp(self.events, "fault", item)
        hog = [bytearray(8 << 20) for _ in range(self.mb // 8)]  # bytearray(n) is zeroed: pages are touched
        if self.hold:
            time.sleep(self.hold)
        del hog


_INIT_DB: Any = None  # the worker's connection, opened once by open_db_once (an initializer)


def open_db_once(path: str) -> None:
    """An initializer: open a SQLite connection once per worker, for every task it runs."""
    import sqlite3

    global _INIT_DB
    _INIT_DB = sqlite3.connect(path)
    _INIT_DB.execute("CREATE TABLE IF NOT EXISTS seen (item INTEGER, pid INTEGER)")
    _INIT_DB.commit()


def failing_initializer() -> None:
    raise ConnectionError("the database refused the worker's connection")


@dataclass(frozen=True, kw_only=True)
class UsesInitDb(Workload):
    """Write (item, pid) through the connection the initializer opened: fails if it never ran."""

    def __call__(self, item: Any) -> Any:
        stamp(self.events, "start", item)
        _INIT_DB.execute("INSERT INTO seen VALUES (?, ?)", (int(item), os.getpid()))
        _INIT_DB.commit()
        return os.getpid()


INITIALIZERS = {f.__name__: f for f in (open_db_once, failing_initializer)}


# -- faults at the other moments of a worker's life (experiments/test_worker_phases.py) ---------------------------

# System call numbers of a write of many bytes in one call (write, sendto: the count is their third argument), as
# /proc/<pid>/task/<tid>/syscall shows them, by machine.
BIG_WRITES = {"x86_64": {1, 44}, "aarch64": {64, 206}}
# Its answer going out: a write of at least this much in one call (a blocking pipe or socket: the call lasts until
# the reader has taken it), or this much waiting in the send queue of one of the process's TCP sockets (a
# non-blocking socket, as Dask's: each send call is too brief to be seen, the queue is not).
SENDING_MARK = 64 << 10


def _tcp_queued() -> int:
    """The most bytes waiting to be sent on any TCP socket this process holds (tx_queue of /proc/net/tcp and tcp6)."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            mine.add(link[8:-1])
    if not mine:
        return 0
    most = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)  # header
                for line in f:
                    fields = line.split()  # sl local remote st tx_queue:rx_queue tr:when retrnsmt uid timeout inode
                    if len(fields) > 9 and fields[9] in mine:
                        most = max(most, int(fields[4].split(":")[0], 16))
        except OSError:
            continue
    return most


def _writing_big() -> bool:
    """Is a thread of this process inside a write or sendto call of at least SENDING_MARK bytes now? Such a call
    blocks (the GIL released) until the reader has taken what the pipe or socket cannot hold."""
    import platform

    numbers = BIG_WRITES.get(platform.machine(), BIG_WRITES["x86_64"])
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/syscall", "rb") as f:
                fields = f.read().split()
        except OSError:
            continue
        if len(fields) > 3 and fields[0].isdigit() and int(fields[0]) in numbers and int(fields[3], 16) >= SENDING_MARK:
            return True
    return False


@dataclass(frozen=True, kw_only=True)
class KillWhileSendingAt(Workload):
    """At the item, return ``mb`` MiB of bytes and SIGKILL the worker while it writes that result to its parent: a
    thread the job starts watches the process and kills once one of its threads is inside a write of at least
    SENDING_MARK bytes (/proc/self/task/*/syscall: a blocking pipe), or once one of its TCP sockets has that much
    queued to send (/proc/net/tcp: the brief calls on a non-blocking socket, as Dask's, never show).
    The job itself has finished: the fault is in the design's answering step, whatever that is."""

    mb: int = 64

    def __call__(self, item: Any) -> Any:
        if not (self.at == EVERY or item == self.at):
            return super().__call__(item)
        stamp(self.events, "start", item)
        result = b"x" * (self.mb << 20)
        threading.Thread(target=self._kill_once_sending, args=(item,), daemon=True).start()
        return result

    def _kill_once_sending(self, item: Any) -> None:
        while not _writing_big() and _tcp_queued() < SENDING_MARK:
            time.sleep(0.0002)
        stamp(self.events, "fault", item)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True, kw_only=True)
class CloseFdsAt(Workload):
    """At the item, close every file descriptor the worker inherited (3 and up), as a library that daemonizes
    does, then finish the task normally: the worker's pipe or socket to its parent is gone while it lives."""

    def misbehave(self, item: Any) -> None:
        stamp(self.events, "fault", item)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))


@dataclass(frozen=True, kw_only=True)
class InnerPoolAt(Workload):
    """At the item, use a process pool inside the job (``ProcessPoolExecutor(1)``, spawn), as libraries that
    parallelise internally do (joblib, a numeric library): a worker must be allowed children."""

    def misbehave(self, item: Any) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        stamp(self.events, "fault", item)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(abs, -1).result(timeout=60)


@dataclass(frozen=True, kw_only=True)
class LeaveHelperAt(Workload):
    """At the item, start a helper process (``sleep``) and return without waiting for it, as a job that starts a
    server or a watcher and forgets it: the run succeeds; does the helper outlive it?"""

    def misbehave(self, item: Any) -> None:
        import subprocess

        stamp(self.events, "fault", item)
        subprocess.Popen(["sleep", "3600"])


IDLE_FOR = 0.05


@dataclass(frozen=True, kw_only=True)
class DieIdleAt(Workload):
    """At the item, return at once and leave a thread that SIGKILLs the worker once ``after`` s have passed and it
    has run no task for IDLE_FOR s (the other items take ``delay`` s each; a design may have queued some of them on
    this worker): a library's background thread that crashes the process between tasks. No item is in play."""

    after: float = 0.5

    def __call__(self, item: Any) -> Any:
        if not (self.at == EVERY or item == self.at):
            return super().__call__(item)
        stamp(self.events, "start", item)
        threading.Thread(target=self._die_later, args=(item,), daemon=True).start()
        return [1] * self.n

    def _die_later(self, item: Any) -> None:
        time.sleep(self.after)
        quiet_since = time.monotonic()
        while time.monotonic() < quiet_since + IDLE_FOR:  # idle: no task of this process for IDLE_FOR s
            time.sleep(0.001)
            if _RUNNING:
                quiet_since = time.monotonic()
        stamp(self.events, "fault", item)
        os.kill(os.getpid(), signal.SIGKILL)


JOBS = {cls.__name__: cls for cls in (Workload, RaiseAt, SleepAt, HangAt, HangInChildAt, KillSelfWithChildAt,
                                      HangIgnoringTermAt, KillSelfAt, OomAt, SegfaultAt, ExitAt, ReturnsAt,
                                      RaiseUnpicklableAt, KillSelfAfterOtherOomAt, AllocateAt, UsesInitDb,
                                      KillWhileSendingAt, CloseFdsAt, InnerPoolAt, LeaveHelperAt, DieIdleAt)}


def make_job(spec: dict[str, Any]) -> Any:
    """``{"type": "RaiseAt", "at": 3, "n": 1000}`` -> ``RaiseAt(at=3, n=1000)``."""
    spec = dict(spec)
    kind = spec.pop("type", "Workload")
    if kind == "FetchAndParse":
        # Imported on demand, not at the top: http.server, urllib and sqlite3 add 50-70 ms to every
        # worker's start-up, which the other jobs' latency figures must not carry.
        from .pipeline import FetchAndParse

        return FetchAndParse(**spec)
    return JOBS[kind](**spec)


class RaisingItems:
    """The ``items`` iterable of every run: ``0 .. count-1``, misbehaving on cue.

    - ``raise_at``: raise at that index (an exception in the main process);
    - ``special_at`` / ``special``: at that index yield a serialization fault (``pickling.INJECTORS``)
      instead of the plain int;
    - ``slow_from`` / ``slow_seconds``: from that index on, each item takes that long to come (a
      paginated API, a database cursor): the source blocks while workers run;
    - ``payload_bytes``: every item carries that many bytes (a large request), still equal to its int.
    """

    def __init__(self, count: int, raise_at: int | None = None, events: str | None = None, *,
                 special_at: int | None = None, special: str | None = None, slow_from: int | None = None,
                 slow_seconds: float = 0.0, payload_bytes: int = 0) -> None:
        self.count, self.raise_at, self.events = count, raise_at, events
        self.special_at, self.special = special_at, special
        self.slow_from, self.slow_seconds, self.payload_bytes = slow_from, slow_seconds, payload_bytes

    def __iter__(self):
        from . import pickling

        for i in range(self.count):
            if self.slow_from is not None and i >= self.slow_from:
                stamp(self.events, "source_blocks", i, where="items")  # a cue: see harness.run_scenario
                time.sleep(self.slow_seconds)  # the source itself is slow: this is the fault's setting
            if i == self.raise_at:
                stamp(self.events, "fault", i, where="items")
                raise RuntimeError(f"items iterator failed at index {i} (an exception in the main process)")
            if i == self.special_at:
                yield pickling.make(self.special, i, self.events)
            elif self.payload_bytes:
                yield Payload(i, self.payload_bytes)
            else:
                yield i


class Payload(int):
    """An item carrying ``size`` bytes (a large request); equal to its int, logged as it."""

    def __new__(cls, value: int, size: int, data: bytes | None = None) -> Payload:
        self = super().__new__(cls, value)
        self.data = data if data is not None else os.urandom(size)  # random: no allocator or pickle shortcut
        return self

    def __reduce__(self):
        return Payload, (int(self), len(self.data), self.data)
