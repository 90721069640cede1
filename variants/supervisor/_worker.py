"""The supervisor's worker: runs batches of tasks in order, says in shared memory which one runs, dies with its parent.

Kept free of heavy imports: every worker imports this module at spawn.

What crosses the pipe, and why in this shape:

- parent -> worker: a batch ``[(pos, item pickled on its own), ...]``, or ``None`` (exit). Each item is
  pickled separately by the parent, so an item that cannot be pickled, or unpickled here, fails alone
  and is named; the batch amortises one message over many tiny tasks. An item of ``_core.ITEM_FRAME_MIN`` bytes or
  more pickled crosses in a frame of its own after the batch (its place holds its length, as for results below),
  read here straight into a buffer of its size (``_recv_batch``).
- a large payload (an item or a result) is pickled into its parts (``dump``): a large ``bytes`` inside it is
  written to the pipe as it is, never copied into the pickle first.
- worker -> parent: ``("ready", pid)`` once, then batches of answers ``(pos, "ok", result pickled,
  seconds)`` / ``(pos, "err", message, traceback, seconds)``, in the order the tasks ran. Answers are
  held back at most ``FLUSH_AFTER`` seconds (a thread sends them when they are that old), so a tiny
  task's result is not delayed by a long task after it, and no longer than ``FLUSH_BYTES`` of results
  (large results go one by one, so a batch never holds many of them in the parent at once).
- shared memory (the slot, four doubles): the worker's phase (``PHASES``), the task it concerns and since when
  (``time.monotonic()``, the same clock in every process on Linux). RUNNING is written before the item is
  unpickled and held until its result is pickled; SENDING while the task thread sends answers (a large result
  always goes alone, so the item whose answer was being sent is known). So a death, a hang or a broken pipe at
  any of those steps is charged to that task, its start time is the real start however long it waited in the
  batch, and no message per task is needed for that.
- only the worker itself answers: a forked copy of it (a job that forks and returns, or ends with
  ``sys.exit``) exits at once, without touching the pipe or the slot (``_leave_if_copy``, ``_forked``).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import struct
import threading
import time
import traceback
from collections import namedtuple
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
NO_TASK = -1.0  # slot position when the phase concerns no task

# A worker's life, in the order it is lived: the slot's PHASE says where it is, and what a fault there means
# (a death, a hang or a stop, a pipe that breaks while the process lives). _core charges every fault by it.
STARTING, INIT, IDLE, RECEIVING, RUNNING, SENDING, EXITING = range(7)
PHASES = {
    STARTING: ("starting", "spawned, importing the job: a death ends the run (no worker can start: worker_died)"),
    INIT: ("initializer", "running initializer(*initargs): an error or a death ends the run, never a respawn loop"),
    IDLE: ("idle", "waiting for a batch: no item is in play; the worker is replaced, its queued tasks run elsewhere"),
    RECEIVING: ("receiving", "reading a batch from its pipe: no task has started; the batch runs elsewhere"),
    RUNNING: ("running", "unpickling an item, running the job, pickling its result: that item is in play"),
    SENDING: ("sending", "sending its answers: the first item of the message (a large result goes alone) is in play"),
    EXITING: ("exiting", "told to exit, handing over its last answers: as idle, or as sending while it sends"),
}
# Where deaths of a fresh worker are charged to no item, they count against _core.DEATH_BUDGET.

# The slot, two seqlocks: the task thread's [generation, phase, position, since, last], then the sender's [generation,
# position, since] (written under the outbox's lock: one writer at a time). A generation is odd while its part is
# written, so a reader that sees the same even generation before and after its reads has a consistent part.
GEN, PHASE, POS, STARTED, LAST = 0, 1, 2, 3, 4  # LAST: the task it ran last (its answer may not be in yet)
SEND_GEN, SEND_POS, SEND_STARTED = 5, 6, 7
SLOT_SIZE = 8
# A worker whose own pipe fails (a job closed the descriptors it inherited) exits with this code, its slot left as
# it was: _core then charges the task it ran last, whose answer could not be sent.
EXIT_PIPE = 75
# A result of at least this many bytes pickled crosses the pipe in a frame of its own (see _Outbox); smaller
# ones ride in the answers' list, so thousands of tiny results still make one message (items: _core.ITEM_FRAME_MIN).
INLINE_MAX = 64 << 10

# -- large payloads: pickled into parts, written as frames -------------------------------------------------------
class _Parts(list):  # type: ignore[type-arg]
    """What a pickler writes, part by part. The C pickler writes a ``bytes`` of 64 KiB or more inside the object as
    that very object (its frames bypass the pickler's buffer): kept by reference, not copied. Any other buffer it
    hands over (a view of a bytearray the caller may still change) is copied."""

    def write(self, part: object) -> None:
        self.append(part if type(part) is bytes else bytes(part))  # type: ignore[call-overload]


def dump(obj: object, parts: bool) -> bytes | list[bytes]:
    """``obj`` pickled: ``bytes``, or with ``parts`` (for objects expected large: a pickler costs ~1 us more than
    ``pickle.dumps``) the list of its parts, which a frame writes one after the other (``write_frame``)."""
    if not parts:
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    out = _Parts()
    pickle.Pickler(out, pickle.HIGHEST_PROTOCOL).dump(obj)
    return out[0] if len(out) == 1 else b"".join(out) if sum(map(len, out)) < INLINE_MAX else list(out)


def size_of(payload: bytes | list[bytes]) -> int:
    return len(payload) if isinstance(payload, bytes) else sum(map(len, payload))


def frame_header(size: int) -> bytes:
    """multiprocessing.connection's header of a frame of ``size`` bytes, so Connection.recv_bytes reads our frames."""
    return struct.pack("!i", size) if size <= 0x7fffffff else struct.pack("!iQ", -1, size)


def write_frame(fd: int, parts: list[bytes]) -> None:
    """One frame of the parts, written in full to a blocking ``fd`` (no part copied)."""
    for part in [frame_header(sum(map(len, parts))), *parts]:
        view, done = memoryview(part), 0
        while done < len(view):
            done += os.write(fd, view[done:])


def fit(spare: bytearray | None, size: int) -> bytearray:
    """``spare`` if it holds ``size`` bytes and at most twice that many, else a new buffer of ``size``: a run of large
    frames is read into pages faulted in once, and a buffer kept is never more than twice the frame it holds."""
    return spare if spare is not None and size <= len(spare) <= 2 * size else bytearray(size)


def read_frame(fd: int, spare: bytearray | None = None) -> memoryview:
    """One frame read from a blocking ``fd`` straight into a buffer (``Connection.recv_bytes`` gathers it through a
    BytesIO: a copy more): ``spare`` if it fits (see ``fit``), else a new one. EOFError if the pipe ends first."""
    (size,) = struct.unpack("!i", _read_exactly(fd, memoryview(bytearray(4))))
    if size == -1:
        (size,) = struct.unpack("!Q", _read_exactly(fd, memoryview(bytearray(8))))
    return _read_exactly(fd, memoryview(fit(spare, size))[:size])


def _read_exactly(fd: int, view: memoryview) -> memoryview:
    filled = 0
    while filled < len(view):
        n = os.readv(fd, [view[filled:]])
        if n == 0:
            raise EOFError("the pipe closed in the middle of a frame")
        filled += n
    return view


# phase; pos: the task the phase concerns (RUNNING, SENDING), else None; started: when the phase began (for
# RUNNING, when the task started); last: the task it ran last, or None. A collections.namedtuple: typing is not
# imported in a worker.
State = namedtuple("State", "phase pos started last")


def mark(slot: ctypes.Array, phase: int, pos: float = NO_TASK, started: float = 0.0, last: float | None = None) -> None:
    """The task thread enters ``phase`` (about task ``pos``) at ``started`` (default: now); ``last``: it has just
    run that task."""
    slot[GEN] += 1
    slot[PHASE] = phase
    slot[POS] = pos
    slot[STARTED] = started or time.monotonic()
    if last is not None:
        slot[LAST] = last
    slot[GEN] += 1


def mark_send(slot: ctypes.Array, pos: float) -> None:
    """The sender starts sending a message whose largest answer is task ``pos`` (NO_TASK: it is done)."""
    slot[SEND_GEN] += 1
    slot[SEND_POS] = pos
    slot[SEND_STARTED] = time.monotonic()
    slot[SEND_GEN] += 1


def _part(slot: ctypes.Array, gen: int, n: int) -> tuple[float, ...] | None:
    for _ in range(1000):
        g, values = slot[gen], tuple(slot[gen + 1:gen + 1 + n])
        if g == slot[gen] and int(g) % 2 == 0:
            return values
    return None  # never a whole write seen: the writer is stalled (or died) inside one


def read(slot: ctypes.Array) -> State:
    """Where the worker is: RUNNING a task if its task thread is; else SENDING if its sender is (the largest
    answer of the message is the task); else the task thread's phase. Called by the parent.

    A read that never sees a whole write (the writer was preempted, or died, inside a mark) still takes the
    phase and position, which are written first, so they are those being entered; but the time may still be the
    previous write's, which would charge that task from an earlier moment. Its real start is no later than now,
    so now is used: a deadline may come late by the writer's stall, never early.
    """
    whole = _part(slot, GEN, 4)
    phase, pos, started, last = whole if whole is not None else (slot[PHASE], slot[POS], time.monotonic(), slot[LAST])
    if phase != RUNNING:
        send = _part(slot, SEND_GEN, 2)
        send_pos, send_started = send if send is not None else (slot[SEND_POS], time.monotonic())
        if send_pos != NO_TASK:
            phase, pos, started = SENDING, send_pos, send_started
    return State(int(phase), None if pos == NO_TASK else int(pos), started, None if last == NO_TASK else int(last))


def new_slot(ctx: multiprocessing.context.BaseContext) -> ctypes.Array:
    """A worker's slot, made by the parent before the worker starts: STARTING, no task, nothing being sent."""
    slot = ctx.RawArray("d", SLOT_SIZE)
    slot[POS] = slot[LAST] = slot[SEND_POS] = NO_TASK
    return slot


def phase_name(phase: int) -> str:
    return PHASES.get(phase, (f"phase {phase}",))[0]


# The worker's own pid, set in main(): a forked copy of the worker has another one.
_OWN_PID = 0


def _forked() -> None:
    """In a child forked from the worker (by a job or a library it uses): that child is not the worker. The
    worker's pipe is closed in it, so a child that outlives the worker never holds it open (the parent sees
    the worker's EOF at once) and never writes into it; if the child comes back into the task loop (a job that
    forks and returns), ``_leave_if_copy`` ends it before it reports anything."""
    if _CONN is not None:
        try:
            os.close(_CONN.fileno())
        except OSError:
            pass


_CONN: Connection | None = None


def _leave_if_copy(code: object = 0) -> None:
    """End a forked copy of the worker here, before it answers in the worker's name or writes the slot."""
    if os.getpid() != _OWN_PID:
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))


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
        _end_orphaned()  # the parent died before the prctl took effect
    parent = multiprocessing.parent_process()
    if parent is not None:
        def exit_when_parent_dies() -> None:
            wait([parent.sentinel])  # readable only once the parent is gone: no polling, no limit needed
            _end_orphaned()

        threading.Thread(target=exit_when_parent_dies, daemon=True, name="parent-watch").start()


