"""Fault 5 of the article: the result callback ("save to the database") raises."""

from __future__ import annotations

import pytest

from experiments.expect import DASK_STOP, PROMPT, SPAWN_UP, Expect, check, expected_for, params
from experiments.lab.harness import run_scenario
from experiments.lab.scenarios import callback_raises
from experiments.test_peer_libraries import BILLIARD_STOP, MPIRE_STOP

SC = callback_raises()
# 16 tasks of 0.3 s on 4 workers: a healthy run lasts about 1.2 s; the fault is on the first wave.
HEALTHY_RUN = 1.2
# as_completed and callback_monitor notice once the rest of the run has run (1.16-1.21 s after the fault, measured
# on an idle machine). Their workers spawn on demand, so the first result can come before the last worker is up,
# and the rest of the run then waits for it too: SPAWN_UP on top (the old bound, HEALTHY_RUN + PROMPT, left 1 s
# for that). On an idle machine, noticing at the article's 5 s poll instead would come 4.3 s after this fault
# (the fault at ~0.7 s), above the 3.2 s bound; what the rows guard is that both raise, in time, not hang.
AFTER_THE_REST = HEALTHY_RUN + SPAWN_UP

EXPECTED = {
    "pool": Expect("hung", left_running=True,
                   why="the callback runs in the pool's result-handler thread; its exception kills that "
                       "thread and no further result is ever delivered"),
    "as_completed": Expect("raised", "callback_error", culprit=True, detect_max=AFTER_THE_REST,
                           why="raised in the loop, but leaving the with-block waits for every queued task"),
    "callback_monitor": Expect("raised", "callback_error", culprit=False, detect_max=AFTER_THE_REST,
                               why="the callback writes the message; noticed when shutdown() returns, "
                                   "after the remaining tasks ran (or at the 5 s poll, if sooner)"),
    "supervisor": Expect("raised", "callback_error", culprit=True, detect_max=PROMPT),
    "pebble_pool": Expect("raised", "callback_error", culprit=True, detect_max=PROMPT),
    "loky_executor": Expect("raised", "callback_error", culprit=True, detect_max=PROMPT),
    "dask_distributed": Expect("raised", "callback_error", culprit=True, detect_max=DASK_STOP),
    "mpire_pool": Expect("raised", "callback_error", culprit=True, detect_max=MPIRE_STOP),
    "billiard_pool": Expect("raised", "callback_error", culprit=True, detect_max=BILLIARD_STOP,
                            why="noticed at once, but terminate() waits 5 s more for the queued tasks (~7 s in all)"),
}


@pytest.mark.parametrize("variant", params(EXPECTED))
def test_callback_raises(variant):
    check(run_scenario(variant, **SC.kwargs), expected_for(EXPECTED, variant), fault_item=SC.fault_item)
