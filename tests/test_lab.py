"""The fault lab's own parts: jobs, the items iterator, events, cgroup detection, expected tables."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from experiments import expect
from experiments.lab import cgroup, harness, jobs, scenarios
from variants.supervisor import describe_exit


def test_workload_builds_the_articles_list():
    out = jobs.Workload(n=1000)(0)
    assert out == [1] * 1000


@pytest.mark.parametrize("name", sorted(jobs.JOBS))
def test_every_job_pickles(name):
    job = jobs.make_job({"type": name, "at": 3, "n": 10})
    assert pickle.loads(pickle.dumps(job)) == job


def test_raise_at_is_the_articles_name_error(tmp_path):
    events = str(tmp_path / "ev.jsonl")
    job = jobs.RaiseAt(at=2, n=10, events=events)
    assert job(1) == [1] * 10
    with pytest.raises(NameError, match="name 'hoge' is not defined"):
        job(2)
    evs = jobs.read_events(events)
    assert [e["ev"] for e in evs] == ["start", "start", "fault"]
    assert evs[-1]["item"] == 2 and evs[0]["t"] <= evs[-1]["t"]


def test_raising_items_raise_at_their_index():
    it = iter(jobs.RaisingItems(5, raise_at=3))
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="index 3"):
        next(it)


def test_cgroup_availability_says_why():
    """Available: the text names the version and controller (no host path), and the parent really is a
    writable memory cgroup. Not available: entering one fails with exactly the reason given."""
    ok, why = cgroup.availability()
    if ok:
        version, parent = cgroup.parent_dir()
        assert why == cgroup.CONTROLLERS[version] and "/sys/fs/cgroup" not in why, why
        limit_file = "memory.limit_in_bytes" if version == "v1" else "memory.max"
        assert version == "v2" or (parent / limit_file).exists(), f"{parent} is no memory cgroup"
        assert os.access(parent, os.W_OK), f"{parent} is not writable"
    else:
        with pytest.raises(cgroup.Unavailable) as e:
            cgroup.enter_limited_cgroup(64 << 20)
        assert str(e.value) == why


@pytest.mark.skipif(not cgroup.availability()[0], reason=f"no memory cgroup: {cgroup.availability()[1]}")
def test_entering_on_every_task_never_nests_and_cleanup_removes_it():
    """A job that enters its cgroup on every task (the pipeline's FetchAndParse) stays one level down, and
    once its process is gone the cgroup is removed."""
    code = ("from experiments.lab import cgroup\n"
            "a = cgroup.enter_limited_cgroup(64 << 20)\n"
            "b = cgroup.enter_limited_cgroup(64 << 20)\n"
            "print(a == b, a.parent == cgroup.parent_dir()[1], a)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).parents[1])
    same, one_level_down, path = done.stdout.split()
    assert (same, one_level_down) == ("True", "True"), done.stderr
    cgroup.remove_lab_cgroups()
    assert not Path(path).exists(), "a lab cgroup whose owner is gone was not removed"


def test_every_scenario_builds_with_workers_in_run_kwargs():
    for name, make in scenarios.SCENARIOS.items():
        sc = make(workers=2)
        assert sc.kwargs["run_kwargs"]["workers"] == 2, name
        assert sc.kwargs["watchdog"] > 0, name


# A repeated death's fault (item 2, 0.5 s tasks) comes at most this long after the workers are up.
FAULT_AFTER_START = 1.5


@pytest.mark.parametrize("name", ["worker_crash_KillSelfAt", "worker_crash_SegfaultAt", "worker_crash_ExitAt",
                                  "worker_oom", "memory_limit_overrun"])
def test_the_watchdog_never_cuts_dasks_killed_worker_bound_short(name):
    # Dask's row for a death that repeats allows DASK_KILLED s from the fault; a shorter watchdog would turn a
    # slow but bounded KilledWorker into "hung" (one CI run on 3.12 did, at 30 s, before RETRY_ALLOWANCE).
    kw = scenarios.SCENARIOS[name]().kwargs
    assert kw.get("repeated_death"), f"{name}: its death repeats on every worker that runs the item"
    watchdog = harness.watchdog_for("dask_distributed", kw["watchdog"], repeated_death=True)
    needed = harness.START_ALLOWANCE["dask_distributed"] + FAULT_AFTER_START + expect.DASK_KILLED
    assert watchdog >= needed, f"{name}: watchdog {watchdog} s < start + fault + DASK_KILLED = {needed} s"


def test_expected_table_must_cover_every_variant():
    with pytest.raises(AssertionError, match="missing"):
        expect.params({"pool": expect.Expect("hung")})


@pytest.mark.parametrize(("code", "words"), [
    (-9, "SIGKILL (exit code -9)"),
    (-11, "SIGSEGV"),
    (1, "exited with code 1"),
    (None, "no exit code"),
])
def test_supervisor_says_how_a_worker_died(code, words):
    assert words in describe_exit(code)


def test_the_end_of_run_table_says_what_happened_in_words():
    row = {"fault": "Fault 4 of the article", "python": "3.11", "kind": None, "item": None, "fault_item": 2,
           "exitcode": None, "detect": 2.5, "left": [], "orphans_exit": None, "nothing_left": True}
    rows = [row | {"test": "experiments/test_worker_killed.py::test_worker_dies_by_itself[dask_distributed-KillSelfAt]",
                   "variant": "dask_distributed", "status": "returned", "fault_starts": 2},
            row | {"test": "experiments/test_worker_killed.py::test_worker_dies_by_itself[pool-KillSelfAt]",
                   "variant": "pool", "status": "hung", "fault_starts": 1, "left": ["1 a", "2 b"]},
            row | {"test": "experiments/test_worker_killed.py::test_worker_dies_by_itself[supervisor-KillSelfAt]",
                   "variant": "supervisor", "status": "raised", "kind": "worker_died", "item": 2, "exitcode": -9,
                   "detect": 0.007, "fault_starts": 1}]
    text = "\n".join(expect.observation_tables(rows))
    assert "KillSelfAt" not in text and scenarios.CRASH_WORDS["KillSelfAt"] in text, text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ") and "design" not in line}
    assert "recovered: task re-ran" in lines["dask_distributed"]
    assert "HANGS (watchdog)" in lines["pool"] and lines["pool"].rstrip().endswith("2")
    assert "raised worker_died" in lines["supervisor"] and "7 ms" in lines["supervisor"] and "yes" in lines["supervisor"]


@pytest.fixture
def made_up_outcomes(monkeypatch):
    """Hung outcomes made up for expect.check, kept out of the end-of-run tables: ``made_up(variant, stderr)``."""
    for name in ("LAB_OBSERVATIONS", "LAB_RECORD"):
        monkeypatch.delenv(name, raising=False)

    def made_up(variant, stderr):
        return harness.Outcome(variant=variant, status="hung", result=None, fault_t=None, detect_latency=None,
                               stop_latency=None, exit_latency=None, lingered=False, left_running=["1 worker"],
                               orphans_exit_latency=None, peak_children_mb=None, memory_trace=[], stdout="",
                               stderr=stderr)
    return made_up


def test_a_known_race_is_accepted_only_with_its_marker(made_up_outcomes):
    """Expect.race: the alternative row applies when the design wrote the marker, and only then."""
    row = expect.Expect("raised", "worker_died", race=(("lost a task",), expect.Expect("hung", left_running=True)))
    expect.check(made_up_outcomes("billiard_pool", "billiard: lost a task (job 3)\n"), row)
    with pytest.raises(AssertionError, match="status"):
        expect.check(made_up_outcomes("billiard_pool", "some other hang\n"), row)


# The two threads of the hang CI saw on 3.12 (faulthandler's dump, paths shortened).
POOL_TASK_HANDLER = (
    'Thread 0x00007f23066396c0 (most recent call first):\n'
    '  File "/py/lib/python3.12/multiprocessing/synchronize.py", line 95 in __enter__\n'
    '  File "/py/lib/python3.12/multiprocessing/queues.py", line 393 in put\n'
    '  File "/py/lib/python3.12/multiprocessing/pool.py", line 562 in _handle_tasks\n'
    '  File "/py/lib/python3.12/threading.py", line 1010 in run\n')
POOL_TERMINATE = (
    'Current thread 0x00007f2308ac8b80 (most recent call first):\n'
    '  File "/py/lib/python3.12/threading.py", line 1167 in _wait_for_tstate_lock\n'
    '  File "/py/lib/python3.12/threading.py", line 1147 in join\n'
    '  File "/py/lib/python3.12/multiprocessing/pool.py", line 720 in _terminate_pool\n'
    '  File "/py/lib/python3.12/multiprocessing/util.py", line 224 in __call__\n')


def test_pools_terminate_deadlock_is_accepted_only_on_both_threads_evidence(made_up_outcomes):
    """expect.DESIGN_RACES: any pool row may turn into cpython#96995's hang, but only with both stuck threads."""
    row = expect.Expect("raised", "worker_error", culprit=True)
    expect.check(made_up_outcomes("pool", POOL_TASK_HANDLER + "\n" + POOL_TERMINATE), row)
    for variant, stderr in (("pool", POOL_TASK_HANDLER), ("pool", POOL_TERMINATE),
                            ("billiard_pool", POOL_TASK_HANDLER + "\n" + POOL_TERMINATE)):
        with pytest.raises(AssertionError, match="status"):
            expect.check(made_up_outcomes(variant, stderr), row)


@pytest.mark.timeout(60)
def test_a_kill_waits_for_its_cue():
    """kill_cue: the worker on the named item is killed only once the cue is in the event log, never before."""
    job = {"type": "Workload", "n": 10, "delay": 0.3}
    waited = harness.run_scenario("supervisor", job=job, items=4, run_kwargs={"workers": 2}, kill_worker_on_item=1,
                                  kill_cue="an event no one stamps", watchdog=15)
    assert waited.status == "returned" and waited.fault_t is None, waited.stderr[-2000:]
    cued = harness.run_scenario("supervisor", job=job, items=4, run_kwargs={"workers": 2}, kill_worker_on_item=1,
                                kill_cue="start", watchdog=15)
    assert cued.status == "raised" and cued.kind == "worker_died" and cued.item == 1, cued.stderr[-2000:]


def test_margins_lists_the_measurement_nearest_its_bound_first():
    """experiments/margins.py: the share of each bound used, upper bounds as value/bound, lower as bound/value."""
    from experiments.margins import margins
    rows = [{"test": "far", "detect": 1.0, "exit": None, "bounds": {"detect_max": 4.0, "exit_max": 1.0}},
            {"test": "near", "detect": 2.7, "bounds": {"detect_max": 3.0, "detect_min": 0.9}},
            {"test": "unbounded", "detect": 9.0}]
    got = [(round(used, 2), test, name) for used, test, name, _, _ in margins(rows)]
    assert got == [(0.9, "near", "detect_max"), (0.33, "near", "detect_min"), (0.25, "far", "detect_max")]


# Bounds a wait for a SIGKILLed process to be seen dead: the kernel delivers SIGKILL at once and a `sleep` has no
# memory to tear down (milliseconds); 5 s only fails on a watch that never sees the death.
DEATH_SEEN_LIMIT = 5.0


# The group's leader for the GroupWatch test: starts a `sleep` in the leader's own group on each line read, prints
# its pid, and never reaps one (a killed one stays a zombie). Members must come from the leader: setpgid cannot join
# a group of another session.
LEADER = """
import subprocess, sys
kids = []
for line in sys.stdin:
    kids.append(subprocess.Popen(["sleep", "60"]))
    print(kids[-1].pid, flush=True)
"""


def test_group_watch_answers_from_a_known_member_and_scans_only_when_every_known_one_is_gone(monkeypatch):
    """``GroupWatch``, the observer's question every TICK: a known member still alive answers "yes" without a scan
    of the process table; when the known member dies while another lives, the scan finds the other ("yes": a "no"
    there would end the observation with a process still running); a member killed but not yet reaped (a zombie)
    is not alive. The runner itself (``exclude``) never counts."""
    scans = []
    real_scan = harness._scan
    monkeypatch.setattr(harness, "_scan", lambda pgid: scans.append(pgid) or real_scan(pgid))
    leader = subprocess.Popen([sys.executable, "-c", LEADER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, start_new_session=True)

    def start_member() -> int:
        leader.stdin.write("start\n")
        leader.stdin.flush()
        return int(leader.stdout.readline())

    def poll_while(still) -> bool:
        """any_alive() until ``still(answer)`` is false, at most DEATH_SEEN_LIMIT; the last answer."""
        deadline = time.monotonic() + DEATH_SEEN_LIMIT
        while still(answer := watch.any_alive()) and time.monotonic() < deadline:
            time.sleep(0.01)
        return answer

    try:
        watch = harness.GroupWatch(leader.pid, exclude=leader.pid)
        assert not watch.any_alive(), "the leader is excluded: nothing else is in its group yet"
        first = start_member()
        assert watch.any_alive() and watch.known == [first]
        second = start_member()
        before = len(scans)
        assert all(watch.any_alive() for _ in range(20))
        assert len(scans) == before and watch.known == [first], "a known live member must answer without a scan"
        os.kill(first, signal.SIGKILL)  # the leader never reaps it: a zombie
        alive = poll_while(lambda answer: answer and first in watch.known)
        assert alive and watch.known == [second], "the known member died while another lived: not seen alive"
        assert psutil.Process(first).status() == psutil.STATUS_ZOMBIE, "the case is a zombie, unreaped"
        os.kill(second, signal.SIGKILL)
        assert not poll_while(lambda answer: answer), "killed members (zombies) still counted as alive"
    finally:
        leader.stdin.close()
        leader.stdout.close()
        harness.kill_group(leader.pid)
        leader.wait(DEATH_SEEN_LIMIT)
        _, alive_left = psutil.wait_procs(harness.group_members(leader.pid), timeout=DEATH_SEEN_LIMIT)
    assert not alive_left, alive_left


def test_a_lab_worker_imports_no_psutil_unless_its_job_enters_a_cgroup():
    """Every spawned worker of every lab run unpickles a job from experiments.lab.jobs: importing the cgroup module
    (and psutil with it) there cost ~20 ms per worker, so only the OOM job imports it, when it misbehaves."""
    probe = ("import sys, experiments.lab.jobs; "
             "print(sorted(m for m in ('psutil', 'experiments.lab.cgroup') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def _ev(ev, item, pid, t):
    return {"ev": ev, "item": item, "pid": pid, "t": t}


def test_a_hang_is_called_one_only_on_the_evidence_of_its_last_window():
    """harness.hang_evidence: "idle" needs every process (the fault's own left out) to use or wait for under
    BUSY_BELOW of a core and no event in the window; a task that faulted and started over and over is a "loop";
    anything else is "busy". Breaks if the bound is summed over the processes (an idle Dask cluster on a loaded
    machine was published "over the watchdog", CI 3.13)."""
    since, now = 100.0, 102.0
    quiet = {1: 5.0, 2: 3.0}
    faulted = [_ev("start", 3, 2, 90.0), _ev("fault", 3, 2, 90.1)]
    idle = harness.hang_evidence(since, quiet, {1: 5.01, 2: 3.0}, faulted, now)
    assert idle["verdict"] == "idle" and idle["events"] == 0, idle
    # the fault's own process spinning (a job stuck in a loop) is the fault, not the design at work
    assert harness.hang_evidence(since, quiet, {1: 5.01, 2: 5.0}, faulted, now)["verdict"] == "idle"
    # the main process unpickling a large result: busy, whatever else is idle
    assert harness.hang_evidence(since, quiet, {1: 6.9, 2: 3.0}, faulted, now)["verdict"] == "busy"
    # nine processes waking for their heartbeats, each waiting its turn on a loaded machine: idle, however many
    housekeeping = {k: 1.0 for k in range(10, 19)}
    waking = {**quiet, **{k: 1.0 + 0.4 for k in housekeeping}}  # 0.2 core each over the 2 s window, 1.8 together
    assert harness.hang_evidence(since, {**quiet, **housekeeping}, waking, faulted, now)["verdict"] == "idle"
    # a process born in the window counts with all its CPU
    assert harness.hang_evidence(since, quiet, {1: 5.0, 2: 3.0, 7: 1.0}, faulted, now)["verdict"] == "busy"
    # no CPU to speak of, but a task finished in the window: progress, so no verdict of a hang yet
    assert harness.hang_evidence(since, quiet, quiet, [*faulted, _ev("start", 4, 1, 101.0)], now)["verdict"] == "busy"
    looping = [*faulted, *(_ev("start", 3, 10 + k, 95.0 + k) for k in range(harness.LOOP_STARTS))]
    assert harness.hang_evidence(since, quiet, {1: 6.9, 2: 3.0}, looping, now)["verdict"] == "loop"


# A run of 300 items of 3,000,000 ints on one worker computes for a minute or more: far past its 1 s watchdog and
# the test's OVERTIME_FOR_TEST, whatever the machine.
OVERTIME_FOR_TEST = 2.0


def test_a_run_still_working_at_its_watchdog_is_over_it_not_hung(monkeypatch):
    """Breaks if a run cut while it computes is published as a hang (issue 26: billiard at 10^7-int results drawn
    as "never noticed" at its watchdog, where another run had it raise)."""
    monkeypatch.setattr(harness, "OVERTIME", OVERTIME_FOR_TEST)
    o = harness.run_scenario("supervisor", job={"type": "Workload", "n": 3_000_000}, items=300,
                             run_kwargs={"workers": 1}, watchdog=1.0)
    assert o.status == "over_watchdog" and o.hang_evidence["verdict"] == "busy", (o.status, o.hang_evidence)
    assert o.hang_evidence["overtime"] >= OVERTIME_FOR_TEST and o.hang_evidence["busiest"][0][1] >= harness.BUSY_BELOW
    assert sum(o.hang_evidence["states"].values()) >= 2, o.hang_evidence  # the runner and its worker, at least
    assert "Current thread" in o.stderr, "no stack dump of the run cut at its watchdog"


def test_a_run_busy_at_its_watchdog_is_watched_on_and_recorded_as_it_ended():
    """Breaks if the harness stops a run at its watchdog while it is still working (no grace), or records a run
    that ended in its overtime as anything but what it did."""
    o = harness.run_scenario("supervisor", job={"type": "Workload", "n": 2_000_000}, items=12,
                             run_kwargs={"workers": 1}, watchdog=1.0)
    assert o.status == "returned" and o.result["report"]["completed"] == 12, (o.status, o.hang_evidence)
    assert o.hang_evidence["verdict"] == "busy" and 0 <= o.hang_evidence["overtime"] < harness.OVERTIME


def test_a_reaped_run_is_forgotten_so_its_reused_pid_is_never_taken_for_ours():
    """Breaks if the harness keeps a finished run's session id in STARTED_GROUPS: the id is the runner's pid, which
    the kernel hands out again, and the leak check (conftest) then killed another xdist worker's run that got it."""
    o = harness.run_scenario("supervisor", job={"type": "Workload", "n": 10}, items=2, run_kwargs={"workers": 1},
                             watchdog=15)
    assert o.status == "returned" and o.runner_pid not in harness.STARTED_GROUPS, harness.STARTED_GROUPS


def test_the_readme_gives_the_harness_own_evidence_window_and_overtime():
    """Breaks if the README's glossary (HANGS, watchdog) and the harness disagree on how a hang is proven."""
    text = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert f"last {harness.EVIDENCE_WINDOW:g} s show why" in text
    assert f"watches on, {harness.EVIDENCE_WINDOW:g} s at a time, up to {harness.OVERTIME:g} s more" in text


def test_a_race_row_takes_its_evidence_from_the_reported_error_too():
    """expect.race_row: Dask's KilledWorker at the end of its re-run loop is said in the error run() raised, not on
    stderr; a hung run of the same loop (the scheduler logging deaths, no error) keeps the row "hung"."""
    from experiments.expect import DASK_GIVES_UP, race_row
    from experiments.test_worker_phases import SENDING

    def outcome(status, message, stderr=""):
        return harness.Outcome(variant="dask_distributed", status=status, result={"message": message} if message else None,
                       fault_t=0.0, detect_latency=None, stop_latency=None, exit_latency=None, lingered=False,
                       left_running=[], orphans_exit_latency=None, peak_children_mb=None, memory_trace=[],
                       stdout="", stderr=stderr)

    row = SENDING["dask_distributed"]
    gave_up = outcome("raised", "worker_died: KilledWorker: Attempted to run task on 4 different workers (item 2)")
    assert race_row(gave_up, row) is DASK_GIVES_UP
    looping = outcome("hung", None, stderr="Task ReturnsAt marked as failed because 4 workers died while trying to run it")
    assert race_row(looping, row) is row