def _end_orphaned() -> None:
    """Exit because the main process is gone, and take our process group with us when we lead one.

    The keeper only ends the group when the kernel continues it, which it does at the moment the group becomes
    orphaned, and only if the keeper is stopped by then: a main process that dies while the keeper is still
    starting leaves it stopped for good (measured: main SIGKILLed 50-100 ms after start, both keepers left).
    So the worker that sees its parent gone ends the group itself.
    """
    if os.getpgid(0) == os.getpid():
        os.killpg(0, signal.SIGKILL)  # the keeper, what a job started, and this process
    os._exit(70)


# The group's keeper (see _keep_group): stops itself; once continued, SIGKILLs its whole process group (kill 0).
KEEPER = ("/bin/sh", "-c", "trap '' HUP; kill -STOP $$; kill -KILL 0")
KEEPER_READY = 5.0  # how long a worker waits for its keeper to stop (a shell's start-up: ~2 ms, more under load)


def _keep_group() -> None:
    """Start the group's keeper: a shell in the worker's own process group that stops itself at once.

    When the worker dies, however it dies (its own crash, the OOM killer, PR_SET_PDEATHSIG after the main process
    was SIGKILLed), its group is left with no parent in the session: an orphaned process group, and the kernel
    continues (SIGHUP, SIGCONT) the stopped members of such a group (POSIX job control). The keeper is that stopped
    member; continued, it SIGKILLs its group: what a job started and left ends with its worker even when no
    process of the run is left to signal it, a process that ignores SIGHUP included. Only a process that left the
    group (setsid) escapes, and ``memory_limit``'s cgroup then holds it while the main process lives. A shell, not
    a fork of this worker: about 1 MiB. It holds none of our descriptors: its standard streams are /dev/null (a
    reader of the worker's output sees EOF when the worker ends) and every descriptor this process can pass on is
    closed in it (a keeper holding the worker's pipe would hide the pipe's EOF from _core).
    Called only once the worker leads its own group, so ``kill 0`` can never reach the main process's group.
    """
    if os.getpgid(0) != os.getpid() or not os.path.exists(KEEPER[0]):
        return  # no group of our own, or no shell: _core still ends the group, while the main process lives
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    passed_on = [(os.POSIX_SPAWN_CLOSE, fd) for fd in _passed_on_fds()]
    keeper = os.posix_spawn(KEEPER[0], list(KEEPER), {}, file_actions=quiet + passed_on)
    # Only a member stopped when the group is orphaned is continued: one that stops after that stays stopped for
    # good. So no task starts before it is stopped (a few ms); one that is not stopped in time is not kept.
    deadline = time.monotonic() + KEEPER_READY
    while time.monotonic() < deadline:
        if os.waitpid(keeper, os.WNOHANG | os.WUNTRACED)[0]:
            return  # stopped: kept (or it ended, which only a broken shell does: then there is nothing to keep)
        time.sleep(0.001)
    os.kill(keeper, signal.SIGKILL)
    os.waitpid(keeper, 0)


