"""An error, a death or a passed deadline wakes the supervisor at once: it names the item and stops every worker for real.

Our recommended design. It owns its worker processes (``multiprocessing.Process``, spawn) instead of
driving an executor, because the two things a fault report needs are things an executor hides: which
item a dead worker was running, and when that item started. Start method: spawn, as every variant.

    In the main process (one thread: the supervisor loop)          |  worker processes (one pipe each)
                                                                   |
    items thread: next(items), a bounded distance ahead --> wake   |
    loop: take items, pickle each; per worker keep up to two       |
      batches queued --- [(pos, item bytes), ...] over its pipe ---+--> slot := receiving; for each:
      (a large item in a frame of its own; written as it has room) |
    wait(pipes + exit fds + items wake-up, timeout=nearest deadline)|       slot := running (pos, now)
      <- [(pos, "ok", result, s), (pos, "err", msg, traceback, s)] <-+--      job(item); pickle result
         on_result(item, result) in order; forget the item         |      slot := sending; answers sent
      <- "err":          worker_error, traceback as __cause__      |      when 5 ms old (a large result
      <- exit fd ready, or the pipe's EOF while the process lives: |      alone); slot := idle
           a fault (on_death): the item in play by the slot's      |  shared slot: the phase (_worker.
           phase is charged; tasks queued behind it run elsewhere  |  PHASES), its task and since when
      <- deadline:       timeout / task_timeout (check_deadlines)  |  its own process group, kept by a
    charge (item, or DEATH_BUDGET), replace, stop_later: one path  |  stopped shell (_keep_group); dies
    fault: stop reading items; SIGTERM, SIGKILL after grace        |  with the parent: PR_SET_PDEATHSIG +
      (the workers, their process groups, what their jobs started);|  a thread on the parent's sentinel
      join; raise RunFailed (report: what is left)                 |

Rules it keeps (each one is a test in tests/test_supervisor_rules.py or an experiment):
1. Nothing polls: every fault is an event on a pipe (its EOF or a failed read, also while the process
   lives), a process's exit fd (a pidfd), or the wait's own timeout set to the nearest deadline, so
   detection costs one wake-up. Reading ``items`` happens off the loop, so a slow source delays no detection.
2. The item in play is never ambiguous: each worker writes its phase (``_worker.PHASES``: starting,
   initializer, idle, receiving, running, sending, exiting), the task it concerns and since when into shared
   memory before each step, so a death, hang or broken pipe is charged to exactly that task (the one whose
   answer was being sent included), its task timeout counts from its real start, and the tasks queued behind
   it are run again elsewhere, not failed. A fault with no item in play (idle, receiving, exiting) is counted
   against ``_core.DEATH_BUDGET``: workers that keep dying there fail the run, never a respawn loop.
3. Memory is in proportion to what is unfinished: items in flight (adaptive, ``max_in_flight`` at most; a large
   ``bytes`` item is written to its worker as it is, not copied) and one batch of answers (under
   ``_worker.FLUSH_BYTES`` of results, plus the one that crossed it; per worker, the buffer its last large result
   was read into is kept for the next, at most twice the size of the one it holds (``_worker.fit``) and only up to
   ``_inbox.SPARE_MAX``); a
   finished item is counted, not kept, and a result is dropped once ``on_result`` returned. So is the
   report: a note that repeats (a replacement, a retry) is kept ``_core.NOTES_PER_KIND`` times, then counted.
4. Every wait has a limit and every exit path runs the same stop, which always reaches SIGKILL: no
   process outlives ``run()``, whatever raised (the job, ``on_result``, ``items``, Ctrl-C). That includes
   the processes a job started (a tool through ``subprocess``, a pool of its own): each worker leads a
   process group, which is SIGKILLed with it on every path, also after a worker died by itself; and when
   the main process is SIGKILLed, the group's keeper (a stopped shell the kernel continues once the group is
   orphaned) SIGKILLs it. Not covered: a process that left its worker's session (``setsid``, as a daemon
   does) after the main process's SIGKILL (``memory_limit``'s cgroups go with the main process). The items
   thread exits with the run too, except while inside a ``next(items)`` call that blocks (Python cannot
   interrupt one): it exits when that call returns.
5. What is left is exact and reachable: ``e.report.remaining()`` on any exception that leaves ``run()``
   yields the unfinished items, then the items never pulled, so a resume runs each item once. A Ctrl-C
   lands between any two bytecodes: wherever it lands, an item is in the report or still in the source.
   The one item it can list twice over is one whose ``on_result`` it interrupted after that saved: save
   idempotently (``INSERT OR REPLACE``) and a resume stays exact.
6. A worker's failure carries its cause: the job's traceback as ``__cause__``, a pickling fault with the
   original exception, a death with its signal and the kernel's OOM evidence for that worker.
7. No worker waits for a round trip: while it runs one batch the next is already queued on its pipe, so
   once the workers are up, short tasks that wait (I/O, a sleep) run at the rate of tasks x duration /
   workers (bench/throughput.py measures how close: ``mid`` against ``mid_ideal_nap``, in
   results/raw/throughput.json). Tasks that need the CPU run at the rate the cores allow.
"""

# The code is in _core.py (what the main process runs) and _worker.py (what each worker runs). This file
# only hands out _core's names on first use (PEP 562), because every spawned worker imports this package on
# its way to _worker: importing _core there too (with contract.py, dataclasses and typing) cost each worker
# about 35 ms of start-up for code it never runs (python -X importtime; a 1-task run on 2 workers took
# 0.107 s against ProcessPoolExecutor's 0.075 s). tests/test_supervisor_rules.py checks what a worker imports.
import importlib

__all__ = ["NAME", "Options", "RunFailed", "RunReport", "Source", "run"]


def __getattr__(name: str) -> object:
    """``run``, ``Options`` and the rest of _core's names, importing _core the first time one is asked for."""
    missing = AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name.startswith("__"):  # a dunder lookup (pickle's, copy's, a worker's unpickling) must not import _core
        raise missing
    try:
        return getattr(importlib.import_module(f"{__name__}._core"), name)
    except AttributeError:
        raise missing from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(dir(importlib.import_module(f"{__name__}._core"))))
