"""Faults 1 and 2 of the article: the main process raises, is interrupted, or is SIGKILLed."""

from __future__ import annotations

import math
import os
import time

import pytest

from experiments.expect import DASK_STOP, POLL, PROMPT, SLACK, SPAWN_UP, Expect, check, expected_for, params
from experiments.lab.harness import ROOT, describe, group_members, kill_group, run_scenario
from experiments.lab.scenarios import MAIN_RAISES_AT, ctrl_c, main_killed, main_raises
from experiments.test_peer_libraries import BILLIARD_STOP, MPIRE_STOP

# main_raises: 40 tasks of 0.5 s, the items iterator raises at index MAIN_RAISES_AT (8), the run's timeout is 8 s.
# What as_completed's with-block waits for before propagating: the tasks submitted before the raise, in
# waves of 4 workers: 8 tasks, two waves of 0.5 s (not 8 * 0.5 / 4, as if the work divided evenly).
TASKS_BEFORE_RAISE = math.ceil(MAIN_RAISES_AT / 4) * 0.5
# as_completed submits every item before any worker runs one, so the raise comes before its workers are up:
# their spawn start-up is part of what it waits for. Measured for this scenario (two waves, 1.0 s of tasks):
# 1.5-1.6 s in all here (idle machine), 3.12 s in CI on 3.12 beside the other xdist worker (the bound was then
# 3.0 s). SPAWN_UP covers that start-up, PROMPT the rest: 4.0 s in all. A design that waited for all 40 tasks
# would take 5 s of tasks plus the same start-up (at least 0.4 s), so the bound still tells the two apart.

EXPECTED_RAISES = {
    "pool": Expect("raised", "RuntimeError", detect_max=PROMPT, exit_max=PROMPT,
                   why="the with-block's terminate() stops the workers; the exception propagates"),
    "as_completed": Expect("raised", "RuntimeError", detect_max=TASKS_BEFORE_RAISE + SPAWN_UP + PROMPT,
                           exit_max=PROMPT,
                           why="the with-block first runs every task already submitted"),
    "callback_monitor": Expect("raised", "RuntimeError", detect_max=PROMPT, exit_min=POLL - SLACK,
                               why="run() propagates at once, but the non-daemon monitor thread keeps the "
                                   "process alive until a poll past the run's timeout (8 s: the 10 s poll) "
                                   "cancels and terminates"),
    "supervisor": Expect("raised", "RuntimeError", detect_max=PROMPT, exit_max=PROMPT),
    "pebble_pool": Expect("raised", "RuntimeError", detect_max=PROMPT, exit_max=PROMPT),
    "loky_executor": Expect("raised", "RuntimeError", detect_max=PROMPT, exit_max=PROMPT),
    "dask_distributed": Expect("raised", "RuntimeError", detect_max=DASK_STOP, exit_max=PROMPT,
                               why="propagates once the cluster is closed"),
    "mpire_pool": Expect("raised", "RuntimeError", detect_max=MPIRE_STOP, exit_max=PROMPT),
    "billiard_pool": Expect("raised", "RuntimeError", detect_max=BILLIARD_STOP, exit_max=PROMPT,
                            why="propagates once terminate() has waited 5 s for the queued tasks"),
}

# main_killed: SIGKILL the main process while 4 tasks of 1 s run; watch its processes for 3 s.
EXPECTED_KILLED = {
    "pool": Expect("parent_killed", left_running=False,
                   why="workers finish their task, then read EOF on the task queue and exit (~1 s)"),
    "as_completed": Expect("parent_killed", left_running=True,
                           why="executor workers and the resource tracker outlive the parent"),
    "callback_monitor": Expect("parent_killed", left_running=True,
                               why="workers and the Manager process outlive the parent"),
    "supervisor": Expect("parent_killed", left_running=False,
                         why="PR_SET_PDEATHSIG: the kernel SIGKILLs every worker with the parent"),
    "pebble_pool": Expect("parent_killed", left_running=False,
                          why="workers finish their task, then see their pipe closed and exit (~1 s)"),
    "loky_executor": Expect("parent_killed", left_running=True, why="loky's workers outlive the parent"),
    "dask_distributed": Expect("parent_killed", left_running=False,
                               why="nannies and workers notice the parent is gone and exit"),
    "mpire_pool": Expect("parent_killed", left_running=True, why="mpire's workers outlive the parent"),
    "billiard_pool": Expect("parent_killed", left_running=False,
                            why="no PDEATHSIG (billiard.util has set_pdeathsig; the pool never calls it): workers "
                                "finish their task, read EOF on the task pipe and exit (~1 s)"),
}
ORPHAN_EXIT_MAX = 1.0  # the supervisor's goal: every worker gone within 1 s of the parent's death

EXPECTED_CTRL_C = {
    "pool": Expect("raised", "KeyboardInterrupt", detect_max=PROMPT, exit_max=PROMPT),
    "as_completed": Expect("raised", "KeyboardInterrupt", exit_max=PROMPT),
    "callback_monitor": Expect("raised", "KeyboardInterrupt", detect_max=PROMPT, left_running=True,
                               why="the monitor thread has no timeout to reach here and never stops: the "
                                   "process cannot exit"),
    "supervisor": Expect("raised", "KeyboardInterrupt", detect_max=PROMPT, exit_max=PROMPT),
    "pebble_pool": Expect("raised", "KeyboardInterrupt", detect_max=PROMPT, exit_max=PROMPT),
    "loky_executor": Expect("raised", "KeyboardInterrupt", detect_max=PROMPT, exit_max=PROMPT),
    "dask_distributed": Expect("raised", "KeyboardInterrupt", detect_max=DASK_STOP, exit_max=PROMPT),
    "mpire_pool": Expect("raised", "KeyboardInterrupt", detect_max=MPIRE_STOP, exit_max=PROMPT),
    "billiard_pool": Expect("raised", "KeyboardInterrupt", detect_max=BILLIARD_STOP, exit_max=PROMPT,
                            why="propagates once terminate() has waited 5 s for the queued tasks"),
}