def _passed_on_fds() -> list[int]:
    """This process's descriptors above the standard three that a new program would inherit."""
    fds = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                fds.append(fd)
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return fds


def _describe(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:  # an exception whose __str__ raises still gets reported
        text = "<str() of the exception failed>"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class _Outbox:
    """Answers waiting to be sent; ``put`` from the task loop, sent when old, numerous or large, or on ``flush``.

    A message is the list of answers, then one frame of raw bytes per result of INLINE_MAX or more (its place in
    the list holds its length): a large result crosses the pipe as it was pickled (in parts: see ``dump``), never
    copied into a second pickle of the whole list (which needed twice its size in the worker, and once more in the
    parent).
    """

    def __init__(self, conn: Connection, slot: ctypes.Array) -> None:
        self.conn, self.slot = conn, slot
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
            if answer[1] == "ok":  # (pos, "ok", result pickled, seconds)
                self.size += size_of(answer[2])
            if len(self.waiting) >= FLUSH_COUNT or self.size >= FLUSH_BYTES:
                self._send()

    def flush(self) -> None:
        with self.cond:
            if self.waiting:
                self._send()

    def _send(self) -> None:
        """With self.cond held: one sender at a time, so the slot's SEND part has one writer at a time. It names
        the largest result of the message (the one a death while sending is most likely about) until the whole
        message is written; after an error it stays, and the parent charges that item."""
        waiting, self.waiting, self.size = self.waiting, [], 0
        sizes = [size_of(a[2]) if a[1] == "ok" else 0 for a in waiting]
        mark_send(self.slot, waiting[sizes.index(max(sizes))][0])
        paired = list(zip(waiting, sizes, strict=True))
        frames = [a[2] for a, size in paired if size >= INLINE_MAX]
        if frames:
            waiting = [(a[0], a[1], size, a[3]) if size >= INLINE_MAX else a for a, size in paired]
        self.conn.send(waiting)
        for frame in frames:
            if isinstance(frame, bytes):
                self.conn.send_bytes(frame)
            else:
                write_frame(self.conn.fileno(), frame)
        mark_send(self.slot, NO_TASK)

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
                    return  # the pipe is gone: the task loop's next use of it ends the worker


def _run_one(job: Callable[[object], object], pos: int, blob: bytes | memoryview, slot: ctypes.Array,
             parts: bool = False) -> tuple[object, ...]:
    """Run one task; its answer. ``parts``: the result is expected large (see ``dump``)."""
    t0 = time.monotonic()
    mark(slot, RUNNING, pos, t0)  # from here until the result is pickled, a death or a hang is this task's
    try:
        try:
            item = pickle.loads(blob)
        except BaseException as e:  # noqa: BLE001  (SystemExit while unpickling fails this item too)
            return (pos, "err", f"the item could not be unpickled in the worker: {_describe(e)}",
                    traceback.format_exc(), time.monotonic() - t0)
        try:
            result = job(item)
        except SystemExit as e:  # a job's sys.exit fails its item, but a forked copy exits as it asked
            _leave_if_copy(e.code)
            return (pos, "err", f"job raised {_describe(e)}", traceback.format_exc(), time.monotonic() - t0)
        except BaseException as e:  # noqa: BLE001  (any other exception in a job is a failure of that item too)
            _leave_if_copy(1)
            return (pos, "err", f"job raised {_describe(e)}", traceback.format_exc(), time.monotonic() - t0)
        _leave_if_copy(0)
        try:
            payload = dump(result, parts)
        except BaseException as e:  # noqa: BLE001  (the item failed; the worker is fine)
            return (pos, "err", f"the result could not be pickled: {_describe(e)}", traceback.format_exc(),
                    time.monotonic() - t0)
        return (pos, "ok", payload, time.monotonic() - t0)
    finally:
        mark(slot, IDLE, last=pos)


def _recv_batch(conn: Connection) -> list[tuple[int, bytes | memoryview]] | None:
    """The next batch, its large items read from their frames (in the batch's order), or None (exit). The batch's
    last large item is read into the buffer of the one before (``fit``): that batch has run by now."""
    global _spare
    batch = conn.recv()
    if not batch:
        return batch
    large = [i for i, (_, blob) in enumerate(batch) if isinstance(blob, int)]
    for i in large:
        frame = read_frame(conn.fileno(), _spare if i == large[-1] else None)
        if i == large[-1]:
            _spare = frame.obj  # type: ignore[assignment]
        batch[i] = (batch[i][0], frame)
    return batch


_spare: bytearray | None = None  # the buffer the last batch's last large item was read into


def main(conn: Connection, job: Callable[[object], object], parent_pid: int, slot: ctypes.Array,
         initializer: Callable[..., object] | None = None,
         initargs: tuple[object, ...] = (), address_space: int | None = None) -> None:
    global _OWN_PID, _CONN
    _OWN_PID, _CONN = os.getpid(), conn
    mark(slot, STARTING)
    # The spawn start method hands us the pipe as an inheritable descriptor: a program the job starts with
    # close_fds=False would hold it open, and _core would not see its EOF when this worker's end of it goes.
    os.set_inheritable(conn.fileno(), False)
    os.register_at_fork(after_in_child=_forked)
    try:  # a process group of its own: what the job starts is in it, and _core ends the group with the worker
        os.setpgid(0, 0)
        _keep_group()
    except OSError:  # not permitted (a session leader): _family's listing is then the only way to them
        pass
    _die_with_parent(parent_pid)
    # A Ctrl-C is the supervisor's to handle (its own process group gets it); the supervisor decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if address_space is not None:  # the memory limit's portable fallback (see _limits)
        from ._limits import address_space_limit

        address_space_limit(address_space)
    if initializer is not None:
        mark(slot, INIT)
        try:
            initializer(*initargs)
        except BaseException as e:  # noqa: BLE001  (the run ends with it; the worker is not replaced)
            _leave_if_copy(1)
            conn.send(("init_failed", f"initializer raised {_describe(e)}", traceback.format_exc()))
            return
        _leave_if_copy(0)
    outbox = _Outbox(conn, slot)
    large = False  # the last result was large: the next is pickled into parts (see dump)
    mark(slot, IDLE)
    conn.send(("ready", os.getpid()))
    try:
        while True:
            if not conn.poll():
                outbox.flush()  # nothing queued: hand over every answer before waiting
                conn.poll(None)  # idle until a batch (or EOF) arrives
            mark(slot, RECEIVING)
            try:
                batch = _recv_batch(conn)
            except EOFError:
                return  # the supervisor closed our pipe
            if batch is None:
                mark(slot, EXITING)
                outbox.flush()
                return  # orderly shutdown
            for pos, blob in batch:
                answer = _run_one(job, pos, blob, slot, large)
                large = answer[1] == "ok" and size_of(answer[2]) >= INLINE_MAX  # the next result is likely alike
                outbox.put(answer)
    except OSError as e:  # our own pipe failed under us (a job closed it): nothing can be answered any more
        os.write(2, f"supervisor worker {os.getpid()}: its pipe failed ({_describe(e)}); exiting\n".encode())
        os._exit(EXIT_PIPE)
