"""A dead worker's own task fails with WorkerLostError naming the signal, but only after a deliberate wait (10 s by default).

``billiard.pool.Pool`` (Celery's fork of multiprocessing.Pool, spawn context), ``apply_async`` per item with
billiard's two per-task limits, driven by the bounded-submission loop in ``variants._bounded``.
``apply_async`` returns an ``ApplyResult``; its callbacks settle a Future (``variants._as_future``).

    In the main process                                   |  billiard worker processes
                                                          |
    bounded loop: apply_async(job, item, soft, hard) -----+--> ACK(job, pid), then job(item)
      wait(futures, FIRST_COMPLETED, deadline)            |
    billiard's threads:                                   |
      Supervisor (every 0.8 s): a worker exited -> the job it ACKed is "lost"; after
                   lost_worker_timeout -> WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: N.")
      TimeoutHandler (every 1 s): soft limit -> SIGUSR1 (SoftTimeLimitExceeded inside the job);
                   hard limit -> TimeLimitExceeded on the task, SIGTERM, 0.1 s, SIGKILL
    fault: pool.terminate(): SIGTERM every worker (each sleeps 1 s on its way out), join without a limit,
           then wait up to 5 s more for tasks still queued (its result handler's shutdown loop);
           this variant SIGTERMs, once more, any worker still alive 1 s in (see ``terminate`` below)

The wait before WorkerLostError is lost_worker_timeout: billiard's default is 10 s, this variant passes 1 s
(LOST_WORKER_TIMEOUT below). No PDEATHSIG (billiard.util.set_pdeathsig exists; the pool never calls it), yet
workers leave with a SIGKILLed parent: they read EOF on the task pipe once their task is done.

Fixed by: ``variants.supervisor``.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ._as_future import settled_by_callbacks
from ._bounded import Classified, drive
from .contract import RunReport, check_arguments

NAME = "billiard_pool"
# How long billiard waits, after a worker's death, for a result the worker may have sent just before
# dying, before it fails the worker's task with WorkerLostError. billiard's default is 10 s (Celery's
# worker_lost_wait); 1 s is ample for a result already in a local pipe, and keeps the death visible
# within the experiments' watchdogs. experiments/test_peer_libraries.py
# (test_billiard_default_lost_worker_wait_is_ten_seconds_and_names_the_signal) measures the 10 s default.
LOST_WORKER_TIMEOUT = 1.0
# The hard limit's margin over the soft one: the job gets SoftTimeLimitExceeded at task_timeout (it may
# clean up); if it is still running this much later (stuck in C, or it swallowed the exception), billiard
# SIGTERMs then SIGKILLs the worker.
HARD_AFTER_SOFT = 1.0
STATUS = re.compile(r"Worker exited prematurely: (?:signal (\d+)|exitcode (\d+))")
# billiard's terminate() SIGTERMs the workers by iterating the pool's list of workers while its result
# thread deletes exited workers from that same list (Pool._join_exited_workers, `del self._pool[i]`). When
# a deletion lands mid-loop, the next worker is skipped: it is never signalled, and terminate() then waits
# for it without a limit (its result handler loops until every worker has exited). Seen twice in CI (the
# stack: main thread in _terminate_pool -> result_handler.stop(), result thread in finish_at_shutdown; three
# workers "exited with signal 15", the fourth alive) and reproduced on 2 cores under load. The variant does
# what billiard's loop means to do: RESEND_AFTER seconds into terminate(), every worker still in the list gets
# SIGTERM once more. A worker already on its way out dies at once (billiard's handler reset SIGTERM to its
# default); one that ignores SIGTERM is still waited for forever, as billiard does (the hang rows).
RESEND_AFTER = 1.0
# billiard can lose a task forever. Its Supervisor thread, finding a worker exited, marks lost only the jobs
# whose ACK (sent by the worker as it takes the job) its result thread has already read; it never looks at
# that worker again. When the worker dies right after its ACK (a job that segfaults or exits on its first
# line) and the Supervisor's pass lands before the result thread reads the ACK, the ACK is read later,
# names a worker already cleaned up, and the job stays pending: run() waits forever (Pool._join_exited_workers,
# billiard 4.3.2). Seen once in CI on 3.11 (SegfaultAt). The variant does not repair it (a user of billiard gets
# the hang), it says so: every LOST_ACK_CHECK seconds it looks for a pending job ACKed by a worker that is no
# longer in the pool and not marked lost, and when one is seen on two checks in a row (the Supervisor removes
# a worker and marks its jobs in one pass, milliseconds apart) it writes LOST_ACK to stderr, once.
LOST_ACK_CHECK = 0.5
LOST_ACK = "billiard lost a task: its worker died right after taking it"


def unwrap(einfo: Any) -> BaseException:
    """billiard hands its error callback an ExceptionInfo; raise the job's exception with its traceback."""
    from billiard.einfo import ExceptionWithTraceback

    exc = einfo.exception
    # Exceptions raised in the parent (WorkerLostError, TimeLimitExceeded) stay wrapped; those from a
    # worker were unwrapped by unpickling, with the worker's traceback as __cause__.
    return exc.exc if isinstance(exc, ExceptionWithTraceback) else exc


