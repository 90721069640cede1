"""Workers with a lifecycle: a memory limit per worker, recycling after N tasks, and per-worker set-up.

The article's real enemy is the kernel OOM killer, which picks its victim by size across a whole memory
cgroup (or machine): a worker, the parent, or a bystander. With ``memory_limit`` the supervisor gives each
worker a memory cgroup of its own, so crossing the limit ends only that worker, and it says so.

Every design runs the same experiments with its own equivalent of the supervisor's options (each variant's
``run()`` docstring says which: Pool's ``maxtasksperchild``, pebble's ``max_tasks``, billiard's
``max_memory_per_child``, Dask's nanny, ...). A design without one raises NotImplementedError naming itself
and the option, never ignores it: its row is "not supported", measured like the others.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from dataclasses import dataclass

import pytest

from experiments.expect import DASK_KILLED, Expect, check, expected_for, params
from experiments.lab import cgroup
from experiments.lab.harness import run_scenario
from experiments.lab.scenarios import MEMORY_LIMIT_MIB, memory_limit_overrun
from experiments.test_peer_libraries import MPIRE_STOP
from variants import VARIANTS

VARIANT = "supervisor"
LIMIT_MIB = MEMORY_LIMIT_MIB
# A job that allocates twice its limit at item 3 while other tasks run. The fault is stamped when the job
# starts allocating; the kernel kills it once 200 MiB are charged, which takes 0.3-0.7 s of page faults
# on a loaded 2-core machine (measured), and the supervisor's detection is one wake-up after that SIGKILL
# (10-50 ms). PROMPT: 2 s covers the allocation time on a slower CI machine with margin.
PROMPT = 2.0
# Dask's nanny reads its worker's RSS every DASK_NANNY_POLL s (distributed.worker.memory.monitor-interval)
# and restarts it past DASK_TERMINATE of the limit (.terminate): a polled check, which sees this job only
# because it stays above 190 MiB longer than one interval (AllocateAt zeroes 400 MiB in 250-300 ms here and
# holds it scenarios.ALLOCATION_HOLD s: ten polls and more; without the hold, two or three, and one attempt in
# CI went unseen). A spike shorter than one poll passes unseen. The task is re-run
# until DASK_ATTEMPTS workers died with it (distributed.scheduler.allowed-failures, 3, + 1), each restart
# ~0.5-1 s, then KilledWorker and the cluster closes: 2.3-4.8 s measured. expect.DASK_KILLED bounds it as it
# does the OOM row's same four deaths and close.
DASK_NANNY_POLL = 0.1
DASK_TERMINATE = 0.95
DASK_ATTEMPTS = 4
# Recycling: 60 tasks, 2 workers, each retired after 10.
RECYCLE_ITEMS, RECYCLE_WORKERS, RECYCLE_AFTER = 60, 2, 10
# A recycling run that completes takes 0.8-1.5 s with the other core busy (six worker starts; measured for the
# pool, pebble and the supervisor); 6 s is 4x that, so a run still going then has stalled. billiard (2.6 s)
# gets its stop allowance from the harness on top.
RECYCLE_WATCH = 6.0
# A run whose initializer raises: the executors, pebble and the supervisor end it within 0.3 s (measured);
# mpire's terminate takes ~2 s (MPIRE_STOP bounds it), and the harness adds mpire's stop allowance (and Dask's
# start-up) to the watchdog. A run still going after MPIRE_STOP is in a respawn loop: 5 s of one started dozens
# of workers (54 failed starts measured for a pool of 2 with the other core busy).
INIT_WATCH = MPIRE_STOP


def not_supported(why: str) -> Expect:
    """The design has no equivalent: run() raises NotImplementedError before it starts a process."""
    return Expect("raised", "NotImplementedError", culprit=False, why=f"not supported: {why}")


def assert_not_supported(o, variant: str, option: str) -> None:
    """The NotImplementedError names the design and the option it cannot honour."""
    message = o.result["message"]
    assert variant in message and option in message, f"NotImplementedError must name {variant} and {option}: {message}"


def _starts(o) -> list[dict]:
    return [e for e in o.events if e["ev"] == "start"]


# -- (a) a job allocating past a 200 MiB limit at item 3 while the other tasks run ----------------------

MEMORY = {
    "pool": not_supported("multiprocessing.Pool has no per-worker memory limit"),
    "as_completed": not_supported("ProcessPoolExecutor has no per-worker memory limit"),
    "callback_monitor": not_supported("the article's ProcessPoolExecutor has no per-worker memory limit"),
    "supervisor": Expect("raised", "worker_died", culprit=True, exitcode=-9, detect_max=PROMPT,
                         why="its own memory cgroup: the kernel OOM-kills that worker only; on_error='continue' "
                             "finishes the 15 others; named with the limit and its peak"),
    "pebble_pool": not_supported("pebble has no per-worker memory limit"),
    "loky_executor": not_supported("loky only restarts, between tasks, a worker whose RSS grew 300 MB past its "
                                   "size after its first task: a leak check, not a limit"),
    "dask_distributed": Expect("raised", "worker_died", culprit=True, detect_max=DASK_KILLED,
                               why="polled: the nanny restarts each worker running item 3 once its RSS passes "
                                   "0.95 x 200 MiB; re-run on 4 workers, then KilledWorker ends the run (no "
                                   "on_error: the 15 others had finished by then)"),
    "mpire_pool": not_supported("mpire has no per-worker memory limit"),
    "billiard_pool": Expect("returned", why="max_memory_per_child is checked after each task: item 3 finishes with "
                                            "its 400 MiB, then its worker retires; nothing fails, nothing is said"),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("variant", params(MEMORY))
def test_a_job_past_its_memory_limit(variant):
    if variant == VARIANT:
        ok, why = cgroup.availability()
        if not ok:
            pytest.skip(why)
    sc = memory_limit_overrun()  # the bench's matrix row runs it with on_error="raise" (every design alike)
    kwargs = dict(sc.kwargs)
    if variant == VARIANT:
        kwargs["run_kwargs"] = {**kwargs["run_kwargs"], "on_error": "continue"}
    o = run_scenario(variant, **kwargs)
    row = expected_for(MEMORY, variant)
    check(o, row, fault_item=None if row.kind == "NotImplementedError" else 3)
    if row.kind == "NotImplementedError":
        assert_not_supported(o, variant, "memory_limit")
        return
    assert any(e["ev"] == "fault" for e in o.events), "the job never reached its allocation"
    report = o.result["report"]
    if variant == VARIANT:
        assert f"exceeded its memory_limit of {LIMIT_MIB} MiB" in o.result["message"], o.result["message"]
        assert report["fates"] == {"done": 15, "failed": 1, "never_run": 0}, "the other items all finished"
        assert sum("replaced worker" in n for n in report["notes"]) == 1, "one worker died: the culprit's"
        assert any("cgroup" in n and "per worker" in n for n in report["notes"]), "the mechanism is stated"
    elif variant == "billiard_pool":
        assert o.result["callback_calls"] == 16 and o.result["callback_repeats"] == 0, "every item done once"
        culprit = next(e for e in _starts(o) if e["item"] == 3)
        later = [e["item"] for e in _starts(o) if e["pid"] == culprit["pid"] and e["t"] > culprit["t"]]
        assert later == [], f"item 3's worker should retire after it, yet it started {later}"
    elif variant == "dask_distributed":
        import dask
        import distributed  # noqa: F401  (its import loads the distributed.* defaults into dask.config)
        from dask.utils import parse_timedelta

        # the row's premises: Dask's own settings, as the runner's cluster read them
        assert parse_timedelta(dask.config.get("distributed.worker.memory.monitor-interval")) == DASK_NANNY_POLL
        assert dask.config.get("distributed.worker.memory.terminate") == DASK_TERMINATE
        assert dask.config.get("distributed.scheduler.allowed-failures") + 1 == DASK_ATTEMPTS
        attempts = {e["pid"] for e in _starts(o) if e["item"] == 3}
        assert len(attempts) == DASK_ATTEMPTS, f"item 3 should have run on {DASK_ATTEMPTS} workers: {len(attempts)}"
        assert report["fates"]["failed"] == 1, report


# -- (a') what the limit buys: the same job with and without it, the whole run in one memory cgroup -------
# The run (parent included) in one memory cgroup of RUN_CGROUP_MIB, the parent holding PARENT_BALLAST_MIB
# of its own (a large data set it keeps), four idle-sized workers (~15 MiB each, spawn) and the job that
# allocates 2 x LIMIT_MIB. Without a limit the cgroup fills while that worker is at ~250 MiB: the kernel's
# OOM killer then picks the largest process in the cgroup, the parent (~430 MiB), and the whole run is lost.
# With memory_limit the worker is stopped at LIMIT_MIB, the cgroup peaks ~50 MiB under its own limit.
RUN_CGROUP_MIB = 750
PARENT_BALLAST_MIB = 400
WHAT_THE_LIMIT_BUYS = (f"the whole run in one {RUN_CGROUP_MIB} MiB memory cgroup, the parent holding {PARENT_BALLAST_MIB} "
                       f"MiB, a job allocating {2 * LIMIT_MIB} MiB: without and with memory_limit")


@pytest.mark.timeout(90)
def test_what_the_limit_buys_the_kernel_otherwise_kills_the_largest_process_the_parent():
    """No limit: the OOM killer picks by size inside the run's cgroup and kills the parent. With memory_limit:
    only the culprit's worker dies, named with the limit, and the run finishes every other item."""
    ok, why = cgroup.availability()
    if not ok:
        pytest.skip(why)
    from variants.supervisor._oom import Baseline, Witness, _vmstat_oom_kills

    sc = memory_limit_overrun()
    without = {k: v for k, v in sc.kwargs["run_kwargs"].items() if k != "memory_limit"}
    whole_run = {"limit_mb": RUN_CGROUP_MIB, "ballast_mb": PARENT_BALLAST_MIB}
    witness = Witness()
    try:
        before = Baseline(None, None, _vmstat_oom_kills())
        o = run_scenario(VARIANT, **{**sc.kwargs, "run_kwargs": without}, run_cgroup=whole_run)
        assert any(e["ev"] == "fault" for e in o.events), "the job never reached its allocation"
        check(o, Expect("runner_died", culprit=False, left_running=False,
                        why="no limit: the kernel killed the parent, the largest process; its workers went with it "
                            "(PR_SET_PDEATHSIG)"), label="no memory_limit", scenario=WHAT_THE_LIMIT_BUYS)
        assert o.runner_returncode == -9, o.runner_returncode
        verdict = witness.verdict(o.runner_pid, before)
        assert verdict.startswith("the kernel OOM killer did it"), verdict
    finally:
        witness.close()

    o = run_scenario(VARIANT, **{**sc.kwargs, "run_kwargs": {**sc.kwargs["run_kwargs"], "on_error": "continue"}},
                     run_cgroup=whole_run)
    check(o, expected_for(MEMORY, VARIANT), fault_item=3, label=f"memory_limit={LIMIT_MIB} MiB, on_error=continue",
          scenario=WHAT_THE_LIMIT_BUYS)
    assert f"exceeded its memory_limit of {LIMIT_MIB} MiB" in o.result["message"], o.result["message"]
    assert o.result["report"]["fates"] == {"done": 15, "failed": 1, "never_run": 0}, "the parent lived on"


