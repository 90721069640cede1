"""20,000 tiny tasks, one that never returns, a 2 s run timeout: does the design survive its own walk?

The article's monitor iterates the executor's private ``_pending_work_items`` from its own thread
while the executor's manager thread deletes finished items from it, then cancels futures under the
executor. What happens depends on the Python version (see EXPECTED and the note in README).
"""

from __future__ import annotations

import pytest

from experiments.expect import DASK_STOP, PROMPT, Expect, check, expected_for, params
from experiments.lab.harness import run_scenario
from experiments.lab.scenarios import many_tiny_tasks
from experiments.test_peer_libraries import BILLIARD_STOP, MPIRE_STOP

SC = many_tiny_tasks()
# Submitting 20,000 items takes the main thread a second or more before it can even wait; the
# deadline is counted from run()'s start, so designs that wait after submitting overshoot by that.
SUBMIT = 2.0

EXPECTED = {
    "pool": Expect("raised", "timeout", detect_max=SUBMIT + PROMPT),
    "as_completed": Expect("hung", left_running=True, why="shutdown(wait=True) waits for the hung task"),
    "callback_monitor": Expect("hung", left_running=True,
                               why="at the 5 s poll the monitor thread dies walking _pending_work_items "
                                   "(RuntimeError: dictionary changed size during iteration); the timeout "
                                   "it just wrote is never acted on and shutdown() waits for the hung task"),
    "supervisor": Expect("raised", "timeout", detect_max=PROMPT,
                         why="items are pulled lazily: no submit phase, the deadline is the wait's timeout"),
    "pebble_pool": Expect("raised", "timeout", detect_max=PROMPT),
    "loky_executor": Expect("raised", "timeout", detect_max=PROMPT),
    "dask_distributed": Expect("raised", "timeout", detect_max=DASK_STOP),
    "mpire_pool": Expect("raised", "timeout", detect_max=MPIRE_STOP),
    "billiard_pool": Expect("raised", "timeout", detect_max=BILLIARD_STOP,
                            why="the timeout is noticed, but terminate() waits 5 s more for the queued tasks"),
}


@pytest.mark.parametrize("variant", params(EXPECTED))
def test_many_tiny_tasks_one_hangs(variant):
    o = run_scenario(variant, **SC.kwargs)
    check(o, expected_for(EXPECTED, variant))
    if variant == "callback_monitor":
        assert "RuntimeError: dictionary changed size during iteration" in o.stderr, o.stderr[-3000:]
