"""A worker hangs and ignores SIGTERM: can the design stop it? (terminate() is SIGTERM only.)"""

from __future__ import annotations

import pytest

from experiments.expect import DASK_STOP, PEBBLE_STOP, PROMPT, SLACK, Expect, check, expected_for, params
from experiments.lab.harness import run_scenario
from experiments.lab.scenarios import hang_ignoring_sigterm
from experiments.test_peer_libraries import MPIRE_STOP

SC = hang_ignoring_sigterm()
GRACE = 1.0  # the supervisor's default SIGTERM -> SIGKILL grace period

EXPECTED = {
    "pool": Expect("hung", left_running=True,
                   why="the timeout is noticed, but Pool.terminate() joins the SIGTERMed worker with no limit"),
    "as_completed": Expect("hung", left_running=True, why="shutdown(wait=True) waits for the hung task forever"),
    "callback_monitor": Expect("hung", left_running=True,
                               why="the monitor's terminate() is ignored; executor.shutdown() waits forever"),
    "supervisor": Expect("raised", "timeout", detect_min=GRACE, detect_max=GRACE + PROMPT,
                         why="SIGTERM is ignored, SIGKILL follows after the 1 s grace; run() raises once "
                             "every worker is gone, so detection includes the grace"),
    "pebble_pool": Expect("raised", "timeout", detect_max=PEBBLE_STOP + SLACK,
                          why="pool.stop() escalates to SIGKILL after its own wait"),
    "loky_executor": Expect("raised", "timeout", detect_max=PROMPT,
                            why="shutdown(kill_workers=True) sends SIGKILL straight away"),
    "dask_distributed": Expect("raised", "timeout", detect_max=DASK_STOP),
    "mpire_pool": Expect("raised", "timeout", detect_max=MPIRE_STOP,
                         why="terminate() first sends SIGUSR1, which mpire turns into an exception inside the "
                             "job: a job in Python code is stopped whatever it does with SIGTERM"),
    "billiard_pool": Expect("hung", left_running=True,
                            why="terminate() SIGTERMs every worker, then joins them with no limit"),
}


@pytest.mark.parametrize("variant", params(EXPECTED))
def test_hang_ignoring_sigterm(variant):
    o = run_scenario(variant, **SC.kwargs)
    check(o, expected_for(EXPECTED, variant))
    if variant == "supervisor":
        assert o.stop_latency is not None and o.stop_latency <= GRACE + SLACK
