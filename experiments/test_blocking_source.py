"""A slow items source (a paginated API, 3 s per item) while a worker is SIGKILLed: noticed now, or at the next item?

Designs that read ``items`` on the thread that watches the workers cannot notice anything while
``next(items)`` blocks. The supervisor reads items on a thread of its own.
"""

from __future__ import annotations

import pytest

from experiments.expect import DASK_STOP, PROMPT, Expect, check, expected_for, params
from experiments.lab.harness import run_scenario
from experiments.lab.scenarios import SOURCE_BLOCK, blocking_source
from experiments.test_peer_libraries import BILLIARD_DEATH

# The source blocks SOURCE_BLOCK (3 s) per item; the kill lands while it is blocked. Noticed "at the next item" means
# after some part of that block: more than BLOCKED_MIN, which is far above any event-driven detection.
BLOCKED_MIN = 0.3
# The supervisor's bound here. Measured 5-27 ms on an idle machine; 52 ms once in CI on 3.11 beside the other xdist
# worker (0a32797), so the 50 ms is a figure for the bench (results/), not a bound for a loaded suite. 0.2 s is
# 4x that CI figure and still below BLOCKED_MIN: the regression this row guards, noticing the death only when the
# source yields, cannot come in under it.
SUPERVISOR_MAX = 0.2

EXPECTED = {
    "pool": Expect("hung", left_running=True, why="the lost task never calls back"),
    "as_completed": Expect("raised", "BrokenProcessPool", detect_min=BLOCKED_MIN, detect_max=SOURCE_BLOCK + PROMPT,
                           why="submit() on the broken pool raises, once the source yields the next item"),
    "callback_monitor": Expect("raised", "BrokenProcessPool", detect_min=BLOCKED_MIN, detect_max=SOURCE_BLOCK + PROMPT,
                               why="the same submit() raises first, before any callback or poll"),
    "supervisor": Expect("raised", "worker_died", culprit=True, exitcode=-9, detect_max=SUPERVISOR_MAX,
                         why="items are read on their own thread; the sentinel wakes the loop"),
    "pebble_pool": Expect("raised", "worker_died", culprit=True, exitcode=-9, detect_min=BLOCKED_MIN,
                          why="the bounded loop waits on futures only between items"),
    "loky_executor": Expect("raised", "worker_died", culprit=False, exitcode=-9, detect_min=BLOCKED_MIN,
                            detect_max=SOURCE_BLOCK + PROMPT,
                            why="submit() on the broken executor raises TerminatedWorkerError once the source yields; "
                                "the bounded loop reads it as the dead worker it reports"),
    "mpire_pool": Expect("raised", "worker_died", culprit=False, detect_min=BLOCKED_MIN,
                         why="'Worker-1 died unexpectedly', once the loop is back from the source"),
    "billiard_pool": Expect("raised", "worker_died", culprit=True, exitcode=-9, detect_min=BLOCKED_MIN,
                            detect_max=SOURCE_BLOCK + BILLIARD_DEATH,
                            why="WorkerLostError names the job and signal, after the source's block, the "
                                "lost-worker wait and terminate()'s wait for queued tasks"),
    "dask_distributed": Expect("returned", detect_max=DASK_STOP + 10,
                               why="recovered: the nanny restarts the worker and the task re-runs"),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("variant", params(EXPECTED))
def test_worker_killed_while_the_source_blocks(variant):
    sc = blocking_source()
    check(run_scenario(variant, **sc.kwargs), expected_for(EXPECTED, variant), fault_item=sc.fault_item)
