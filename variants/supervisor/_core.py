"""The supervisor's main-process side: the loop, its options and ``run()`` (the package docstring says what it
promises; ``_worker`` is the other side of the pipe)."""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import selectors
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from ..contract import Clock, Fate, RemoteTraceback, RunFailed, RunReport, attach_report, check_arguments
from . import _family, _limits, _oom, _worker
from ._inbox import Inbox, Outgoing
from ._source import Source

NAME = "supervisor"

# Batches: a worker gets up to two batches queued, so it never waits for the loop between tasks. A batch
# holds about BATCH_SECONDS of work (measured from the answers, as joblib's batch_size="auto" does), at
# most BATCH_MAX items, and at most BATCH_BYTES of pickled items while the worker is busy: what a busy worker
# has not read waits in the main process (the loop writes as the pipe takes it, never blocking: _inbox.Outgoing),
# so this bounds that memory. Large items therefore go one at a time, to idle workers: letting a busy worker hold
# one large item more measured no faster (1 MiB and 64 MiB items out, 3 runs each, the same within the noise).
BATCH_SECONDS = 0.02
# BATCH_MAX bounds how many items the loop records ahead (two batches per worker), not bytes (BATCH_BYTES
# does): 20,000 tiny tasks on 2 workers took a median 0.30 s at 1,024 against 0.33 s at 256, the rest of the
# code the same (9 single runs each, bench.throughput._time, start-up included), as each message carries
# more tasks.
BATCH_MAX = 1024
BATCH_BYTES = 64 << 10
# An item of at least this many bytes pickled crosses in a frame of its own after its batch (see _worker); a smaller
# one rides in the batch, copied into it once more. At 64 KiB (_worker.INLINE_MAX, the results' bound), 64 KiB
# items went out at 130-259 MB/s against 211-316 inline, the framing's extra reads costing more than the copy.
ITEM_FRAME_MIN = 256 << 10
EWMA = 0.2  # weight of the newest measurement in the task-duration and item-size averages
JOIN_LIMIT = 5.0  # after SIGKILL, which cannot be ignored: bounds only a kernel stuck in D state
# Deaths in a row that no item is charged with (a worker dying idle, receiving, exiting) and between which no
# task was answered and no item failed: past this many the run fails (worker_died, saying at which phase), since
# a replacement would only die the same way. A death charged to an item is bounded by ``retries`` instead.
DEATH_BUDGET = 3
# A note that repeats (a replacement, a retry, a stopped worker) is kept verbatim this many times per kind; the
# rest are counted in one closing note, so the report stays in proportion to what is unfinished.
NOTES_PER_KIND = 3
# /proc/<pid>/stat's flags: the process is exiting (its files, the pipe among them, may already be closed).
PF_EXITING = 0x4


def folded(average: float | None, total: float, n: int) -> float:
    """The running average after ``n`` (at least 1) more measurements summing to ``total``: ``n`` EWMA steps
    of their mean, in one step (per batch, not per item: a tiny task's bookkeeping is what limits the throughput)."""
    mean = total / n
    return mean if average is None else mean + (average - mean) * (1.0 - EWMA) ** n


def describe_exit(exitcode: int | None) -> str:
    """Say how a worker died."""
    if exitcode is None:
        return "worker vanished with no exit code"
    if exitcode == _worker.EXIT_PIPE:
        return (f"worker exited with code {exitcode}: its own end of the pipe failed under it (did the job close the "
                f"file descriptors it inherited?)")
    if exitcode >= 0:
        return f"worker exited with code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    return f"worker was killed by {name} (exit code {exitcode})"


def exit_fd(proc: multiprocessing.process.BaseProcess) -> tuple[int, bool]:
    """An fd that becomes readable once ``proc`` has exited for good, and whether we must close it.

    Not ``proc.sentinel`` alone: that pipe is readable as soon as the process has closed its files, and
    we measured a worker on this kernel take up to ~1 s from there to an exit code (its threads still
    exiting). A pidfd (Linux >= 5.3) is readable only when the process can be reaped.
    """
    try:
        return os.pidfd_open(proc.pid), True
    except (AttributeError, OSError):  # not Linux, an old kernel, or already reaped
        return proc.sentinel, False


def framed(obj: Any) -> list[bytes]:
    """A message as ``Connection.send`` writes it: a frame of ``obj`` pickled (``Connection.recv`` reads it)."""
    blob = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    return [_worker.frame_header(len(blob)), blob]


_Selector = selectors.PollSelector if hasattr(selectors, "PollSelector") else selectors.SelectSelector


def wait_for(readers: list[Any], writers: list[Connection], timeout: float | None) -> tuple[list[Any], list[Any]]:
    """``multiprocessing.connection.wait`` on ``readers`` (connections and fds), and on ``writers`` for room in
    their pipes: (the readable ones, the writable ones), once one is ready or ``timeout`` passed."""
    events = dict.fromkeys(readers, selectors.EVENT_READ)
    for obj in writers:
        events[obj] = events.get(obj, 0) | selectors.EVENT_WRITE
    with _Selector() as selector:
        for obj, mask in events.items():
            selector.register(obj, mask)
        ready = selector.select(timeout)
    return ([key.fileobj for key, mask in ready if mask & selectors.EVENT_READ],
            [key.fileobj for key, mask in ready if mask & selectors.EVENT_WRITE])


