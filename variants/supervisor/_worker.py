"""The supervisor's worker: runs batches of tasks in order, says in shared memory which one runs, dies with its parent.

Kept free of heavy imports: every worker imports this module at spawn.

What crosses the pipe, and why in this shape:

- parent -> worker: a batch ``[(pos, item pickled on its own), ...]``, or ``None`` (exit). Each item is
  pickled separately by the parent, so an item that cannot be pickled, or unpickled here, fails alone
  and is named; the batch amortises one message over many tiny tasks.
- worker -> parent: ``("ready", pid)`` once, then batches of answers ``(pos, "ok", result pickled,
  seconds)`` / ``(pos, "err", message, traceback, seconds)``, in the order the tasks ran. Answers are
  held back at most ``FLUSH_AFTER`` seconds (a thread sends them when they are that old), so a tiny
  task's result is not delayed by a long task after it, and no longer than ``FLUSH_BYTES`` of results
  (large results go one by one, so a batch never holds many of them in the parent at once).
- shared memory (the slot, three doubles): which task is running and since when (``time.monotonic()``,
  the same clock in every process on Linux). Written before the item is unpickled and cleared after the
  result is pickled, so a death or a hang at any of those steps is charged to that task, and its start
  time is the real start, however long it waited in the batch. No message per task is needed for that.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Answers wait at most this long before they are sent: long enough to group thousands of tiny results
# into one message, short against any detection latency or on_result's expectations.
FLUSH_AFTER = 0.005
FLUSH_COUNT = 1024  # ... or until this many are waiting (bounds one message)
# ... or until their results add up to this many bytes. Without it, 1,000,000-int results made in 2 ms went several
# to a message, and the main process's peak was 37-40 MiB at 2,000 tasks against 33 MiB at 100 (135f757-38f8c5a).
# 1 MiB: tiny results still share a message by the thousand; one large result is sent alone.
FLUSH_BYTES = 1 << 20
IDLE = -1.0  # slot position when no task is running

# The slot: [generation, position, started]. The generation is odd while the worker writes, so a reader
# that sees the same even generation before and after its reads has a consistent pair (a seqlock).
GEN, POS, STARTED = 0, 1, 2


def mark(slot: ctypes.Array, pos: float, started: float = 0.0) -> None:
    slot[GEN] += 1
    slot[POS] = pos
    slot[STARTED] = started
    slot[GEN] += 1


def read(slot: ctypes.Array) -> tuple[int, float] | None:
    """``(pos, started)`` of the task running now, or None between tasks. Called by the parent.

    A read that never sees a whole write (the writer was preempted, or died, inside mark()) keeps POS,
    which is written first, so it is the task being started or the idle mark; but STARTED may still be
    the previous write's (0.0 after an idle mark), which would charge that task from the epoch. Its real
    start is no later than now, so now is used: a deadline may come late by the writer's stall, never early.
    """
    for _ in range(1000):
        gen, pos, started = slot[GEN], slot[POS], slot[STARTED]
        if gen == slot[GEN] and int(gen) % 2 == 0:
            break
    else:
        started = time.monotonic()
    return None if pos == IDLE else (int(pos), started)


def _die_with_parent(parent_pid: int) -> None:
    """No orphans: the kernel SIGKILLs us when the parent dies; a thread covers what that misses.

    PR_SET_PDEATHSIG (Linux) fires when the *thread* that spawned us exits, and only if set before the
    parent dies: the getppid() check closes the window between our fork and this call. The thread
    waiting on the parent's sentinel is the portable check, and the fallback where prctl is missing;
    it needs the GIL, which a job stuck in C code may hold, so it is the fallback, not the guard.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the sentinel thread below is the only guard
    if os.getppid() != parent_pid:
        os._exit(70)  # the parent died before the prctl took effect
    parent = multiprocessing.parent_process()
    if parent is not None:
        def exit_when_parent_dies() -> None:
            wait([parent.sentinel])  # readable only once the parent is gone: no polling, no limit needed
            os._exit(70)

        threading.Thread(target=exit_when_parent_dies, daemon=True, name="parent-watch").start()


