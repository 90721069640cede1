"""Fault 6 of the article: the whole run exceeds its time limit; and hangs, with and without limits."""

from __future__ import annotations

import re

import pytest

from experiments.expect import DASK_STOP, POLL, PROMPT, SLACK, Expect, check, expected_for, params
from experiments.lab.harness import run_scenario
from experiments.lab.scenarios import hang_no_timeout, hang_with_timeout, run_timeout, task_timeout
from experiments.test_peer_libraries import BILLIARD_STOP, BILLIARD_TIMEOUT_PERIOD, MPIRE_POLL, MPIRE_STOP

# Timeout scenarios measure detection from the deadline (start + timeout): the overshoot.
# callback_monitor checks the clock only at its polls (5 s, 10 s, ...): with a 3 s limit it fires at
# the 5 s poll, 2 s late. Bounds: that 2 s, plus SLACK.
POLL_OVERSHOOT = POLL - 3.0
# as_completed's lateness at the run timeout: it raises only once its shutdown(wait=True) has run the 10 rounds of
# 2 s tasks queued on its workers, that is at least 20 s after they started, 17 s past the 3 s deadline.
DRAIN = 10 * 2.0 - 3.0

EXPECTED_RUN_TIMEOUT = {
    "pool": Expect("raised", "timeout", detect_max=PROMPT),
    "as_completed": Expect("raised", "timeout", detect_min=DRAIN - SLACK,
                           why="as_completed raises TimeoutError at the deadline, then the with-block's "
                               "shutdown(wait=True) runs all 40 queued 2 s tasks (20 s on 4 workers) before run() "
                               "raises: it is late, not hung (it was published as HANGS until issue 26)"),
    "callback_monitor": Expect("raised", "timeout", detect_min=POLL_OVERSHOOT - SLACK,
                               detect_max=POLL_OVERSHOOT + SLACK, why="fires at the first poll after the deadline"),
    "supervisor": Expect("raised", "timeout", detect_max=PROMPT, why="the wait's own timeout is the deadline"),
    "pebble_pool": Expect("raised", "timeout", detect_max=PROMPT),
    "loky_executor": Expect("raised", "timeout", detect_max=PROMPT),
    "dask_distributed": Expect("raised", "timeout", detect_max=DASK_STOP),
    "mpire_pool": Expect("raised", "timeout", detect_max=MPIRE_STOP),
    "billiard_pool": Expect("raised", "timeout", detect_max=BILLIARD_STOP,
                            why="the deadline is noticed, but terminate() waits 5 s more for the queued 2 s tasks"),
}

EXPECTED_HANG_WITH_TIMEOUT = {
    "pool": Expect("raised", "timeout", culprit=False, detect_max=PROMPT,
                   why="noticed as a whole-run timeout; terminate() ends the hung worker"),
    "as_completed": Expect("hung", left_running=True, why="shutdown(wait=True) waits for the hung task forever"),
    "callback_monitor": Expect("raised", "timeout", culprit=False, detect_max=POLL_OVERSHOOT + SLACK,
                               why="the 5 s poll sees the deadline passed, terminate() ends the hung worker"),
    "supervisor": Expect("raised", "timeout", detect_max=PROMPT),
    "pebble_pool": Expect("raised", "timeout", detect_max=PROMPT),
    "loky_executor": Expect("raised", "timeout", detect_max=PROMPT),
    "dask_distributed": Expect("raised", "timeout", detect_max=DASK_STOP,
                               why="closing the cluster waits for the hung task up to the close limits"),
    "mpire_pool": Expect("raised", "timeout", detect_max=MPIRE_STOP),
    "billiard_pool": Expect("raised", "timeout", detect_max=BILLIARD_STOP,
                            why="every other task ended before the deadline: nothing queued for terminate() to wait for"),
}

EXPECTED_HANG_NO_TIMEOUT = {
    name: Expect("hung", left_running=True, why="with no limit at all, a hang looks like slow work to every design")
    for name in ("pool", "as_completed", "callback_monitor", "supervisor", "pebble_pool", "loky_executor",
                 "dask_distributed", "mpire_pool", "billiard_pool")
}

NOT_SUPPORTED = Expect("raised", "NotImplementedError", left_running=False,
                       why="the design has no per-task limit and says so instead of ignoring task_timeout")
EXPECTED_TASK_TIMEOUT = {
    "pool": NOT_SUPPORTED,
    "as_completed": NOT_SUPPORTED,
    "callback_monitor": NOT_SUPPORTED,
    "supervisor": Expect("raised", "task_timeout", culprit=True, detect_max=PROMPT,
                         why="each task's deadline counts from when it was sent to an idle worker"),
    "pebble_pool": Expect("raised", "task_timeout", culprit=True, detect_max=PROMPT,
                          why="schedule(timeout=...): pebble stops that worker and fails that task"),
    "loky_executor": NOT_SUPPORTED,
    "dask_distributed": NOT_SUPPORTED,
    "mpire_pool": Expect("raised", "task_timeout", culprit=True, detect_max=MPIRE_POLL + MPIRE_STOP,
                         why="mpire's timeout thread (0.1 s) fails that task with TimeoutError and sends SIGUSR1, "
                             "which raises inside the job"),
    "billiard_pool": Expect("raised", "task_timeout", culprit=True, detect_max=BILLIARD_TIMEOUT_PERIOD + BILLIARD_STOP,
                            why="soft limit: billiard's timeout thread (1 s period) sends SIGUSR1 and the job raises "
                                "SoftTimeLimitExceeded, its own error"),
}


@pytest.mark.parametrize("variant", params(EXPECTED_RUN_TIMEOUT))
def test_whole_run_timeout(variant):
    o = run_scenario(variant, **run_timeout().kwargs)
    check(o, expected_for(EXPECTED_RUN_TIMEOUT, variant))
    if variant == "callback_monitor":
        assert re.fullmatch(r"Process timeout \(elapsed time: \d+\.\d\d sec / timeout threshold: 3 sec\)",
                            o.result["message"])


@pytest.mark.parametrize("variant", params(EXPECTED_HANG_WITH_TIMEOUT))
def test_worker_hangs_with_run_timeout(variant):
    sc = hang_with_timeout()
    check(run_scenario(variant, **sc.kwargs), expected_for(EXPECTED_HANG_WITH_TIMEOUT, variant),
          fault_item=sc.fault_item)


@pytest.mark.parametrize("variant", params(EXPECTED_HANG_NO_TIMEOUT))
def test_worker_hangs_without_any_timeout(variant):
    # With no limit nothing is ever noticed, so no design takes its stop path: the watchdog needs room for the
    # healthy run and each design's start-up only (stop_allowance=False).
    check(run_scenario(variant, **hang_no_timeout().kwargs, stop_allowance=False),
          expected_for(EXPECTED_HANG_NO_TIMEOUT, variant))


@pytest.mark.parametrize("variant", params(EXPECTED_TASK_TIMEOUT))
def test_worker_hangs_with_task_timeout(variant):
    sc = task_timeout()
    check(run_scenario(variant, **sc.kwargs), expected_for(EXPECTED_TASK_TIMEOUT, variant), fault_item=sc.fault_item)