def end_group(pid: int) -> None:
    """SIGKILL the process group a worker made for itself (see _worker.main): what its job started and left,
    even once the worker is dead and they are orphans. The group's id is the worker's pid, which the kernel does
    not give another process while the group has a member or the worker is unreaped; a worker that could not
    make its group has none, and the call finds nothing."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:  # no such group (all gone), or not ours to signal
        pass


def exiting(pid: int) -> bool:
    """Is the process gone, a zombie, or on its way out (its pipe may close before its exit code is there)?
    True where /proc cannot tell (not Linux): the caller then waits for the exit code, as it always did."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return fields[0] in (b"Z", b"X") or bool(int(fields[6]) & PF_EXITING)
    except (OSError, IndexError, ValueError):
        return True


def reap(proc: multiprocessing.process.BaseProcess, limit: float) -> None:
    """Wait (at most ``limit`` s) until the process has exited for good, end its process group, and collect
    its exit code.

    Always through ``join``: reading ``exitcode`` alone reaps the process but leaves it in multiprocessing's
    list of children, which keeps its pipe open until some later process starts."""
    if proc.exitcode is None:
        fd, owned = exit_fd(proc)
        try:
            wait([fd], limit)
        finally:
            if owned:
                os.close(fd)
    end_group(proc.pid)
    proc.join(0)


@dataclass
class _Worker:
    proc: multiprocessing.process.BaseProcess
    conn: Connection
    slot: Any  # shared memory: the task running now and since when (see _worker.mark)
    ready: bool = False
    queued: deque[int] = field(default_factory=deque)  # positions sent, not answered, in the order they run
    queued_bytes: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # position -> pickled item size
    baseline: _oom.Baseline | None = None
    sent: int = 0  # tasks sent to it in its life (max_tasks_per_worker)
    sent_at: float = 0.0  # when it was last sent a batch
    retiring: bool = False  # it got its last task; a replacement is already started
    inbox: Inbox = field(init=False)  # what it sent, read without ever blocking the loop
    out: Outgoing = field(init=False)  # what it is sent, written as its pipe takes it (never blocking the loop)
    # Readable once it has exited for good: a pidfd, which the worker cannot close (its sentinel pipe it can, with
    # the descriptors a job closes: that woke the loop while the process lived). See exit_fd.
    exit_fd: int = field(init=False)
    owns_exit_fd: bool = field(init=False)

    def __post_init__(self) -> None:
        self.inbox = Inbox(self.conn.fileno())
        self.out = Outgoing(self.conn.fileno())
        self.exit_fd, self.owns_exit_fd = exit_fd(self.proc)


@dataclass
class _Stopping:
    """A worker on its way out: retired after its last task, or stopped (hung, timed out, past its task_timeout).
    The loop waits on ``fd`` (see exit_fd) and SIGKILLs it at ``kill_at``; ``family`` is what its job started,
    listed when the stop began (they go with it, see _family)."""

    proc: multiprocessing.process.BaseProcess
    kill_at: float
    fd: int
    owns_fd: bool
    family: list[_family.Member]

    def close_fd(self) -> None:
        if self.owns_fd:
            os.close(self.fd)
            self.owns_fd = False


@dataclass(frozen=True, kw_only=True)
class Options:
    """Everything ``run()`` was asked, checked."""

    workers: int
    on_result: Callable[[Any, Any], Any] | None
    timeout: float | None
    task_timeout: float | None
    on_error: str
    retries: int
    max_in_flight: int | None
    grace: float
    initializer: Callable[..., Any] | None = None
    initargs: tuple[Any, ...] = ()
    max_tasks_per_worker: int | None = None
    memory_limit: int | None = None  # bytes