@pytest.mark.parametrize("variant", params(EXPECTED_RAISES))
def test_main_process_raises(variant):
    check(run_scenario(variant, **main_raises().kwargs), expected_for(EXPECTED_RAISES, variant))


@pytest.mark.parametrize("variant", params(EXPECTED_KILLED))
def test_main_process_sigkilled(variant):
    o = run_scenario(variant, **main_killed().kwargs)
    check(o, expected_for(EXPECTED_KILLED, variant))
    if variant == "supervisor":
        assert o.orphans_exit_latency is not None and o.orphans_exit_latency <= ORPHAN_EXIT_MAX


@pytest.mark.parametrize("variant", params(EXPECTED_CTRL_C))
def test_ctrl_c(variant):
    sc = ctrl_c()
    check(run_scenario(variant, **sc.kwargs), expected_for(EXPECTED_CTRL_C, variant), scenario=sc.title)


@pytest.mark.parametrize("ignore_hup", [False, True], ids=["child", "child_ignoring_sighup"])
def test_supervisor_main_sigkilled_while_jobs_wait_on_children(ignore_hup):
    """The main process is SIGKILLed while every job waits on a child process of its own (a tool that hangs).
    PR_SET_PDEATHSIG ends the workers; each worker's process group is then orphaned with its stopped keeper in it,
    which the kernel continues, and which SIGKILLs the group (_worker._keep_group): the children end too, with no
    process of the run left to signal them, also one that ignores SIGHUP."""
    o = run_scenario("supervisor", job={"type": "HangInChildAt", "at": "every", "n": 10, "ignore_hup": ignore_hup},
                     items=8, run_kwargs={"workers": 2}, kill_runner_after_starts=2, orphan_watch=3.0, watchdog=15)
    check(o, Expect("parent_killed", left_running=False, why="the keeper of each orphaned group SIGKILLs it"),
          label="child ignores SIGHUP" if ignore_hup else "child",
          scenario="main process SIGKILLed while jobs wait on children of their own")
    assert o.orphans_exit_latency is not None and o.orphans_exit_latency <= ORPHAN_EXIT_MAX


def _sleeping(token: str) -> list[int]:
    """Pids of live `sleep <token>` processes (found by their command line: they are in no session of the lab)."""
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline", "status"])
            if p.info["cmdline"] == ["sleep", token] and p.info["status"] != psutil.STATUS_ZOMBIE]


def test_supervisor_main_sigkilled_a_child_in_a_session_of_its_own_is_left():
    """The case this machine cannot cover, shown: a child that left its worker's session and group (setsid, as a
    daemon does) is beyond the keeper's reach, and with the main process SIGKILLed nothing else is left to end it
    (memory_limit's cgroups are removed by the main process, so they do not help here either). The lab cannot see
    it as the run's either (it tracks the run's session): this test finds it by its command line, then ends it."""
    import os
    import signal
    import uuid

    token = f"3600.{uuid.uuid4().int % 10**9:09d}"
    try:
        o = run_scenario("supervisor", job={"type": "HangInChildAt", "at": "every", "n": 10, "seconds": token,
                                            "new_session": True},
                         items=4, run_kwargs={"workers": 2}, kill_runner_after_starts=2, orphan_watch=1.0, watchdog=15)
        assert o.status == "parent_killed", o.status
        assert _sleeping(token), "a child in a session of its own was expected to outlive the SIGKILLed main process"
    finally:
        for pid in _sleeping(token):
            os.kill(pid, signal.SIGKILL)


STARTUP_LIMIT = 30.0  # for a spawned worker to reach its own process group: ~0.1 s idle, seconds under load


@pytest.mark.parametrize("trial", range(3))
def test_supervisor_main_sigkilled_while_a_worker_starts(trial):
    """The main process is SIGKILLed in the few ms between a worker taking a process group of its own and its
    keeper stopping (_worker._keep_group). The kernel continues an orphaned group's stopped members only at the
    moment the group is orphaned, so a keeper that stops after that moment would stay stopped for good: the worker
    that finds its parent gone ends its group itself (_worker._end_orphaned). Measured without that: both
    keepers left, stopped, in 8 of 8 runs. The lab kills the main process as soon as a worker leads its own group
    (polled every 0.2 ms), so the kill lands in that window, or right after it, where the kernel's path holds."""
    import subprocess
    import sys

    import psutil

    main = subprocess.Popen(
        [sys.executable, "-c", "from variants import supervisor; import time; "
                               "supervisor.run(time.sleep, [60] * 4, workers=2)"],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + STARTUP_LIMIT
        while time.monotonic() < deadline and main.poll() is None:
            try:
                workers = psutil.Process(main.pid).children()
                if any(os.getpgid(w.pid) == w.pid for w in workers):
                    break
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass
            time.sleep(0.0002)
        else:
            pytest.fail(f"no worker took a process group of its own within {STARTUP_LIMIT} s")
        main.kill()
        main.wait(timeout=5)
        deadline = time.monotonic() + ORPHAN_EXIT_MAX
        while group_members(main.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        left = [describe(p) for p in group_members(main.pid)]
        assert not left, f"left running {ORPHAN_EXIT_MAX} s after the main process's SIGKILL: {left}"
    finally:
        main.kill()
        main.wait(timeout=5)
        kill_group(main.pid)  # the session's every process, in whichever group
