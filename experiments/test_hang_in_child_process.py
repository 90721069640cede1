"""A job waits on a child process it started (a command-line tool that hangs): is that process stopped too?

Killing a worker ends one process. What its job started (``subprocess.run(["curl", ...])`` with no timeout,
a converter, a headless browser) is reparented and lives on, holding memory, files and connections, long
after run() has raised, unless the design stops them, or the worker dies of an exception (``subprocess.run``
kills its child on any exception, SystemExit included). "left" counts such processes once the runner has
exited.
"""

from __future__ import annotations

import pytest

from experiments.expect import DASK_STOP, PROMPT, SLACK, Expect, check, expected_for, params
from experiments.lab import cgroup
from experiments.lab.harness import run_scenario
from experiments.lab.scenarios import hang_in_child_process
from experiments.test_peer_libraries import BILLIARD_STOP, MPIRE_STOP
from experiments.test_timeouts import POLL_OVERSHOOT

SC = hang_in_child_process()

EXPECTED = {
    "pool": Expect("raised", "timeout", culprit=False, detect_max=PROMPT, left_running=True,
                   why="terminate() SIGTERMs the worker only: the sleep it waited on is left"),
    "as_completed": Expect("hung", left_running=True, why="shutdown(wait=True) waits for the hung task forever"),
    "callback_monitor": Expect("raised", "timeout", culprit=False, detect_max=POLL_OVERSHOOT + SLACK,
                               left_running=True, why="its terminate through executor internals ends workers only"),
    "supervisor": Expect("raised", "timeout", culprit=False, detect_max=PROMPT, left_running=False,
                         why="the worker's descendants, listed before its stop, get its SIGTERM and then SIGKILL"),
    "pebble_pool": Expect("raised", "timeout", culprit=False, detect_max=PROMPT, left_running=True,
                          why="stop() ends its workers, not what they started"),
    "loky_executor": Expect("raised", "timeout", culprit=False, detect_max=PROMPT, left_running=False,
                            why="loky kills each worker's whole process tree (kill_process_tree) when it stops"),
    "dask_distributed": Expect("raised", "timeout", culprit=False, detect_max=DASK_STOP, left_running=True,
                               why="the cluster closes its workers; the sleep one started is left"),
    "mpire_pool": Expect("raised", "timeout", culprit=False, detect_max=MPIRE_STOP, left_running=False,
                         why="its workers turn SIGTERM into an exception in the job, and subprocess.run kills its "
                             "child on any exception"),
    "billiard_pool": Expect("raised", "timeout", culprit=False, detect_max=BILLIARD_STOP, left_running=False,
                            why="its workers turn SIGTERM into SystemExit in the job, and subprocess.run kills its "
                                "child on any exception"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", params(EXPECTED))
def test_a_job_waits_on_a_child_process_that_hangs(variant):
    o = run_scenario(variant, **SC.kwargs)
    check(o, expected_for(EXPECTED, variant), fault_item=SC.fault_item)
    if o.left_running:
        assert any("sleep" in p for p in o.left_running), o.left_running  # the job's child, not a worker


@pytest.mark.timeout(60)
def test_supervisor_task_timeout_stops_the_jobs_child_and_the_run_goes_on():
    """task_timeout stops one worker mid-run (on_error="continue"): its job's child goes with it."""
    run_kwargs = {"workers": 4, "task_timeout": 1.0, "on_error": "continue"}
    o = run_scenario("supervisor", **{**SC.kwargs, "run_kwargs": run_kwargs, "fault_clock": "task_deadline"})
    check(o, Expect("raised", "task_timeout", culprit=True, detect_max=PROMPT, left_running=False),
          fault_item=SC.fault_item)
    assert o.result["report"]["fates"]["done"] == SC.kwargs["items"] - 1, o.result["report"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("memory_limit", [None, 200 << 20], ids=["no_limit", "memory_limit"])
def test_supervisor_worker_dies_by_itself_leaving_a_child(memory_limit):
    """A worker that SIGKILLs itself has orphaned its child before anyone could list it. The child is still in
    the process group the worker made for itself, which the supervisor ends with the worker (and with
    memory_limit, in the worker's memory cgroup too): nothing is left running either way."""
    if memory_limit is not None and not cgroup.availability()[0]:
        pytest.skip(cgroup.availability()[1])
    run_kwargs = {"workers": 2, "on_error": "continue", **({"memory_limit": memory_limit} if memory_limit else {})}
    o = run_scenario("supervisor", job={"type": "KillSelfWithChildAt", "at": 1, "n": 10, "delay": 0.1}, items=6,
                     run_kwargs=run_kwargs, watchdog=20)
    check(o, Expect("raised", "worker_died", culprit=True, exitcode=-9, detect_max=PROMPT,
                    left_running=False), fault_item=1)