class _Supervisor:
    def __init__(self, job: Callable[[Any], Any], items: Iterable[Any], options: Options) -> None:
        self.job, self.opt = job, options
        self.ctx = multiprocessing.get_context("spawn")
        self.clock = Clock()
        self.report = RunReport(NAME, fates=[], clock_start=self.clock.start)  # where `timeout` counts from
        self.retry: deque[int] = deque()  # positions to run (again): retries and tasks a dead worker held
        self.workers: list[_Worker] = []
        self.stopping: list[_Stopping] = []  # workers on their way out (see stop_later)
        self.failures: list[RunFailed] = []
        self.task_seconds: float | None = None  # running average of one task's duration in a worker
        self.item_bytes: float | None = None  # running average of one pickled item
        self.source = Source(items, self.batch_size())  # read ahead: one batch (iter(items) may raise: first)
        self.witness = _oom.Witness()
        self.spawned = 0
        self.deaths_in_a_row = 0  # deaths charged to no item since the last task answered or item failed
        self.note_counts: dict[str, int] = {}
        self.retired = 0  # workers replaced after max_tasks_per_worker tasks (one note at the end says how many)
        self.limit = _limits.MemoryLimit(options.memory_limit) if options.memory_limit else None
        if self.limit is not None:
            self.report.notes.append(f"memory_limit {options.memory_limit / 2**20:.0f} MiB: {self.limit.mechanism}")

    def note(self, kind: str, text: str) -> None:
        """A note of a kind that can repeat: the first NOTES_PER_KIND verbatim, the rest counted (see finish_notes)."""
        n = self.note_counts[kind] = self.note_counts.get(kind, 0) + 1
        if n <= NOTES_PER_KIND:
            self.report.notes.append(text)

    def finish_notes(self) -> None:
        for kind, n in self.note_counts.items():
            if n > NOTES_PER_KIND:
                self.report.notes.append(f"... and {n - NOTES_PER_KIND} more note(s) like the above: {kind}")

    # -- sizes -----------------------------------------------------------------------------------
    def batch_size(self) -> int:
        n = BATCH_MAX
        if self.task_seconds is not None:
            n = min(n, int(BATCH_SECONDS / max(self.task_seconds, 1e-7)))
        else:
            n = 1  # nothing measured yet: one at a time until the first answers say how long a task takes
        if self.item_bytes:
            n = min(n, int(BATCH_BYTES / self.item_bytes))
        return max(1, n)

    def in_flight_limit(self) -> int:
        """Items pulled and not finished: two batches per worker, or what the caller set."""
        if self.opt.max_in_flight is not None:
            return self.opt.max_in_flight
        return 2 * self.opt.workers * self.batch_size()

    def in_flight(self) -> int:
        """Items pulled and neither done nor failed for good: the ones memory and the limit are about."""
        return self.report.unfinished_count - len(self.failures)

    # -- workers ---------------------------------------------------------------------------------
    def spawn(self) -> None:
        slot = _worker.new_slot(self.ctx)  # first: if it fails (its arena is a file), no pipe is left open
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        address_space = self.opt.memory_limit if self.limit is not None and not self.limit.cgroup else None
        # Not a daemon: a job may start processes of its own (multiprocessing refuses them to daemons); run()
        # never lets a worker outlive it anyway, and the group of each worker goes with it (end_group).
        proc = self.ctx.Process(target=_worker.main, name=f"supervisor-worker-{self.spawned}", daemon=False,
                                args=(child_conn, self.job, os.getpid(), slot, self.opt.initializer,
                                      self.opt.initargs, address_space))
        self.spawned += 1
        try:
            proc.start()
        except BaseException:  # no process (no file descriptor or memory left, or spawned before the main
            parent_conn.close()  # module finished importing): the error leaves run() as it is, pipe closed
            child_conn.close()
            raise
        child_conn.close()  # ours is closed so that a dead worker shows as EOF on parent_conn
        os.set_blocking(parent_conn.fileno(), False)  # the loop reads and writes it only as far as it can (_inbox)
        self.workers.append(_Worker(proc, parent_conn, slot))
        if self.limit is not None:  # before it runs the initializer or a task: only interpreter start-up
            try:  # is charged outside its cgroup
                self.limit.confine(proc.pid)
            except OSError as e:
                raise RunFailed(f"worker_died: could not confine a worker to its memory cgroup: {e}",
                                kind="worker_died", report=self.report) from e

    def retire(self, w: _Worker) -> None:
        self.workers.remove(w)
        w.conn.close()
        if w.owns_exit_fd:
            os.close(w.exit_fd)
            w.owns_exit_fd = False
        if self.limit is not None and w.proc.exitcode is not None:
            self.limit.release(w.proc.pid)

    def stop_later(self, w: _Worker, *, asked: bool = False) -> None:
        """The one way a live worker leaves the pool: ``asked`` (it answered its last task: it is asked to exit, in
        order) or stopped (SIGTERM to it and what its job started). Either way SIGKILL at the grace deadline; the
        loop waits on its exit fd meanwhile, blocking nothing (reap_stopping)."""
        if asked and w.proc.exitcode is None:
            self.send(w, framed(None))  # as far as its pipe takes it now: it is read after all it was sent
        self.retire(w)
        if w.proc.exitcode is not None:  # gone already (it exited after its last answer): only its group is left
            end_group(w.proc.pid)
            return
        family = _family.descendants(w.proc.pid)
        if not asked:
            w.proc.terminate()
            _family.signal_all(family, signal.SIGTERM)
            try:
                os.killpg(w.proc.pid, signal.SIGTERM)  # its group: the job's processes, also those no longer its children
            except OSError:
                pass
        self.stopping.append(_Stopping(w.proc, time.monotonic() + self.opt.grace, *exit_fd(w.proc), family))

    def reap_stopping(self, now: float, exited: set[int]) -> None:
        """Forget the stopping workers whose exit fd was readable (SIGKILL what their jobs started and left);
        SIGKILL those past their grace."""
        still = []
        for s in self.stopping:
            proc = s.proc
            if s.fd in exited or proc.exitcode is not None:
                s.close_fd()
                proc.join(0)
                _family.signal_all(s.family)
                if self.limit is not None:
                    self.limit.release(proc.pid)
                end_group(proc.pid)
                if proc.exitcode != 0:  # a stopped (hung, timed-out) worker; a retired one exits 0, unnoted
                    self.note("stopped workers", f"stopped worker pid {proc.pid} (exit code {proc.exitcode})")
                continue
            if now >= s.kill_at:
                proc.kill()  # ignored SIGTERM (or the request to exit) for `grace` seconds
                end_group(proc.pid)
                _family.signal_all(s.family)
                s.kill_at = math.inf  # its exit fd will say when it is gone
            still.append(s)
        self.stopping = still

    def stop_all(self, orderly: bool) -> None:
        """Orderly: ask idle workers to exit, SIGTERM those still starting (they hold no task: waiting for
        their start-up cost a short run with many workers all their start-ups, ~1 s for 8 on 2 cores).
        Otherwise (or if they do not exit): SIGTERM, grace, SIGKILL."""
        now = time.monotonic()
        # each process's SIGKILL time: a worker already being stopped keeps its own (its grace has run)
        kill_at = {w.proc: now + self.opt.grace for w in self.workers}
        # what each job started (listed before its worker is asked to stop, while they are still its children)
        families = _family.descendants(*(w.proc.pid for w in self.workers))
        for s in self.stopping:
            kill_at[s.proc] = min(s.kill_at, now + self.opt.grace)
            families += s.family
            s.close_fd()
        self.stopping = []
        procs = list(kill_at)
        try:
            for w in self.workers:
                if orderly and w.ready:
                    self.send(w, framed(None))
                elif w.proc.exitcode is None:
                    w.proc.terminate()  # workers already being stopped had their SIGTERM
            if not orderly:
                _family.signal_all(families, signal.SIGTERM)
                for p in procs:
                    try:
                        os.killpg(p.pid, signal.SIGTERM)
                    except OSError:
                        pass
            for p in sorted(procs, key=kill_at.__getitem__):
                reap(p, max(0.0, kill_at[p] - time.monotonic()))
                if p.exitcode is None:
                    p.kill()  # ignored SIGTERM (or the orderly request) until its grace ran out
        finally:  # whatever interrupted the above (a second Ctrl-C), every worker still gets SIGKILL
            for p in procs:
                if p.exitcode is None:
                    p.kill()
            for p in procs:
                reap(p, JOIN_LIMIT)
            _family.signal_all(families)  # what the jobs started and left: their workers are gone
            for w in list(self.workers):
                self.retire(w)
            self.witness.close()
            for p in procs:
                end_group(p.pid)  # what the jobs left in their workers' groups, orphans included
            if self.limit is not None:
                left = self.limit.release_all()
                if left:
                    self.report.notes.append(f"memory cgroups not removed (still busy): {left}")

    # -- items -----------------------------------------------------------------------------------
    def next_positions(self, n: int) -> list[int]:
        """Up to ``n`` positions to send: retries first, then new items within the in-flight limit."""
        out = [self.retry.popleft() for _ in range(min(n, len(self.retry)))]
        room = min(n - len(out), self.in_flight_limit() - self.in_flight())
        if room > 0:  # recorded before dropped from the source: a Ctrl-C anywhere loses no item (_source)
            out += self.source.hand_over(room, self.report.track)
        return out

    def dispatch(self) -> None:
        batch = self.batch_size()
        for w in list(self.workers):
            if not w.ready or w.retiring or w.proc.exitcode is not None or len(w.queued) > batch:
                continue  # keeps at most two batches queued: one running, one waiting
            if w.queued and self.item_bytes and w.queued_bytes + self.item_bytes > BATCH_BYTES:
                continue  # busy, and no room under BATCH_BYTES for an item of the usual size: not pulled (and
                # pickled) here only to be put back, on every pass of the loop, until the worker is idle
            budget = batch if w.queued else 2 * batch
            if self.opt.max_tasks_per_worker is not None:
                budget = min(budget, self.opt.max_tasks_per_worker - w.sent)
            sent: list[tuple[int, bytes | int]] = []
            frames: list[bytes] = []  # the large items' frames, after the batch (see _worker's docstring)
            todo = deque(self.next_positions(budget))
            fate, dump, queued, sizes = self.report.fate, _worker.dump, w.queued, w.sizes  # locals: per item
            parts = self.item_bytes is None or self.item_bytes >= ITEM_FRAME_MIN  # else dumps: cheaper per item
            while todo:
                pos = todo.popleft()
                try:
                    blob = dump(fate(pos).item, parts)
                except Exception as e:  # that item alone fails, named, with its cause
                    self.fail(pos, "worker_error", f"the item could not be pickled to send it: {type(e).__name__}: {e}",
                              error=e, retryable=False)
                    continue
                size = _worker.size_of(blob)
                if queued and w.queued_bytes + size > BATCH_BYTES:
                    self.item_bytes = folded(self.item_bytes, size, 1)  # measured, though not sent
                    todo.appendleft(pos)  # a busy worker gets no more than the pipe holds: the rest later
                    self.retry.extendleft(reversed(todo))
                    break
                if size < ITEM_FRAME_MIN:
                    sent.append((pos, blob if isinstance(blob, bytes) else b"".join(blob)))
                else:
                    sent.append((pos, size))
                    frames += [_worker.frame_header(size), *([blob] if isinstance(blob, bytes) else blob)]
                queued.append(pos)
                w.queued_bytes += size
                sizes[pos] = size
            if sent:
                self.item_bytes = folded(self.item_bytes, sum(sizes[p] for p, _ in sent), len(sent))
                w.sent += len(sent)
                w.sent_at = time.monotonic()
                self.send(w, framed(sent) + frames)
            if self.opt.max_tasks_per_worker is not None and w.sent >= self.opt.max_tasks_per_worker:
                w.retiring = True  # its last tasks are queued: start its replacement now, so none waits
                self.spawn()

    def send(self, w: _Worker, parts: list[bytes]) -> None:
        """Queue bytes for ``w`` and write what its pipe takes now; the loop writes the rest as it has room."""
        w.out.put(parts)
        self.write(w)

    def write(self, w: _Worker) -> None:
        try:
            w.out.write()
        except OSError:  # it died or its end closed meanwhile: its exit fd or EOF reports it; what it held is charged
            w.out.drop()  # by its phase, and the tasks it never received are innocent

    # -- faults ----------------------------------------------------------------------------------
    def fail(self, pos: int | None, kind: str, message: str, exitcode: int | None = None,
             traceback: str | None = None, error: BaseException | None = None, retryable: bool = True) -> None:
        """Record a fault; retry the culprit if allowed; abort (raise) or carry on per on_error.

        Not retried: a callback error (on_result runs in this process, once per result) and an item this
        process cannot pickle (it would fail the same way).
        """
        fate = self.report.fate(pos) if pos is not None else None
        if fate is not None:
            fate.attempts += 1
        if fate is not None and retryable and kind != "callback_error" and fate.attempts <= self.opt.retries:
            self.note("retries", f"retrying item {fate.item!r} after {kind}: {message}")
            self.retry.appendleft(pos)  # type: ignore[arg-type]
            return
        if fate is not None:
            fate.fate, fate.kind, fate.message, fate.exitcode = Fate.FAILED, kind, message, exitcode
            fate.traceback = traceback
            self.deaths_in_a_row = 0  # an item failed for good: the run moved on
        text = f"{kind}: {message}" + (f" (item {fate.item!r})" if fate is not None else "")
        failed = RunFailed(text, kind=kind, item=None if fate is None else fate.item, exitcode=exitcode,
                           report=self.report)
        failed.__cause__ = RemoteTraceback(traceback) if traceback else error
        if self.opt.on_error == "abort" or fate is None:
            raise failed
        self.failures.append(failed)

    def on_answers(self, w: _Worker, answers: list[tuple[Any, ...]]) -> None:
        # The per-answer path of a run of tiny tasks: what it uses is read once into locals, and the task
        # duration's average is updated once per message. These, the same in dispatch, the items reader's
        # runs and BATCH_MAX together: 20,000 tiny tasks on 2 workers, start-up included, the median of 5
        # best-of-3 figures (bench.throughput.measure): 0.256 s against 0.334 s for the code before all of
        # them; the reference 0.153 s.
        if answers:
            self.task_seconds = folded(self.task_seconds, sum(a[-1] for a in answers), len(answers))
            self.deaths_in_a_row = 0
        queued, sizes, report, on_result, loads = w.queued, w.sizes, self.report, self.opt.on_result, pickle.loads
        fate, done = report.fate, report.done
        for answer in answers:
            pos = answer[0]
            if not queued or queued[0] != pos:
                raise AssertionError(f"worker answered {pos}, expected {list(queued)[:3]}")  # protocol bug
            queued.popleft()
            w.queued_bytes -= sizes.pop(pos, 0)
            if answer[1] == "err":
                self.fail(pos, "worker_error", answer[2], traceback=answer[3])
                continue
            try:
                result = loads(answer[2])
            except Exception as e:
                self.fail(pos, "worker_error", f"the result could not be unpickled in the parent: "
                                               f"{type(e).__name__}: {e}", error=e, retryable=False)
                continue
            try:
                if on_result is not None:
                    on_result(fate(pos).item, result)
            except Exception as e:
                self.fail(pos, "callback_error", f"on_result raised {type(e).__name__}: {e}", error=e)
                continue
            finally:
                del result  # drop the result now: memory must not grow with the task count
            done(pos)  # counted, not kept
            report.completed += 1
        if w.retiring and not w.queued:  # all its tasks answered: it exits in order, nothing is lost
            self.stop_later(w, asked=True)
            self.retired += 1  # counted, not a note each: a long run retires workers without end
        self.source.set_capacity(self.batch_size())

    def on_message(self, w: _Worker) -> None:
        try:
            messages = w.inbox.read()
        except Exception as e:  # noqa: BLE001  EOF, a failed read, a message that does not unpickle: the pipe is done
            self.on_death(w, pipe=e)
            return
        for msg in messages:
            if isinstance(msg, tuple) and msg[0] == "ready":
                w.ready = True
                w.baseline = self.witness.baseline(w.proc.pid)
            elif isinstance(msg, tuple) and msg[0] == "init_failed":  # ends the run: a replacement would fail alike
                failed = RunFailed(f"worker_error: {msg[1]} (in a new worker, before any task)", kind="worker_error",
                                   report=self.report)
                failed.__cause__ = RemoteTraceback(msg[2])
                raise failed
            else:
                self.on_answers(w, msg)

    def on_death(self, w: _Worker, pipe: BaseException | None = None) -> None:
        """A worker's exit fd said it is gone, or its pipe ended (``pipe``: EOF, a failed read, an unreadable
        message). A pipe that ends while its process lives and is not exiting is a fault in itself (a job closed
        the descriptors it inherited, a forked copy wrote into it): that worker is killed, and the fault is
        charged like a death, at once. Either way the fault goes to the item in play by the worker's phase."""
        state = _worker.read(w.slot)  # where it was; the slot outlives the process
        broke = None
        if w.proc.exitcode is None and not exiting(w.proc.pid):
            broke = (f"worker's pipe broke ({type(pipe).__name__}: {pipe})" if pipe is not None else
                     "worker's exit descriptor fired")
            w.proc.kill()
            reap(w.proc, JOIN_LIMIT)
        else:
            reap(w.proc, 1.0)  # the exit fd (or EOF) says it is going; this collects its exit code
        try:  # answers it sent before dying were delivered: take them first
            while not broke:
                for msg in w.inbox.read():  # never blocks: the writer is gone, so each read has data or EOF
                    if isinstance(msg, list):
                        self.on_answers(w, msg)
        except Exception:  # noqa: BLE001  the end of what it sent (EOF), or the rest is unreadable
            pass
        if not w.ready:
            self.retire(w)
            cause = ("its initializer killed it" if state.phase == _worker.INIT else
                     "can it import and unpickle the job? Its stderr says why")
            raise RunFailed(f"worker_died: a worker could not start ({broke or describe_exit(w.proc.exitcode)} while "
                            f"{_worker.phase_name(state.phase)}); "
                            f"{cause}.", kind="worker_died", exitcode=w.proc.exitcode, report=self.report)
        culprit = state.pos if state.pos is not None and state.pos in w.queued else None
        if culprit is None and (broke or w.proc.exitcode == _worker.EXIT_PIPE) and state.last in w.queued:
            culprit = state.last  # a pipe that failed after this task ran, before its answer came: that task's doing
        self.requeue_innocent(w, culprit)
        message = ((broke or describe_exit(w.proc.exitcode)) + f" while {_worker.phase_name(state.phase)}"
                   + ("; the process was alive: the supervisor killed it" if broke else ""))
        if (w.proc.exitcode == -signal.SIGKILL and self.limit is not None and self.limit.cgroup
                and self.limit.oom_killed(w.proc.pid)):
            peak = self.limit.peak_mib(w.proc.pid)
            message += (f": it exceeded its memory_limit of {self.opt.memory_limit / 2**20:.0f} MiB"
                        + (f" (peak {peak:.0f} MiB)" if peak is not None else "")
                        + "; the kernel OOM killer ended it in its own memory cgroup")
        elif w.proc.exitcode == -signal.SIGKILL and w.baseline is not None and not broke:
            message += ": " + self.witness.verdict(w.proc.pid, w.baseline)
        self.retire(w)
        self.charge(w, state.phase, culprit, "worker_died", message, w.proc.exitcode)  # raises when aborting
        self.replace(w, message)

    # -- the three steps after any fault of a worker (a death in on_death, a hang in check_deadlines) --
    def charge(self, w: _Worker, phase: int, culprit: int | None, kind: str, message: str,
               exitcode: int | None = None) -> None:
        """Charge a worker's fault: the tasks it held and was not running go back to the front, in their order;
        the item in play (``culprit``) fails or is retried (``fail``); with no item in play, the fault is noted
        and counted against DEATH_BUDGET (reset when a task is answered or an item fails for good): past it the
        run fails, since each replacement would only die the same way."""
        self.requeue_innocent(w, culprit)
        if culprit is not None:
            self.fail(culprit, kind, message, exitcode)
            return
        self.note(f"{kind} with no item in play", f"worker pid {w.proc.pid}, no item in play: {message}")
        self.deaths_in_a_row += 1
        if self.deaths_in_a_row > DEATH_BUDGET:
            raise RunFailed(f"worker_died: workers keep dying while {_worker.phase_name(phase)}: "
                            f"{self.deaths_in_a_row} in a row with no item in play and no task answered "
                            f"(DEATH_BUDGET {DEATH_BUDGET}); the last: {message}", kind="worker_died",
                            exitcode=exitcode, report=self.report)

    def replace(self, w: _Worker, why: str) -> None:
        """Start a worker in place of ``w`` (gone, or on its way out), unless a retiring one's is already running."""
        if not w.retiring:
            self.spawn()
        self.note("replacements", f"replaced worker pid {w.proc.pid} ({why})")

    def requeue_innocent(self, w: _Worker, culprit: int | None) -> None:
        """Tasks a dead or stopped worker held but was not running go back to the front, in their order."""
        innocent = [p for p in w.queued if p != culprit]
        self.retry.extendleft(reversed(innocent))
        w.queued.clear()
        w.queued_bytes = 0
        w.sizes.clear()

    def check_deadlines(self, now: float) -> None:
        if self.opt.timeout is not None and now >= self.clock.start + self.opt.timeout:
            running = sum(1 for w in self.workers if w.queued)
            raise RunFailed(f"timeout: the run exceeded its timeout of {self.opt.timeout} s "
                            f"({running} worker(s) busy, {self.in_flight()} item(s) unfinished)",
                            kind="timeout", report=self.report)
        if self.opt.task_timeout is None:
            return
        for w in list(self.workers):
            due = self.task_due(w)
            if due is None or now < due[1]:
                continue
            state, _ = due
            culprit = state.pos if state.pos is not None and state.pos in w.queued else None
            if culprit is not None:
                message = (f"task exceeded its task_timeout of {self.opt.task_timeout} s"
                           + (" while its result was being sent" if state.phase == _worker.SENDING else ""))
            else:
                message = (f"held {len(w.queued)} task(s) for task_timeout ({self.opt.task_timeout} s) without "
                           f"starting one, while {_worker.phase_name(state.phase)}: stopped, its tasks run elsewhere")
            self.charge(w, state.phase, culprit, "task_timeout", message)  # raises when aborting
            self.stop_later(w)
            self.replace(w, message)

    def task_due(self, w: _Worker) -> tuple[_worker.State, float] | None:
        """When ``w`` passes its task_timeout: its task's start (running it, or sending its result) plus the limit;
        a worker that holds tasks and runs none (stopped or stuck between them) from when it last moved on or
        was last sent a batch, since a healthy one starts its next queued task at once. None: nothing due."""
        if self.opt.task_timeout is None or not w.queued:
            return None
        state = _worker.read(w.slot)
        if state.pos is not None and state.pos in w.queued:
            return state, state.started + self.opt.task_timeout
        return state, max(state.started, w.sent_at) + self.opt.task_timeout

    def next_deadline(self, now: float) -> float | None:
        deadlines = [s.kill_at for s in self.stopping]
        if self.opt.timeout is not None:
            deadlines.append(self.clock.start + self.opt.timeout)
        for w in self.workers:
            due = self.task_due(w)
            if due is not None:
                deadlines.append(due[1])
        return min(deadlines) if deadlines else None

    # -- the loop --------------------------------------------------------------------------------
    def loop(self) -> None:
        for _ in range(self.opt.workers):
            self.spawn()
        self.source.start()
        while True:
            self.source.clear_wakeups()  # before taking items: a wake-up written after this is for new ones
            if self.source.error is not None:
                raise self.source.error  # the caller's own exception, unchanged
            self.dispatch()
            if self.source.idle_and_done and not self.retry and self.in_flight() == 0:
                break
            now = time.monotonic()
            deadline = self.next_deadline(now)
            timeout = None if deadline is None else max(0.0, deadline - now)
            by_fd: dict[Any, Any] = {self.source.wake_r: None}
            for w in self.workers:
                by_fd[w.conn] = w
                by_fd[w.exit_fd] = w
            for s in self.stopping:
                by_fd[s.fd] = s.proc
            ready, room = wait_for(list(by_fd), [w.conn for w in self.workers if w.out], timeout)
            # Messages first: a worker that sent its answers and then died still delivered them.
            for obj in ready:
                w = by_fd[obj]
                if isinstance(obj, Connection) and w in self.workers:
                    self.on_message(w)
            for obj in ready:
                w = by_fd[obj]
                if isinstance(w, _Worker) and not isinstance(obj, Connection) and w in self.workers:
                    self.on_death(w)
            for obj in room:  # then the bytes waiting for the workers still there
                w = by_fd[obj]
                if w in self.workers:
                    self.write(w)
            now = time.monotonic()
            self.reap_stopping(now, {obj for obj in ready if isinstance(obj, int)})
            self.check_deadlines(now)
        if self.failures:
            first = self.failures[0]
            error = RunFailed(f"{len(self.failures)} item(s) failed (on_error='continue'); first: {first}",
                              kind=first.kind, item=first.item, exitcode=first.exitcode, report=self.report)
            raise error from first.__cause__