@pytest.mark.timeout(60)
def test_the_memory_limit_without_a_cgroup_is_an_address_space_limit(monkeypatch):
    """Where no memory cgroup can be made, the job gets MemoryError (reported as that item's worker_error)."""
    from variants.supervisor import _limits

    monkeypatch.setattr(_limits, "V1_ROOT", _limits.Path("/nonexistent"))
    monkeypatch.setattr(_limits, "V2_ROOT", _limits.Path("/nonexistent"))
    from experiments.lab.jobs import AllocateAt
    from variants.contract import RunFailed
    from variants.supervisor import run

    with pytest.raises(RunFailed) as info:
        run(AllocateAt(at=1, mb=2 * LIMIT_MIB, n=10), range(4), workers=2, memory_limit=LIMIT_MIB << 20)
    assert info.value.kind == "worker_error" and info.value.item == 1
    assert "MemoryError" in str(info.value)
    assert any("RLIMIT_AS" in n for n in info.value.report.notes), info.value.report.notes


# billiard's max_memory_per_child is compared with getrusage().ru_maxrss, and Linux starts a spawned child's
# ru_maxrss at its parent's RSS (exec keeps the larger of the old and new maps' high-water marks).
BALLAST_MIB = 2 * LIMIT_MIB
BALLAST_ITEMS = 4