def _describe(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:  # an exception whose __str__ raises still gets reported
        text = "<str() of the exception failed>"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class _Outbox:
    """Answers waiting to be sent; ``put`` from the task loop, sent when old, numerous or large, or on ``flush``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.cond = threading.Condition()
        self.waiting: list[tuple[object, ...]] = []
        self.size = 0  # bytes of pickled results waiting
        self.since = 0.0
        threading.Thread(target=self._send_when_old, daemon=True, name="answers").start()

    def put(self, answer: tuple[object, ...]) -> None:
        with self.cond:
            if not self.waiting:
                self.since = time.monotonic()
                self.cond.notify()
            self.waiting.append(answer)
            if isinstance(answer[2], bytes):  # (pos, "ok", result pickled, seconds)
                self.size += len(answer[2])
            if len(self.waiting) >= FLUSH_COUNT or self.size >= FLUSH_BYTES:
                self._send()

    def flush(self) -> None:
        with self.cond:
            if self.waiting:
                self._send()

    def _send(self) -> None:  # with self.cond held: one sender at a time
        waiting, self.waiting, self.size = self.waiting, [], 0
        self.conn.send(waiting)

    def _send_when_old(self) -> None:
        with self.cond:
            while True:
                if not self.waiting:
                    self.cond.wait()  # put() notifies; the process's exit ends this daemon thread
                    continue
                left = self.since + FLUSH_AFTER - time.monotonic()
                if left > 0:
                    self.cond.wait(left)
                    continue
                try:
                    self._send()
                except OSError:
                    return  # the parent is gone: the parent-watch thread or PDEATHSIG ends us


def _run_one(job: Callable[[object], object], pos: int, blob: bytes, slot: ctypes.Array) -> tuple[object, ...]:
    t0 = time.monotonic()
    mark(slot, pos, t0)  # from here until the result is pickled, a death or a hang is this task's
    try:
        try:
            item = pickle.loads(blob)
        except BaseException as e:  # noqa: BLE001  (SystemExit while unpickling fails this item too)
            return (pos, "err", f"the item could not be unpickled in the worker: {_describe(e)}",
                    traceback.format_exc(), time.monotonic() - t0)
        try:
            result = job(item)
        except BaseException as e:  # noqa: BLE001  (SystemExit in a job is a failure of that item too)
            return (pos, "err", f"job raised {_describe(e)}", traceback.format_exc(), time.monotonic() - t0)
        try:
            payload = pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
        except BaseException as e:  # noqa: BLE001  (the item failed; the worker is fine)
            return (pos, "err", f"the result could not be pickled: {_describe(e)}", traceback.format_exc(),
                    time.monotonic() - t0)
        return (pos, "ok", payload, time.monotonic() - t0)
    finally:
        mark(slot, IDLE)


def main(conn: Connection, job: Callable[[object], object], parent_pid: int, slot: ctypes.Array,
         initializer: Callable[..., object] | None = None,
         initargs: tuple[object, ...] = (), address_space: int | None = None) -> None:
    _die_with_parent(parent_pid)
    # Ctrl-C reaches the whole foreground process group; the supervisor decides what stops, not us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    mark(slot, IDLE)
    if address_space is not None:  # the memory limit's portable fallback (see _limits)
        from ._limits import address_space_limit

        address_space_limit(address_space)
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as e:  # noqa: BLE001  (the run ends with it; the worker is not replaced)
            conn.send(("init_failed", f"initializer raised {_describe(e)}", traceback.format_exc()))
            return
    outbox = _Outbox(conn)
    conn.send(("ready", os.getpid()))
    while True:
        if not conn.poll():
            outbox.flush()  # nothing queued: hand over every answer before waiting
        try:
            batch = conn.recv()
        except EOFError:
            return  # the supervisor closed our pipe
        if batch is None:
            outbox.flush()
            return  # orderly shutdown
        for pos, blob in batch:
            outbox.put(_run_one(job, pos, blob, slot))
