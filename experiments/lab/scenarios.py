"""Every fault scenario, defined once: experiments assert on them, bench/run.py sweeps them.

A scenario is a function ``(workers, n) -> Scenario``: the keyword arguments for
``harness.run_scenario`` plus the item that is the culprit (``None`` where no item is). ``n`` is the
payload (ints per result); ``workers`` the pool size. The comments say what each one provokes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .jobs import ARTICLE_N, EVERY

SMALL_N = 10_000  # payload when the payload is not the point: keeps the suite fast and light (and dask,
# whose protocol serializes a list result element by element, from measuring only that: ~2 s per 100,000 ints)
# Watchdogs: how long a run may take before it counts as "never comes back". Short scenarios last ~1.5 s
# when healthy, so 5 s is over 3x that. Timeout scenarios have a 2-3 s limit; the slowest design that
# does fire (the article's monitor) fires at its 5 s poll, plus up to 3 s for pebble's stop: 9 s.
SHORT_WATCHDOG = 5.0
# An item the parent cannot pickle fails at submit, before any worker is up: a design that runs its submitted tasks
# before raising also waits for its workers' spawn start-up (2.6-2.7 s in all for as_completed and the article's
# design, on 3.12 beside the other xdist worker; CI has measured ~1 s more start-up than here). 3 s more watchdog
# for that scenario keeps "slow" from reading as "hung".
PARENT_FAULT_WATCHDOG = SHORT_WATCHDOG + 3.0
TIMEOUT_WATCHDOG = 9.0
# A design whose shutdown(wait=True) runs every queued task before run() raises (as_completed, ProcessPoolExecutor's
# with-block) is slow there, not hung: the watchdog must outlast that drain, or a run that would raise is published
# as a hang (issue 26; as_completed's "HANGS" at the run timeout until the harness asked for evidence of a hang).
# The run timeout's 10 x workers tasks of 2 s: 20 s on any worker count, plus start-up and 2 s of its own.
DRAIN_WATCHDOG = 25.0
# 20,000 tiny tasks, one of which never returns: the article's design drains the 19,999 others at its ~0.9 ms per
# task (~18 s; the overhead sweep's figure) before it waits for ever on the hung one, and only an idle wait is a
# proven hang. 40 s is twice its drain (the suite runs it beside two other xdist workers), plus the harness's own
# OVERTIME when the machine is slower still.
TINY_TASKS_WATCHDOG = 40.0


@dataclass(frozen=True)
class Scenario:
    name: str
    kwargs: dict[str, Any]
    fault_item: Any = None
    title: str = ""
    needs: tuple[str, ...] = field(default_factory=tuple)  # "oom": a writable memory cgroup


def _s(name: str, workers: int, title: str, fault_item: Any = None, needs: tuple[str, ...] = (),
       **kwargs: Any) -> Scenario:
    kwargs["run_kwargs"] = {"workers": workers, **kwargs.get("run_kwargs", {})}
    return Scenario(name, kwargs, fault_item, title, needs)


def worker_raises(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # One failing item early among long (1 s) tasks: the healthy run lasts 7 s at 4 workers, longer
    # than the article's 5 s poll, so "when is it noticed" has an answer for every design.
    return _s("worker_raises", workers, "a worker raises (one item among long tasks)", fault_item=1,
              job={"type": "RaiseAt", "at": 1, "n": n, "delay": 1.0}, items=7 * workers, watchdog=25)


def worker_raises_every(workers: int = 4, n: int = ARTICLE_N) -> Scenario:
    # The article's first transcript: print(hoge) in every task, 100 tasks.
    return _s("worker_raises_every", workers, "every worker raises (the article's print(hoge))", fault_item=0,
              job={"type": "RaiseAt", "at": EVERY, "n": n}, items=100, watchdog=25)


def worker_killed(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # The article's "kill the worker's PID from another shell": the harness SIGKILLs the worker busy on item 2.
    return _s("worker_killed", workers, "a worker is SIGKILLed from outside", fault_item=2,
              job={"type": "Workload", "n": n, "delay": 0.5}, items=3 * workers, kill_worker_on_item=2,
              watchdog=SHORT_WATCHDOG)


# How a worker dies by itself, in words (the job classes of experiments/lab/jobs.py that do it).
CRASH_WORDS = {"KillSelfAt": "SIGKILL (as the OOM killer sends)", "SegfaultAt": "segfault (a crash in C code)",
               "ExitAt": "os._exit(1) (a library that exits)"}


def worker_crash(kind: str) -> Callable[..., Scenario]:
    """A worker dies by itself: "KillSelfAt" (SIGKILL), "SegfaultAt" (SIGSEGV) or "ExitAt" (os._exit(1))."""
    def make(workers: int = 4, n: int = SMALL_N) -> Scenario:
        return _s(f"worker_crash_{kind}", workers, f"a worker dies by itself: {CRASH_WORDS[kind]}", fault_item=2,
                  job={"type": kind, "at": 2, "n": n, "delay": 0.5}, items=3 * workers,
                  watchdog=SHORT_WATCHDOG, repeated_death=True)
    return make


def worker_oom(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # A real kernel OOM kill: the job moves its worker into a 64 MiB memory cgroup and allocates.
    return _s("worker_oom", workers, "a worker is OOM-killed by the kernel", fault_item=2, needs=("oom",),
              job={"type": "OomAt", "at": 2, "n": n, "delay": 0.5, "limit_mb": 64}, items=3 * workers,
              watchdog=SHORT_WATCHDOG, repeated_death=True)


def callback_raises(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # on_result (the "save to the database" callback) raises on item 3, like the article's print(piyo).
    return _s("callback_raises", workers, "the result callback raises", fault_item=3,
              job={"type": "Workload", "n": n, "delay": 0.3}, items=4 * workers,
              on_result={"raise_at": 3}, watchdog=SHORT_WATCHDOG)


def run_timeout(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # The article's timeout scenario, shortened: every task sleeps 2 s, the whole run may take 3 s.
    return _s("run_timeout", workers, "the whole run exceeds its timeout",
              job={"type": "SleepAt", "at": EVERY, "seconds": 2.0, "n": n}, items=10 * workers,
              run_kwargs={"timeout": 3.0}, fault_clock="deadline", watchdog=DRAIN_WATCHDOG)


def hang_with_timeout(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # One task never returns; the whole run has a 3 s limit; every other task is short.
    return _s("hang_with_timeout", workers, "a worker hangs; the run has a timeout", fault_item=1,
              job={"type": "HangAt", "at": 1, "n": n, "delay": 0.1}, items=4 * workers,
              run_kwargs={"timeout": 3.0}, fault_clock="deadline", watchdog=TIMEOUT_WATCHDOG)


def hang_no_timeout(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # One task never returns and nothing has a limit: no design can tell a hang from slow work.
    return _s("hang_no_timeout", workers, "a worker hangs; no timeout at all", fault_item=1,
              job={"type": "HangAt", "at": 1, "n": n, "delay": 0.1}, items=4 * workers, watchdog=4)


def task_timeout(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # One task never returns; each task may take 1 s (task_timeout), counted from its start.
    return _s("task_timeout", workers, "a worker hangs; per-task timeout 1 s", fault_item=1,
              job={"type": "HangAt", "at": 1, "n": n, "delay": 0.1}, items=4 * workers,
              run_kwargs={"task_timeout": 1.0}, fault_clock="task_deadline", watchdog=8)


def hang_in_child_process(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # The job at item 1 waits on a command it started (a tool that never answers); the run has a 3 s limit.
    # Stopping the worker is not enough: the command lives on unless the design stops it too.
    return _s("hang_in_child_process", workers, "a job waits on a child process that hangs; the run has a timeout",
              fault_item=1, job={"type": "HangInChildAt", "at": 1, "n": n, "delay": 0.1}, items=4 * workers,
              run_kwargs={"timeout": 3.0}, fault_clock="deadline", watchdog=TIMEOUT_WATCHDOG)


def hang_ignoring_sigterm(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # One task hangs with SIGTERM ignored; the whole run has a 3 s limit. Can the design stop it?
    return _s("hang_ignoring_sigterm", workers, "a worker hangs ignoring SIGTERM; the run has a timeout", fault_item=1,
              job={"type": "HangIgnoringTermAt", "at": 1, "n": n, "delay": 0.1}, items=4 * workers,
              run_kwargs={"timeout": 3.0}, fault_clock="deadline", watchdog=TIMEOUT_WATCHDOG)


# Where the items iterator raises in main_raises: the index after the first 2 x 4 items a bounded design pulls
# ahead (4 workers), so it comes once one result is in. It was 10 (three results in): Dask, whose run timeout
# counts from its cluster's start, did not get those three within 4 s on a slower machine, then not within
# 8 s in CI on 3.12 beside the other xdist worker (246a628+: its timeout fired instead).
MAIN_RAISES_AT = 8


def main_raises(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # The items iterator raises at MAIN_RAISES_AT (an exception in the main process) mid-run; the run has
    # an 8 s timeout, as the article always has one. Does run() propagate at once, and does it linger?
    # The timeout must not come first (see MAIN_RAISES_AT). The article's monitor exits at its 10 s poll.
    return _s("main_raises", workers, "the main process raises (items iterator)",
              job={"type": "Workload", "n": n, "delay": 0.5}, items=10 * workers, items_raise_at=MAIN_RAISES_AT,
              run_kwargs={"timeout": 8.0}, watchdog=20)


def main_killed(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # SIGKILL the main process once 4 tasks have started; watch its processes for 3 s.
    return _s("main_killed", workers, "the main process is SIGKILLed",
              job={"type": "Workload", "n": n, "delay": 1.0}, items=10 * workers,
              kill_runner_after_starts=workers, orphan_watch=3.0, watchdog=15)


def ctrl_c(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # Ctrl-C: SIGINT to the whole foreground process group once 4 tasks have started (6 s of work).
    return _s("ctrl_c", workers, "Ctrl-C (SIGINT to the process group)",
              job={"type": "Workload", "n": n, "delay": 1.0}, items=6 * workers,
              sigint_after_starts=workers, watchdog=8)


def many_tiny_tasks(workers: int = 4, n: int = 1) -> Scenario:
    # 20,000 tiny tasks, a 2 s run timeout and one task (item 50) that never returns: the monitor's
    # walk over _pending_work_items happens while the executor is busiest.
    return _s("many_tiny_tasks", workers, "20,000 tiny tasks, one never returns, 2 s timeout", fault_item=50,
              job={"type": "HangAt", "at": 50, "n": n}, items=20_000, run_kwargs={"timeout": 2.0},
              fault_clock="deadline", watchdog=TINY_TASKS_WATCHDOG)


# Serialization faults (CPython's test_deadlock.py, one per phase): what crosses the pipe can fail to
# pickle or unpickle on either side, or kill the process doing it. Item 2 among 3 x workers items.
SERIALIZATION = {
    "item_unpicklable_in_parent": ("an item cannot be pickled by the parent", {"special": "ErrorAtPickle"}, None),
    "item_unpicklable_in_worker": ("an item cannot be unpickled by the worker", {"special": "ErrorAtUnpickle"}, None),
    "item_unpickling_kills_worker": ("unpickling an item kills the worker", {"special": "CrashAtUnpickle"}, None),
    "result_unpicklable_in_worker": ("a result cannot be pickled by the worker", None,
                                     {"type": "ReturnsAt", "returns": "ErrorAtPickle"}),
    "result_pickling_kills_worker": ("pickling a result kills the worker", None,
                                     {"type": "ReturnsAt", "returns": "CrashAtPickle"}),
    "result_unpicklable_in_parent": ("a result cannot be unpickled by the parent", None,
                                     {"type": "ReturnsAt", "returns": "ErrorAtUnpickle"}),
    "exception_unpicklable": ("a worker raises an exception that cannot be pickled", None,
                              {"type": "RaiseUnpicklableAt"}),
}


def serialization(name: str) -> Callable[..., Scenario]:
    title, items_spec, job = SERIALIZATION[name]

    def make(workers: int = 4, n: int = SMALL_N) -> Scenario:
        return _s(name, workers, title, fault_item=2,
                  job={"type": "Workload", "n": n, "delay": 0.3, **(job or {}), "at": 2},
                  items=3 * workers, items_spec={"special_at": 2, **items_spec} if items_spec else None,
                  watchdog=PARENT_FAULT_WATCHDOG if name == "item_unpicklable_in_parent" else SHORT_WATCHDOG)
    return make


# Seconds each item takes to come in blocking_source, from index `workers` on. Longer than the workers' spawn
# start-up on a slow machine (~2 s seen): with a 2 s block, a kill at item 1's start once landed just as the
# source yielded, and a design that waits for the source looked prompt (29 ms).
SOURCE_BLOCK = 3.0


def blocking_source(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # The items come from a slow source (a paginated API: SOURCE_BLOCK s per item after the first `workers`), and
    # meanwhile the worker busy on item 1 is SIGKILLed from outside. Noticed at once, or when the
    # source next yields? The kill waits for the source's own cue that it has begun to block: without it, a
    # loaded machine once let the kill land before (CI on 3.12: callback_monitor's next submit raised 117 ms later).
    return _s("blocking_source", workers, "a worker is SIGKILLed while the items source blocks", fault_item=1,
              job={"type": "Workload", "n": n, "delay": 0.5}, items=workers + 2, kill_worker_on_item=1,
              kill_cue="source_blocks",
              items_spec={"slow_from": workers, "slow_seconds": SOURCE_BLOCK}, watchdog=12)


# Seconds between SIGTERM and SIGKILL in hung_workers_continue: each hung worker ignores SIGTERM, so this is
# the least any design that stops it in order can take after the deadline.
HUNG_GRACE = 1.0


def hung_workers_continue(workers: int = 4, n: int = 10) -> Scenario:
    # The supervisor alone (on_error="continue" is its option): every task hangs ignoring SIGTERM, so each
    # worker is hung in turn (task_timeout 0.5 s: replaced, its item failed) and all of them are hung when the
    # run's 2.5 s timeout passes. A loop that waited out each hung worker's grace in turn would raise workers x
    # grace late; one that signals them together and waits on their sentinels, grace plus a wake-up late.
    # Not in SCENARIOS: a design without continue mode has no answer to measure.
    return _s("hung_workers_continue", workers,
              f"every worker hangs ignoring SIGTERM; continue mode; the run has a timeout (grace {HUNG_GRACE:g} s)",
              job={"type": "HangIgnoringTermAt", "at": EVERY, "n": n}, items=10 * workers,
              run_kwargs={"on_error": "continue", "task_timeout": 0.5, "grace": HUNG_GRACE, "timeout": 2.5},
              fault_clock="deadline", watchdog=30)


# The per-worker memory limit of memory_limit_overrun, and what its job allocates (twice the limit).
MEMORY_LIMIT_MIB = 200


# A polled limit (Dask's nanny reads its worker's RSS every 100 ms) sees an allocation only while it is held:
# without a hold, the 400 MiB stayed above the limit for two or three polls here, and in CI on 3.12, with the
# other core busy, one of the four attempts went unseen and the run returned. A second is ten polls: every
# attempt is seen, so the row shows the limit, not the poll's luck (the kernel's cgroup limit needs no hold).
ALLOCATION_HOLD = 1.0


def memory_limit_overrun(workers: int = 4, n: int = 1000) -> Scenario:
    # A response too large to trust: the job at item 3 allocates twice the per-worker limit while the other
    # tasks run, and holds it ALLOCATION_HOLD s, as a response is held while it is processed. Each design gets
    # its own equivalent of run(memory_limit=) (the supervisor's cgroup per worker, billiard's
    # max_memory_per_child, Dask's nanny); a design with none raises NotImplementedError.
    return _s("memory_limit_overrun", workers, f"a job allocates past a {MEMORY_LIMIT_MIB} MiB per-worker memory limit",
              fault_item=3, needs=("oom",), job={"type": "AllocateAt", "at": 3, "mb": 2 * MEMORY_LIMIT_MIB, "n": n,
                                                  "delay": 0.2, "hold": ALLOCATION_HOLD},
              items=16, run_kwargs={"memory_limit": MEMORY_LIMIT_MIB << 20}, watchdog=30, repeated_death=True)


# Faults at the other moments of a worker's life (_worker.PHASES: starting, receiving, running, sending, idle,
# exiting): the running phase is the scenarios above; these strike while it answers, while its pipe is gone,
# when its job starts processes of its own, and between tasks.
def killed_while_sending(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # Item 2 returns 32 MiB; the worker is SIGKILLed once 1 MiB of that answer has been written (jobs.KillWhileSendingAt).
    return _s("killed_while_sending", workers, "a worker is SIGKILLed while it sends a large result", fault_item=2,
              job={"type": "KillWhileSendingAt", "at": 2, "n": n, "delay": 0.3}, items=3 * workers,
              watchdog=SHORT_WATCHDOG, repeated_death=True)


def pipe_closed_while_alive(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # Item 2's job closes every inherited file descriptor (a daemonizing library) and finishes normally.
    return _s("pipe_closed_while_alive", workers, "a job closes the worker's pipe; the process lives on", fault_item=2,
              job={"type": "CloseFdsAt", "at": 2, "n": n, "delay": 0.3}, items=3 * workers,
              watchdog=SHORT_WATCHDOG, repeated_death=True)


def job_uses_process_pool(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # Item 1's job runs a ProcessPoolExecutor(1) of its own (joblib, a numeric library): allowed, or refused?
    return _s("job_uses_process_pool", workers, "a job starts a process pool of its own", fault_item=1,
              job={"type": "InnerPoolAt", "at": 1, "n": n, "delay": 0.1}, items=2 * workers,
              watchdog=SHORT_WATCHDOG + 3.0)


def helper_outlives_job(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # Item 1's job starts `sleep 3600` and returns; the run succeeds. Is the helper left running after run()?
    return _s("helper_outlives_job", workers, "a job starts a helper process and returns; the run succeeds",
              job={"type": "LeaveHelperAt", "at": 1, "n": n, "delay": 0.1}, items=2 * workers,
              watchdog=SHORT_WATCHDOG)


def worker_dies_idle(workers: int = 4, n: int = SMALL_N) -> Scenario:
    # As many items as workers: item 0 returns at once, and its worker is SIGKILLed once 0.5 s have passed and it has
    # been idle for 50 ms, while the other items take 1.5 s each. A design that queues ahead may have given that
    # worker a second item (the supervisor does, to its first workers up): 3 s of tasks in a row then, so the
    # watchdog is longer than SHORT_WATCHDOG. No item is in play: does the run finish, is the death reported?
    return _s("worker_dies_idle", workers, "a worker dies while idle (a background thread crashes it)",
              job={"type": "DieIdleAt", "at": 0, "n": n, "delay": 1.5, "after": 0.5}, items=workers,
              watchdog=SHORT_WATCHDOG + 3.0)


# The rows of the fault matrix among them. Not worker_dies_idle: whether a peer's worker is idle when the thread
# fires depends on how that design spread the other items (a pool that queued one more task on it loses a task
# instead), so its cell would measure the scheduling, not the idle death; it is the supervisor's experiment.
PHASE_SCENARIOS = {f.__name__: f for f in (killed_while_sending, pipe_closed_while_alive, job_uses_process_pool,
                                           helper_outlives_job)}


SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "worker_raises": worker_raises,
    "worker_raises_every": worker_raises_every,
    "worker_killed": worker_killed,
    "worker_crash_KillSelfAt": worker_crash("KillSelfAt"),
    "worker_crash_SegfaultAt": worker_crash("SegfaultAt"),
    "worker_crash_ExitAt": worker_crash("ExitAt"),
    "worker_oom": worker_oom,
    "callback_raises": callback_raises,
    "run_timeout": run_timeout,
    "hang_with_timeout": hang_with_timeout,
    "hang_no_timeout": hang_no_timeout,
    "task_timeout": task_timeout,
    "hang_ignoring_sigterm": hang_ignoring_sigterm,
    "hang_in_child_process": hang_in_child_process,
    "main_raises": main_raises,
    "main_killed": main_killed,
    "ctrl_c": ctrl_c,
    "many_tiny_tasks": many_tiny_tasks,
    "blocking_source": blocking_source,
    "memory_limit_overrun": memory_limit_overrun,
    **{name: serialization(name) for name in SERIALIZATION},
    **PHASE_SCENARIOS,
}