def _check_options(o: Options) -> None:
    if o.on_error not in ("abort", "continue"):
        raise ValueError(f"{NAME}: on_error must be 'abort' or 'continue', got {o.on_error!r}")
    if isinstance(o.retries, bool) or not isinstance(o.retries, int) or o.retries < 0:
        raise ValueError(f"{NAME}: retries must be an int >= 0, got {o.retries!r}")
    if o.max_in_flight is not None and (isinstance(o.max_in_flight, bool) or not isinstance(o.max_in_flight, int)
                                        or o.max_in_flight < 1):
        raise ValueError(f"{NAME}: max_in_flight must be None or an int >= 1, got {o.max_in_flight!r}")
    if isinstance(o.grace, bool) or not isinstance(o.grace, int | float) or not math.isfinite(o.grace) \
            or o.grace < 0:
        raise ValueError(f"{NAME}: grace must be a finite number of seconds >= 0, got {o.grace!r}")
    for name, value in (("max_tasks_per_worker", o.max_tasks_per_worker), ("memory_limit", o.memory_limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{NAME}: {name} must be None or an int >= 1, got {value!r}")
    if o.initializer is not None and not callable(o.initializer):
        raise TypeError(f"{NAME}: initializer must be callable or None, got {o.initializer!r}")
    if not isinstance(o.initargs, tuple):
        raise TypeError(f"{NAME}: initargs must be a tuple, got {type(o.initargs).__name__}")
    try:  # workers receive them by pickle: fail here, clearly, not in a worker that never starts
        pickle.dumps((o.initializer, o.initargs))
    except Exception as e:
        raise TypeError(f"{NAME}: initializer and initargs must be picklable: {e}") from e


def run(job: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 4,
        on_result: Callable[[Any, Any], Any] | None = None, timeout: float | None = None,
        task_timeout: float | None = None, on_error: str = "abort", retries: int = 0,
        max_in_flight: int | None = None, grace: float = 1.0, initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (), max_tasks_per_worker: int | None = None,
        memory_limit: int | None = None) -> RunReport:
    """The contract's ``run()``, plus:

    - ``on_error``: "abort" (stop at the first fault, the article's semantics) or "continue" (record
      the failure, replace a dead or hung worker, go on; ``RunFailed`` at the end if anything failed).
    - ``retries``: how many times a failed item (worker error, death, task timeout) is run again.
    - ``max_in_flight``: at most this many items pulled from ``items`` and not yet finished. Default
      ``None``: two batches per worker, the batch sized from the measured task duration and item size
      (1 for large or slow items, up to 1,024 for tiny ones).
    - ``grace``: seconds between SIGTERM and SIGKILL when stopping workers (finite, >= 0).
    - ``initializer(*initargs)``: run once in each worker (and each replacement) before its first task,
      e.g. to open a database connection. If it raises, the run ends with a worker_error carrying its
      traceback; if it kills its worker, with worker_died: never a respawn loop.
    - ``max_tasks_per_worker``: a worker is replaced after this many tasks (its replacement starts while
      it runs its last ones, so no item waits and none fails).
    - ``memory_limit``: bytes per worker. Each worker gets a memory cgroup of its own where the machine
      allows it (crossing the limit: the kernel OOM-kills that worker only, reported with the limit and
      its peak), else an address-space limit (crossing it: MemoryError in the job). ``report.notes`` says
      which was in force. The cgroups are removed when the run ends, however it ends (unless this
      process itself is SIGKILLed).

    Every exception that leaves ``run()`` carries the report as ``.report``; ``report.remaining()``
    yields exactly what is left to do.
    """
    check_arguments(NAME, job, items, workers, on_result, timeout, task_timeout)
    options = Options(workers=workers, on_result=on_result, timeout=timeout, task_timeout=task_timeout,
                      on_error=on_error, retries=retries, max_in_flight=max_in_flight, grace=grace,
                      initializer=initializer, initargs=initargs, max_tasks_per_worker=max_tasks_per_worker,
                      memory_limit=memory_limit)
    _check_options(options)
    sup = _Supervisor(job, items, options)
    orderly = False
    try:
        sup.loop()
        orderly = True
    except BaseException as e:
        attach_report(e, sup.report)  # the items' own error and Ctrl-C carry it too
        raise
    finally:
        # One stop for every exit path: RunFailed, an exception from items or on_result, Ctrl-C.
        try:
            sup.stop_all(orderly)
        finally:
            sup.report.set_rest(sup.source.stop(sup.report.holds))
            sup.report.elapsed = sup.clock.elapsed()
            sup.finish_notes()
            if sup.retired:
                sup.report.notes.append(f"retired {sup.retired} worker(s) after max_tasks_per_worker="
                                        f"{options.max_tasks_per_worker} tasks each")
    return sup.report