@pytest.mark.timeout(60)
def test_billiard_counts_the_parents_memory_against_each_worker(tmp_path):
    """A parent over billiard's max_memory_per_child: every worker retires after every task, using little itself."""
    ok, why = VARIANTS["billiard_pool"].available()
    if not ok:
        pytest.skip(why)
    from experiments.lab.jobs import UsesInitDb, open_db_once
    from variants.billiard_pool import run

    pids: list[int] = []
    ballast = bytearray(BALLAST_MIB << 20)  # zeroed, so resident: this process is now over the workers' limit
    try:
        run(UsesInitDb(n=1), range(BALLAST_ITEMS), workers=1, memory_limit=LIMIT_MIB << 20, initializer=open_db_once,
            initargs=(str(tmp_path / "seen.sqlite"),), on_result=lambda item, pid: pids.append(pid))
    finally:
        del ballast
    assert len(set(pids)) == BALLAST_ITEMS, f"one worker per task expected, got {len(set(pids))} for {len(pids)}"


# -- (b) recycling after N tasks, through an initializer's SQLite connection ---------------------------

GH_115634 = ("https://github.com/python/cpython/issues/115634: with tasks queued, the executor starts no "
             "replacement for a worker that reached max_tasks_per_child")
RECYCLE = {
    "pool": Expect("returned", why="maxtasksperchild: each worker exits after 10 tasks, the pool starts another"),
    "as_completed": Expect("hung", left_running=True,
                           why=f"the 2 first workers run 10 tasks each, then nothing: {GH_115634}"),
    "callback_monitor": Expect("hung", left_running=True,
                               why=f"the article's executor, max_tasks_per_child passed through: {GH_115634}"),
    "supervisor": Expect("returned", why="a replacement starts while a worker runs its last task: exactly 6 workers"),
    "pebble_pool": Expect("returned", why="max_tasks: each worker exits after 10 tasks, pebble starts another"),
    "loky_executor": not_supported("loky recycles an idle worker or a leaking one, never after N tasks"),
    "dask_distributed": not_supported("Dask retires workers by age (distributed.worker.lifetime), not task count"),
    "mpire_pool": not_supported("mpire's worker_lifespan is for map/imap; apply_async starts workers without one"),
    "billiard_pool": Expect("returned", why="maxtasksperchild: each worker exits after 10 tasks, billiard starts "
                                            "another"),
}


