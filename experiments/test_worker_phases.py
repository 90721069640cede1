"""Faults at the other moments of a worker's life: while it sends an answer, when its pipe is gone but it lives,
when its job starts processes of its own (a pool, a helper it leaves running).

The running phase is the other files' (a worker raises, hangs, dies, is OOM-killed while a task runs); the
supervisor's phases are listed in variants/supervisor/_worker.py (PHASES), and tests/test_supervisor_rules.py
covers the ones no peer can be set up for the same way (idle, exiting, a forked copy, deaths in a row).
"""

from __future__ import annotations

import pytest

from experiments.expect import (
    DASK_KILLED,
    DASK_KILLED_WORKER,
    DASK_RERUNS,
    DASK_STOP,
    PROMPT,
    Expect,
    check,
    expected_for,
    params,
)
from experiments.lab.harness import run_scenario
from experiments.lab.scenarios import (
    helper_outlives_job,
    job_uses_process_pool,
    killed_while_sending,
    pipe_closed_while_alive,
)

# A peer that waits for the answer of a worker that died half-way through writing it: the answer's reader blocks on
# a message that never ends (the result pipe is shared, so the other workers keep it open and no EOF comes).
HALF_AN_ANSWER = "the result reader waits for the rest of a message a dead worker began to write: no error, ever"

SENDING = {
    "pool": Expect("hung", left_running=True, why=HALF_AN_ANSWER),
    "as_completed": Expect("hung", left_running=True, why=HALF_AN_ANSWER + " (the executor's own broken-pool check "
                                                                         "runs on the same thread)"),
    "callback_monitor": Expect("hung", left_running=True, why=HALF_AN_ANSWER + "; the 5 s monitor sees no error"),
    "supervisor": Expect("raised", "worker_died", culprit=True, exitcode=-9, detect_max=PROMPT,
                         why="the worker's slot says it was sending item 2's answer; the half message is dropped"),
    "pebble_pool": Expect("raised", "worker_died", culprit=True, exitcode=-9, detect_max=PROMPT,
                          why="ProcessExpired on the task whose answer never came, with the signal"),
    "loky_executor": Expect("hung", left_running=True, why=HALF_AN_ANSWER),
    "dask_distributed": Expect("hung", left_running=None,
                               why="the nanny restarts the worker and the scheduler recomputes the lost result, which "
                                   "kills the worker again: a death after the task finished is not counted towards "
                                   "KilledWorker, so the task re-runs, unreported, until the watchdog",
                               race=DASK_KILLED_WORKER),
    "mpire_pool": Expect("hung", left_running=True, why=HALF_AN_ANSWER),
    "billiard_pool": Expect("hung", left_running=True, why=HALF_AN_ANSWER),
}


@pytest.mark.timeout(120)  # Dask's watchdog is 60 s (harness.watchdog_for with repeated_death) and it may reach it
@pytest.mark.parametrize("variant", params(SENDING))
def test_a_worker_killed_while_it_sends_a_large_result(variant):
    sc = killed_while_sending()
    o = run_scenario(variant, **sc.kwargs)
    check(o, expected_for(SENDING, variant), fault_item=sc.fault_item, scenario=sc.title)
    kills = sum(e["ev"] == "fault" and e.get("item") == sc.fault_item for e in o.events)
    # The fault is real in every design: its answer was on its way when the worker was killed (Dask's non-blocking
    # socket once hid it, and the run "returned": the kill never happened).
    assert kills >= 1, f"{variant}: the worker was never killed while sending"
    if variant == "dask_distributed":
        assert kills >= DASK_RERUNS, f"{variant}: {kills} kill(s) while sending: not the re-run loop described"


PIPE_CLOSED = {
    "pool": Expect("hung", left_running=True, why="the worker dies on its closed pipe; the pool replaces it and the "
                                                  "task never calls back"),
    "as_completed": Expect("raised", "worker_died", culprit=False, detect_max=PROMPT,
                           why="BrokenProcessPool fails every unfinished future; no item"),
    "callback_monitor": Expect("raised", "callback_error", culprit=False, detect_max=PROMPT,
                               why="the BrokenProcessPool reaches the done-callback, reported as its own error"),
    "supervisor": Expect("raised", "worker_died", culprit=True, exitcode=-9, detect_max=PROMPT,
                         why="EOF on a live worker's pipe: the supervisor kills it and charges the task it runs"),
    "pebble_pool": Expect("raised", "worker_died", culprit=True, detect_max=PROMPT,
                          why="ProcessExpired on the task, once its worker has died on the closed pipe"),
    "loky_executor": Expect("raised", "worker_died", culprit=False, detect_max=PROMPT,
                            why="TerminatedWorkerError on every unfinished task"),
    "dask_distributed": Expect("raised", "worker_died", culprit=True, detect_max=DASK_KILLED,
                               why="the worker loses its scheduler; the task is retried until KilledWorker"),
    "mpire_pool": Expect("hung", left_running=True, why="the worker's queues are gone; no death is seen"),
    "billiard_pool": Expect("raised", "worker_died", culprit=True, detect_max=5.0,
                            why="WorkerLostError on the task once its worker exits on the closed pipe"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", params(PIPE_CLOSED))
def test_a_job_closes_the_workers_pipe_and_lives_on(variant):
    sc = pipe_closed_while_alive()
    check(run_scenario(variant, **sc.kwargs), expected_for(PIPE_CLOSED, variant), fault_item=sc.fault_item,
          scenario=sc.title)


DAEMONIC = "AssertionError: daemonic processes are not allowed to have children, named on the item"
INNER_POOL = {
    "pool": Expect("raised", "worker_error", culprit=True, detect_max=PROMPT, why=DAEMONIC),
    "as_completed": Expect("returned", why="the executor's workers are not daemons"),
    "callback_monitor": Expect("returned", why="the executor's workers are not daemons"),
    "supervisor": Expect("returned", why="its workers are not daemons; what a job starts is in the worker's group"),
    "pebble_pool": Expect("returned", why="pebble's workers are not daemons"),
    "loky_executor": Expect("returned", why="loky's workers are not daemons"),
    "dask_distributed": Expect("raised", "worker_error", culprit=True, detect_max=DASK_STOP,
                               why=DAEMONIC + " (a nanny's worker is a daemon)"),
    "mpire_pool": Expect("raised", "worker_error", culprit=True, detect_max=5.0, why=DAEMONIC),
    "billiard_pool": Expect("raised", "worker_error", culprit=True, detect_max=10.0, why=DAEMONIC),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", params(INNER_POOL))
def test_a_job_uses_a_process_pool_of_its_own(variant):
    sc = job_uses_process_pool()
    check(run_scenario(variant, **sc.kwargs), expected_for(INNER_POOL, variant), fault_item=sc.fault_item, scenario=sc.title)


LEFT = "the run succeeds and the helper lives on after it: nothing ends what a job started"
HELPER = {v: Expect("returned", left_running=True, why=LEFT) for v in
          ("pool", "as_completed", "callback_monitor", "pebble_pool", "loky_executor", "dask_distributed",
           "mpire_pool", "billiard_pool")}
HELPER["supervisor"] = Expect("returned", why="the helper is in its worker's process group, ended with the worker")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", params(HELPER))
def test_a_job_leaves_a_helper_process_running(variant):
    sc = helper_outlives_job()
    check(run_scenario(variant, **sc.kwargs), expected_for(HELPER, variant), fault_item=sc.fault_item, scenario=sc.title)