def classify(e: BaseException) -> Classified:
    from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError

    if isinstance(e, WorkerLostError):
        m = STATUS.search(str(e))
        code = None if m is None else -int(m.group(1)) if m.group(1) else int(m.group(2))
        return "worker_died", code, True  # the job the dead worker had ACKed
    if isinstance(e, SoftTimeLimitExceeded | TimeLimitExceeded):
        return "task_timeout", None, True
    return "worker_error", None, True


def terminate(pool: Any) -> None:
    """``pool.terminate()``, with the workers its own loop may skip SIGTERMed once more (see RESEND_AFTER)."""
    finished = threading.Event()

    def resend() -> None:
        if finished.wait(RESEND_AFTER):
            return
        for worker in list(pool._pool):  # a copy: billiard's result thread edits the list
            if worker.pid is not None:
                try:
                    os.kill(worker.pid, signal.SIGTERM)
                except ProcessLookupError:  # exited and reaped meanwhile
                    pass

    thread = threading.Thread(target=resend, name="billiard-resend-sigterm", daemon=True)
    thread.start()
    try:
        pool.terminate()
    finally:
        finished.set()
        thread.join(RESEND_AFTER)  # it only sends signals: returns at once once `finished` is set


def lost_acks(pool: Any) -> set[int]:
    """Job ids billiard will never settle: ACKed by a worker already removed from the pool, not marked lost."""
    alive = {w.pid for w in list(pool._pool)}
    return {job._job for job in list(pool._cache.values())
            if getattr(job, "_worker_pid", None) not in (None, *alive)
            and getattr(job, "_worker_lost", None) is None and not job.ready()}


def watch_lost_acks(pool: Any, done: threading.Event) -> None:
    """Write LOST_ACK to stderr once when a job stays in the ``lost_acks`` state over two checks."""
    seen: set[int] = set()
    while not done.wait(LOST_ACK_CHECK):
        now = lost_acks(pool)
        if now & seen:
            jobs = ", ".join(f"job {j}" for j in sorted(now & seen))
            print(f"{NAME}: {LOST_ACK} ({jobs}); billiard waits for it forever", file=sys.stderr, flush=True)
            return
        seen = now


def run(job: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 4,
        on_result: Callable[[Any, Any], Any] | None = None, timeout: float | None = None,
        task_timeout: float | None = None, max_in_flight: int | None = None,
        lost_worker_timeout: float | None = LOST_WORKER_TIMEOUT, initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (), max_tasks_per_worker: int | None = None,
        memory_limit: int | None = None) -> RunReport:
    """The contract's ``run()``, plus:

    - ``lost_worker_timeout``: seconds billiard waits after a worker's death before WorkerLostError
      (``None``: billiard's own default, 10 s).
    - ``initializer(*initargs)``: ``Pool(initializer=, initargs=)``, run in every worker it starts. One
      that raises kills its worker and billiard starts another, forever: its restart-frequency guard is
      off unless ``max_restarts`` is given (and when it trips, billiard SIGTERMs the calling process).
    - ``max_tasks_per_worker``: ``Pool(maxtasksperchild=)``.
    - ``memory_limit`` (bytes): ``Pool(max_memory_per_child=)``, in KiB. Not a limit on a running task:
      after each task the worker compares its *peak* RSS (``getrusage().ru_maxrss``, what billiard calls
      ``mem_rss``) with it and, past it, exits to be replaced. The task that crossed it finishes normally.
    """
    check_arguments(NAME, job, items, workers, on_result, timeout, task_timeout)
    if memory_limit is not None and (isinstance(memory_limit, bool) or not isinstance(memory_limit, int)
                                     or memory_limit < 1):
        raise ValueError(f"{NAME}: memory_limit must be None or an int >= 1 (bytes), got {memory_limit!r}")
    import billiard
    from billiard.pool import Pool

    # The limits go on the Pool, not on apply_async: billiard starts its timeout thread only for a pool
    # created with a limit (or enable_timeouts=True); per-call limits on any other pool are silently ignored.
    pool = Pool(processes=workers, context=billiard.get_context("spawn"), soft_timeout=task_timeout,
                timeout=None if task_timeout is None else task_timeout + HARD_AFTER_SOFT,
                lost_worker_timeout=lost_worker_timeout, initializer=initializer, initargs=initargs,
                maxtasksperchild=max_tasks_per_worker,
                max_memory_per_child=None if memory_limit is None else max(1, memory_limit // 1024))

    def submit(item: Any) -> Any:
        future, callback, error_callback = settled_by_callbacks(unwrap)
        pool.apply_async(job, (item,), callback=callback, error_callback=error_callback)
        return future

    def close() -> None:
        pool.close()
        pool.join()

    def stop() -> None:
        done.set()  # terminate() removes workers whose jobs stay pending: not the race the watch looks for
        terminate(pool)

    done = threading.Event()
    watch = threading.Thread(target=watch_lost_acks, args=(pool, done), name="billiard-lost-ack-watch", daemon=True)
    watch.start()
    try:
        return drive(NAME, submit, items, on_result, timeout, max_in_flight or 2 * workers, classify,
                     stop=stop, close=close)
    finally:
        done.set()
        watch.join(LOST_ACK_CHECK)  # wakes at once on `done`