def _seen(db: str) -> list[tuple[int, int]] | None:
    """(item, pid) of every task that wrote through its worker's connection; None if no initializer ran."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT item, pid FROM seen").fetchall()
    except sqlite3.OperationalError:  # no table: open_db_once never ran
        return None
    finally:
        conn.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", params(RECYCLE))
def test_workers_are_recycled_after_n_tasks(variant, tmp_path):
    db = str(tmp_path / "seen.sqlite")
    o = run_scenario(variant, job={"type": "UsesInitDb", "n": 1}, items=RECYCLE_ITEMS,
                     run_kwargs={"workers": RECYCLE_WORKERS, "max_tasks_per_worker": RECYCLE_AFTER,
                                 "initializer": "open_db_once", "initargs": [db]}, watchdog=RECYCLE_WATCH)
    row = expected_for(RECYCLE, variant)
    check(o, row)
    if row.kind == "NotImplementedError":
        assert_not_supported(o, variant, "max_tasks_per_worker")
        return
    rows = _seen(db) or []
    per_pid = Counter(pid for _, pid in rows)
    if o.status == "hung":
        assert len(rows) == RECYCLE_WORKERS * RECYCLE_AFTER and len(per_pid) == RECYCLE_WORKERS, \
            f"expected the first workers' lifespans only, then a stall: {len(rows)} tasks by {len(per_pid)} workers"
        return
    assert o.result["callback_calls"] == RECYCLE_ITEMS and o.result["callback_repeats"] == 0
    assert sorted(item for item, _ in rows) == list(range(RECYCLE_ITEMS)), \
        "each item once, through the connection its worker's initializer opened"
    assert max(per_pid.values()) <= RECYCLE_AFTER, f"a worker ran more than {RECYCLE_AFTER} tasks: {per_pid}"
    assert len(per_pid) >= math.ceil(RECYCLE_ITEMS / RECYCLE_AFTER), per_pid
    if variant == VARIANT:
        # A worker is replaced only once it was sent RECYCLE_AFTER tasks, so only the workers still alive when the
        # items ran out (RECYCLE_WORKERS at most) ran fewer. Six workers of ten tasks is the usual split, not a
        # rule: a replacement ready before the last items are dealt takes some of them (seven workers, 6 + 4 for
        # the last two, seen in CI once the workers started 13 ms sooner).
        short = {pid: n for pid, n in per_pid.items() if n < RECYCLE_AFTER}
        assert len(short) <= RECYCLE_WORKERS, f"a worker was replaced before its {RECYCLE_AFTER} tasks: {per_pid}"
        retired = [n for n in o.result["report"]["notes"] if n.startswith("retired ")]
        assert len(retired) == 1 and int(retired[0].split()[1]) >= 5, o.result["report"]["notes"]


# -- (c) an initializer opening a SQLite connection the job uses ---------------------------------------

IN_EACH_WORKER = "the initializer runs in each worker, on the thread that then runs its tasks"
INIT_DB = {
    "pool": Expect("returned", why=IN_EACH_WORKER),
    "as_completed": Expect("returned", why=IN_EACH_WORKER),
    "callback_monitor": Expect("returned", why=f"passed through to the article's executor: {IN_EACH_WORKER}"),
    "supervisor": Expect("returned", why=IN_EACH_WORKER),
    "pebble_pool": Expect("returned", why=IN_EACH_WORKER),
    "loky_executor": Expect("returned", why=IN_EACH_WORKER),
    "dask_distributed": Expect("raised", "worker_error", culprit="any",
                               why="WorkerPlugin.setup runs on the worker's event-loop thread, tasks on its "
                                   "executor thread: sqlite3 refuses a connection made on another thread"),
    "mpire_pool": Expect("returned", why=f"worker_init: {IN_EACH_WORKER}"),
    "billiard_pool": Expect("returned", why=IN_EACH_WORKER),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", params(INIT_DB))
def test_an_initializer_opens_the_connection_the_job_uses(variant, tmp_path):
    db = str(tmp_path / "seen.sqlite")
    o = run_scenario(variant, job={"type": "UsesInitDb", "n": 1}, items=20,
                     run_kwargs={"workers": 2, "initializer": "open_db_once", "initargs": [db]}, watchdog=20)
    check(o, expected_for(INIT_DB, variant))
    rows = _seen(db)
    assert rows is not None, "the initializer never ran"
    if o.status == "returned":
        assert o.result["callback_calls"] == 20 and o.result["callback_repeats"] == 0
        assert sorted(item for item, _ in rows) == list(range(20)), "each item once, through the connection"
        assert {pid for _, pid in rows} <= {e["pid"] for e in _starts(o)}, "written by the workers themselves"
    else:
        assert "SQLite objects created in a thread can only be used in that same thread" in o.result["message"]
        assert rows == [], "the initializer ran (the table exists) but no task could use its connection"


# -- (d) an initializer that raises ----------------------------------------------------------------------

@dataclass(frozen=True)
class InitRaises(Expect):
    says_why: bool = False  # run()'s message carries the initializer's own exception


RESPAWNS = "the initializer kills each new worker and the pool starts another, forever: no task ever runs"
CAUSE = "ConnectionError: the database refused the worker's connection"
INIT_RAISES = {
    "pool": InitRaises("hung", left_running=True,
                       why=f"{RESPAWNS} (https://github.com/python/cpython/issues/87472)"),
    "as_completed": InitRaises("raised", "worker_died", culprit=False,
                               why="BrokenProcessPool 'terminated abruptly': the initializer's error is only logged"),
    "callback_monitor": InitRaises("raised", "callback_error", culprit=False,
                                   why="the executor's BrokenProcessPool reaches the done-callback: 'Callback process "
                                       "error', again"),
    "supervisor": InitRaises("raised", "worker_error", culprit=False, says_why=True,
                             why="the initializer's own error and traceback, before any task; no respawn"),
    "pebble_pool": InitRaises("raised", "worker_error", culprit="any",
                              why="pebble fails every task with BrokenProcessPool('All workers expired'); the "
                                  "variant's classify takes it for the first task's own error and names that item"),
    "loky_executor": InitRaises("raised", "worker_died", culprit=False,
                                why="TerminatedWorkerError, exit codes {EXIT(0)}: the error is only logged"),
    "dask_distributed": InitRaises("raised", "worker_error", culprit=False, says_why=True,
                                   why="register_plugin raises the worker's exception, with its traceback"),
    "mpire_pool": InitRaises("raised", "worker_error", culprit="any", says_why=True,
                             why="mpire fails the pending tasks with the initializer's own exception: an item is "
                                 "named, though none is at fault"),
    "billiard_pool": InitRaises("hung", left_running=True,
                                why=f"{RESPAWNS}: billiard's restart limit is off by default (max_restarts=None)"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", params(INIT_RAISES))
def test_an_initializer_that_raises(variant):
    workers = 2
    o = run_scenario(variant, job={"type": "Workload", "n": 1}, items=10,
                     run_kwargs={"workers": workers, "initializer": "failing_initializer"}, watchdog=INIT_WATCH)
    row = expected_for(INIT_RAISES, variant)
    check(o, row)
    if o.status == "hung":
        failed = o.stderr.count(CAUSE)  # each failed worker prints its traceback
        assert failed > 2 * workers, f"only {failed} workers failed for a pool of {workers}: no respawn loop"
        return
    assert o.result["callback_calls"] == 0 and not o.left_running
    assert (CAUSE.split(": ", 1)[1] in o.result["message"]) == row.says_why, o.result["message"]
    if variant == VARIANT:
        assert "initializer raised ConnectionError" in o.result["message"]
