"""A worker OOM-killed by the real kernel OOM killer (a memory cgroup with a 64 MiB limit)."""

from __future__ import annotations

import pytest

from experiments.expect import DASK_KILLED, PROMPT, Expect, check, expected_for, params
from experiments.lab import cgroup
from experiments.lab.harness import run_scenario
from experiments.lab.scenarios import worker_oom
from experiments.test_peer_libraries import BILLIARD_DEATH, BILLIARD_LOST_WAIT, MPIRE_STOP

OK, WHY = cgroup.availability()
pytestmark = [pytest.mark.oom, pytest.mark.skipif(not OK, reason=f"no real OOM kill possible here: {WHY}")]

# Detection is counted from the moment the job starts allocating, so it includes the ~tens of ms the
# kernel needs to fill 64 MiB and pick its victim; PROMPT covers that with room to spare.
EXPECTED = {
    "pool": Expect("hung", left_running=True, why="same as any SIGKILL: the task is lost, the wait never ends"),
    "as_completed": Expect("raised", "worker_died", culprit=False, detect_max=PROMPT),
    "callback_monitor": Expect("raised", "callback_error", culprit=False, detect_max=PROMPT,
                               why="an OOM kill is reported as 'Callback process error'"),
    "supervisor": Expect("raised", "worker_died", culprit=True, exitcode=-9, detect_max=PROMPT,
                         why="names the item, exit code -9 and the kernel's OOM-kill counter as evidence"),
    "pebble_pool": Expect("raised", "worker_died", culprit=True, exitcode=-9, detect_max=PROMPT),
    "loky_executor": Expect("raised", "worker_died", culprit=False, exitcode=-9, detect_max=PROMPT),
    "dask_distributed": Expect("raised", "worker_died", culprit=True, detect_max=DASK_KILLED,
                               why="the item OOMs on every worker it is retried on: KilledWorker after 4 deaths"),
    "mpire_pool": Expect("raised", "worker_died", culprit=False, detect_max=MPIRE_STOP,
                         why="'Worker-N died unexpectedly' on every pending task: the message says nothing of OOM"),
    "billiard_pool": Expect("raised", "worker_died", culprit=True, exitcode=-9, detect_min=BILLIARD_LOST_WAIT,
                            detect_max=BILLIARD_DEATH, why="WorkerLostError: signal 9 (SIGKILL), on the taken task"),
}


@pytest.mark.parametrize("variant", params(EXPECTED))
def test_worker_oom_killed_by_the_kernel(variant):
    sc = worker_oom()
    o = run_scenario(variant, **sc.kwargs)
    check(o, expected_for(EXPECTED, variant), fault_item=sc.fault_item, scenario=sc.title)
    assert any(e["ev"] == "fault" for e in o.events), "the job never reached its allocation"
    if variant == "supervisor":
        assert "OOM killer did it" in o.result["message"]
