"""Fault 4 of the article: a worker killed from outside (kill -9 from another shell), or dying by itself."""

from __future__ import annotations

import pytest

from experiments.expect import DASK_KILLED, PROMPT, Expect, check, expected_for, params
from experiments.lab.harness import run_scenario
from experiments.lab.scenarios import worker_crash, worker_killed
from experiments.test_peer_libraries import BILLIARD_DEATH, BILLIARD_LOST_ACK_RACE, BILLIARD_LOST_WAIT, MPIRE_STOP

BROKEN = "A process in the process pool was terminated abruptly"


def _died(exitcode=None, dask=None):
    return {
        "pool": Expect("hung", left_running=True,
                       why="the pool replaces the dead worker silently; the lost task never calls back"),
        "as_completed": Expect("raised", "worker_died", culprit=False, detect_max=PROMPT,
                               why="BrokenProcessPool fails every unfinished future; no item, no exit code"),
        "callback_monitor": Expect("raised", "callback_error", culprit=False, detect_max=PROMPT,
                                   why="the BrokenProcessPool reaches the done-callback, which reports it as its "
                                       "own error; shutdown() returns at once, so no poll is waited for"),
        "supervisor": Expect("raised", "worker_died", culprit=True, exitcode=exitcode, detect_max=PROMPT,
                             why="the dead worker's sentinel wakes the supervisor; it knows the item it sent"),
        "pebble_pool": Expect("raised", "worker_died", culprit=True, exitcode=exitcode, detect_max=PROMPT,
                              why="ProcessExpired on the dead worker's own task, with exit code and pid"),
        "loky_executor": Expect("raised", "worker_died", culprit=False, exitcode=exitcode, detect_max=PROMPT,
                                why="TerminatedWorkerError on every unfinished task; the exit code is in its text"),
        "dask_distributed": dask,
        "mpire_pool": Expect("raised", "worker_died", culprit=False, detect_max=MPIRE_STOP,
                             why="mpire's 0.1 s death watch fails every pending task with RuntimeError('Worker-N died "
                                 "unexpectedly'): no item, no exit code, no mention of OOM"),
        "billiard_pool": Expect("raised", "worker_died", culprit=True, exitcode=exitcode, detect_min=BILLIARD_LOST_WAIT,
                                detect_max=BILLIARD_DEATH, race=BILLIARD_LOST_ACK_RACE,
                                why="WorkerLostError on the task the worker had taken, naming the signal, once "
                                    "lost_worker_timeout has passed (1 s here; billiard's default is 10 s)"),
    }


EXPECTED = _died(exitcode=-9, dask=Expect(
    "returned", why="a one-off kill is absorbed: the nanny restarts the worker, the task re-runs elsewhere, "
                    "run() returns normally and nothing reports the fault"))


@pytest.mark.parametrize("variant", params(EXPECTED))
def test_worker_sigkilled_from_outside(variant):
    sc = worker_killed()
    o = run_scenario(variant, **sc.kwargs)
    check(o, expected_for(EXPECTED, variant), fault_item=sc.fault_item)
    if variant == "callback_monitor":
        assert BROKEN in o.result["message"]


CRASHES = {"KillSelfAt": -9, "SegfaultAt": -11, "ExitAt": 1}
# A death that repeats (the job kills itself every time) is retried on 4 workers, then KilledWorker.
KILLED_WORKER = Expect("raised", "worker_died", culprit=True, detect_max=DASK_KILLED,
                       why="allowed-failures=3: four workers die on the item before KilledWorker; no exit code")
EXPECTED_CRASH = {kind: _died(exitcode=code, dask=KILLED_WORKER) for kind, code in CRASHES.items()}


@pytest.mark.parametrize("crash", sorted(CRASHES))
@pytest.mark.parametrize("variant", params(EXPECTED))
def test_worker_dies_by_itself(variant, crash):
    sc = worker_crash(crash)()
    check(run_scenario(variant, **sc.kwargs), expected_for(EXPECTED_CRASH[crash], variant), fault_item=sc.fault_item)
