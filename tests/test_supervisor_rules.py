"""Each numbered rule in the supervisor's docstring, guarded by a test that fails when the rule is broken.

These run the supervisor in this process (fast, direct); the experiments run it under the lab's harness.
Each test names the regression it catches; the margins are named constants with their reasons.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
import tracemalloc

import pytest

from variants.contract import RunFailed, RunReport
from variants.supervisor import _core as sup
from variants.supervisor import _worker

# Detection is one wake-up: measured 4-10 ms on an idle 2-core machine. 0.15 s leaves 15x for a loaded CI
# machine, and a loop that sleeps 0.4 s before each wait (or polls every 0.4 s) misses it on most deaths:
# five deaths in a row all under 0.15 s happen with probability (0.15 / 0.4)^5 < 1% for such a loop.
FAST = 0.15
DEATHS = 5


def stamp_and_kill(path_and_item):
    """Write the fault time, then SIGKILL this worker."""
    path, item = path_and_item
    with open(path, "a") as f:
        f.write(json.dumps({"item": item, "t": time.monotonic()}) + "\n")
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


def raise_on_three(item):
    if item == 3:
        raise ValueError("item three is bad")  # RAISE-LINE
    return item


def identity(item):
    return item


def pdeathsig(_item):
    """The signal this process gets when its parent dies (prctl PR_GET_PDEATHSIG)."""
    sig = ctypes.c_int(0)
    ctypes.CDLL(None, use_errno=True).prctl(2, ctypes.byref(sig))  # 2 == PR_GET_PDEATHSIG
    return sig.value


@pytest.mark.timeout(60)
def test_rule1_each_death_is_noticed_at_once(tmp_path):
    """Breaks if the loop polls or sleeps before waiting: five deaths, each noticed within FAST."""
    path = str(tmp_path / "faults.jsonl")
    noticed: dict[int, float] = {}
    real_on_death = sup._Supervisor.on_death

    def timed_on_death(self, w, pipe=None):
        noticed[len(noticed)] = time.monotonic()
        return real_on_death(self, w, pipe)

    sup._Supervisor.on_death = timed_on_death
    try:
        with pytest.raises(RunFailed):
            sup.run(stamp_and_kill, [(path, i) for i in range(DEATHS)], workers=1, on_error="continue")
    finally:
        sup._Supervisor.on_death = real_on_death
    with open(path) as f:
        faults = [json.loads(line)["t"] for line in f]
    latencies = [noticed[i] - faults[i] for i in range(DEATHS)]
    assert max(latencies) < FAST, latencies


@pytest.mark.timeout(30)
def test_rule1_an_idle_stretch_costs_no_wake_ups(monkeypatch):
    """Breaks if the loop wakes on a timer: one 1.5 s task, and the loop's waits are counted."""
    calls = []
    real_wait = sup.wait_for

    def counting_wait(objects, writers, timeout):
        calls.append((len(objects), timeout))
        return real_wait(objects, writers, timeout)

    monkeypatch.setattr(sup, "wait_for", counting_wait)
    sup.run(sleep_for, [1.5], workers=1)
    # The loop's waits (a stop's bounded reap waits elsewhere, on one descriptor): the ready
    # message, the answer, the items thread's end, each an event. With no timeout, task_timeout or stopping
    # worker there is no deadline, so every one of them waits without a time limit: a loop that polls, at 0.1 s,
    # 0.4 s or 1 s, waits with that limit at least once and fails here, whatever the machine's speed.
    loop_waits = [timeout for n, timeout in calls if n > 1]
    assert loop_waits and all(timeout is None for timeout in loop_waits), loop_waits
    assert len(loop_waits) <= 8, loop_waits


@pytest.mark.timeout(30)
def test_rule1_a_blocking_source_delays_no_detection(tmp_path):
    """Breaks if items are read on the loop: a death while next(items) blocks is noticed at once."""
    path = str(tmp_path / "faults.jsonl")

    def slow_items():
        yield (path, 0)
        time.sleep(3.0)  # a paginated API taking its time
        yield (path, 1)

    t0 = time.monotonic()
    with pytest.raises(RunFailed) as info:
        sup.run(stamp_and_kill, slow_items(), workers=1)
    raised = time.monotonic()
    with open(path) as f:
        fault = json.loads(f.readline())["t"]
    assert info.value.kind == "worker_died" and info.value.item == (path, 0)
    assert raised - fault < FAST and raised - t0 < 3.0, (raised - fault, raised - t0)


@pytest.mark.timeout(30)
def test_rule2_task_timeout_counts_from_the_real_start():
    """Breaks if the deadline counts from when the item was pulled or sent: the third task waits 1.2 s
    queued behind the others (all three are pulled and sent at once), then runs 0.6 s, inside its 0.9 s."""
    report = sup.run(sleep_for, [0.6, 0.6, 0.6], workers=1, task_timeout=0.9, max_in_flight=3)
    assert report.completed == 3


@pytest.mark.timeout(30)
def test_rule2_the_task_is_charged_not_its_neighbours():
    """Breaks if a hang is charged to a queued item: 1 worker, tiny tasks queued behind a hang."""
    items = [0.0] * 50 + [30.0] + [0.0] * 50
    with pytest.raises(RunFailed) as info:
        sup.run(sleep_for, items, workers=1, task_timeout=0.5, on_error="continue")
    fates = info.value.report.fates
    assert [(f.item, f.kind) for f in fates] == [(30.0, "task_timeout")]
    assert info.value.report.completed == 100


def test_rule2_a_torn_read_of_the_slot_never_charges_from_the_epoch():
    """Breaks if a read that never sees a whole write keeps the previous STARTED: a worker preempted inside
    mark() (between POS and STARTED) showed its new task started at 0.0 after an idle mark, so the loop
    failed an innocent tiny item with task_timeout (found under load: 1 run in 8 with two CPU burners)."""
    slot = _worker.new_slot(multiprocessing.get_context("spawn"))
    _worker.mark(slot, _worker.IDLE, started=1.0)
    # the writer stopped inside mark(slot, RUNNING, 7, t0): generation odd, PHASE and POS written, STARTED not yet
    slot[_worker.GEN] += 1
    slot[_worker.PHASE] = _worker.RUNNING
    slot[_worker.POS] = 7
    before = time.monotonic()
    state = _worker.read(slot)
    assert state.phase == _worker.RUNNING and state.pos == 7 and state.started >= before, state


@pytest.mark.timeout(60)
def test_rule3_finished_items_are_counted_not_kept():
    """Breaks if the report (or the loop) keeps finished items: 200,000 tiny tasks leave nothing tracked."""
    report = sup.run(identity, range(200_000), workers=2)
    assert report.completed == report.pulled == 200_000
    assert report.fates == [] and len(report._open) == 0


# -- rule 3, large items: each is pickled once, and the read-ahead bound holds ---------------------------
PICKLED: list[int] = []


class Counted:
    """A large item that counts its picklings (in the parent only: the worker receives plain bytes)."""

    def __init__(self, size: int) -> None:
        self.data = b"x" * size

    def __reduce__(self):
        PICKLED.append(1)
        return (bytes, (self.data,))


def slow_len(data):
    time.sleep(0.02)
    return len(data)


@pytest.mark.timeout(60)
def test_rule3_a_large_item_is_pickled_once_while_the_workers_are_busy():
    """Items past BATCH_BYTES go one at a time to idle workers; a busy worker's pass must not pull one, pickle
    it and put it back (2 MiB of copying each time, on every pass of the loop, until a worker is idle)."""
    PICKLED.clear()
    report = sup.run(slow_len, (Counted(256 << 10) for _ in range(40)), workers=2)
    assert report.completed == 40
    assert len(PICKLED) == 40, f"{len(PICKLED)} picklings for 40 items"


# The unfixed reader reads the rest of a 10-item source in microseconds once past the 5th: waiting 1000 times
# that for it shows it did not. The fixed reader never reads more, however long we wait: this cannot flake.
SETTLE = 0.2


@pytest.mark.timeout(30)
def test_rule3_the_read_ahead_bound_holds_when_it_is_lowered_mid_run():
    """set_capacity() may lower the bound while the reader is filling its room: it stops at the new bound."""
    src: sup.Source

    def items():
        for i in range(10):
            if i == 4:
                src.set_capacity(2)  # called from the reading thread, inside its run of next() calls
            yield i

    src = sup.Source(items(), 100)
    src.start()
    try:
        deadline = time.monotonic() + 5
        while src.read < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(SETTLE)
        assert (src.read, len(src.buffer), src.exhausted) == (5, 5, False)
    finally:
        src.stop(lambda n: False)
    assert not src.thread.is_alive() and src.wake_r == src.wake_w == -1


# The main process's Python heap at its peak, above where it started, for FEW and then MANY tiny tasks
# (tracemalloc). Both counts must fill the whole in-flight window, or the smaller run's peak is lower only for
# holding fewer items, not for keeping less: the window is two batches per worker plus one read ahead, of up to
# BATCH_MAX each (5 x 1,024 items at 2 workers). With FEW = 2,000, under that window, the peaks were 0.54 and
# 1.54 MiB in CI (3.11), a false leak. FEW is twice the window. LEAK_BOUND is what MANY - FEW more tasks may
# add: 2 MiB over 9 x FEW (92,160 tasks) is 23 bytes per finished task, less than any object kept per task costs
# (a tuple or an item's fate: 56-120 bytes with the slot holding it), and far less than 0.5 MiB per task.
# Measured (3 runs each, one with a CPU hog beside): -0.51 to +0.46 MiB; an on_result keeping each result (an
# int and its list slot, 36 bytes) +3.0 to +3.8 MiB, which fails.
FEW = 2 * (2 * 2 + 1) * sup.BATCH_MAX
MANY = 10 * FEW
LEAK_BOUND = 2 << 20


@pytest.mark.timeout(60)
def test_rule3_the_main_process_keeps_nothing_per_finished_task():
    """Breaks if the loop keeps anything per finished task (a result, an answer, a record): its peak heap
    would grow with the task count."""
    tracemalloc.start()
    try:
        peaks = {}
        for n in (FEW, MANY):
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            report = sup.run(identity, range(n), workers=2)
            assert report.completed == n
            peaks[n] = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert peaks[MANY] - peaks[FEW] <= LEAK_BOUND, {n: f"{p / 2**20:.2f} MiB" for n, p in peaks.items()}


@pytest.mark.timeout(120)
def test_rule3_recycled_workers_are_counted_not_noted_each():
    """Breaks if each retirement adds a note: the report would grow with the task count, not what is left."""
    # 20 tasks, 2 per worker: ten workers (~2 s of starts); a note per retirement would make about ten notes.
    report = sup.run(identity, range(20), workers=2, max_tasks_per_worker=2)
    retired = [n for n in report.notes if n.startswith("retired ")]
    assert len(report.notes) == 1 and len(retired) == 1, report.notes[:5]
    assert int(retired[0].split()[1]) >= 9, retired  # 10 workers ran 2 tasks each; the last ones may not retire


# on_result blocks on its first call (a database write waiting on a lock) until BLOCK s past the run's
# TIMEOUT: the first result comes long before the timeout (workers start in ~0.5 s), so the callback is
# surely blocked when the deadline passes. run() must raise once it returns: within WAKE (one wake-up,
# a loaded machine's scheduling).
TIMEOUT, BLOCK, WAKE = 3.0, 1.0, 1.0


@pytest.mark.timeout(60)
def test_timeout_cannot_interrupt_on_result_and_fires_once_it_returns():
    """The README's promise about timeout: on_result runs in the caller's thread, so a blocked callback delays
    the timeout until it returns (then it fires at once, and what is left is exact)."""
    released: list[float] = []

    def blocked(item, result):
        if not released:
            time.sleep(max(0.0, t0 + TIMEOUT + BLOCK - time.monotonic()))
            released.append(time.monotonic())

    t0 = time.monotonic()
    with pytest.raises(RunFailed) as info:
        sup.run(identity, range(100), workers=2, timeout=TIMEOUT, on_result=blocked)
    took = time.monotonic() - released[0]
    assert info.value.kind == "timeout" and 0 <= took <= WAKE, (info.value.kind, took)
    assert info.value.report.completed + len(list(info.value.report.remaining())) == 100


@pytest.mark.parametrize("grace", [float("inf"), float("nan"), True, -1, "1"])
def test_rule4_grace_must_be_finite(grace):
    """Breaks if a grace that cannot end (inf) or is not a number passes: the stop would never reach SIGKILL."""
    with pytest.raises(ValueError, match="grace"):
        sup.run(identity, range(3), grace=grace)


@pytest.mark.timeout(30)
def test_rule4_workers_die_with_the_parent_by_the_kernel():
    """Breaks if PR_SET_PDEATHSIG is dropped: each worker asks the kernel for SIGKILL on the parent's death."""
    got = []
    sup.run(pdeathsig, range(2), workers=2, on_result=lambda item, sig: got.append(sig))
    assert got == [signal.SIGKILL, signal.SIGKILL]


# A spawned worker's start-up (an interpreter, then this package's imports): ~0.17 s measured on an idle
# 2-core machine, more on a busy one. A stop that waits for the start-ups it interrupts takes at least that
# (and leaves exit code 0, which the test checks first); a SIGTERM and a reap take a few ms, so 0.15 s leaves
# room for a loaded machine's scheduling delay and still fails such a stop.
STARTING_STOP = 0.15


@pytest.mark.timeout(30)
def test_rule4_an_orderly_stop_does_not_wait_for_workers_still_starting():
    """Breaks if the orderly stop sends the exit request to workers that are still starting: they would run
    their whole start-up first (a one-item run with 8 workers then waits for 8 start-ups on 2 cores)."""
    options = sup.Options(workers=2, on_result=None, timeout=None, task_timeout=None, on_error="abort",
                          retries=0, max_in_flight=None, grace=5.0)
    s = sup._Supervisor(identity, iter(()), options)
    s.spawn()
    s.spawn()
    procs = [w.proc for w in s.workers]
    t0 = time.monotonic()
    s.stop_all(orderly=True)
    took = time.monotonic() - t0
    assert [p.exitcode for p in procs] == [-signal.SIGTERM] * 2 and took < STARTING_STOP, (took, procs)


@pytest.mark.timeout(30)
def test_the_run_timeout_counts_from_the_reported_clock_start():
    """Breaks if the report's clock_start is dropped or is not when run() began counting: the lab times every
    timeout from it (experiments/lab/harness.py)."""
    before = time.monotonic()
    with pytest.raises(RunFailed) as e:
        sup.run(sleep_for, [30], workers=1, timeout=0.5)
    after = time.monotonic()
    start = e.value.report.clock_start
    assert start is not None and before <= start <= after - 0.5, (before, start, after)


# Run in a process of its own: it lowers that process's file-descriptor limit. For each budget of free
# descriptors from none to enough for the whole run, run() must either return or raise the OSError that
# stopped it (with the report), leave no worker running, and leave no descriptor open: a stop that itself
# needs a descriptor it cannot get, or a reader thread joined before it started, raised a different error
# and left descriptors behind.
FD_BUDGET_SCRIPT = """
import gc, json, os, resource, sys
import psutil
from variants.supervisor import _core as sup

def open_fds():
    gc.collect()  # unreachable pipes of a failed run are closed by their finalizers
    return len(os.listdir("/proc/self/fd"))

if __name__ == "__main__":
    sup.run(abs, range(3), workers=1)  # starts multiprocessing's resource tracker, which stays: not a leak
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = open_fds()
    seen = []
    for budget in range(0, 25):
        resource.setrlimit(resource.RLIMIT_NOFILE, (before + budget, hard))
        try:
            got = ["returned", sup.run(abs, range(40), workers=4).completed]
        except BaseException as e:
            got = [type(e).__name__, getattr(e, "errno", None), getattr(e, "report", None) is not None]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        left = [p.pid for p in psutil.Process().children(recursive=True) if "resource_tracker" not in " ".join(p.cmdline())]
        seen.append({"budget": budget, "got": got, "left": left, "fds": open_fds() - before})
    print(json.dumps(seen))
"""


@pytest.mark.timeout(120)
def test_rule4_no_file_descriptor_left_raises_that_error_and_leaves_nothing(tmp_path):
    """Breaks if a run that cannot get a file descriptor (a pipe, a worker, /proc for the stop) raises anything
    but that OSError with the report, or leaves a worker or a descriptor behind."""
    import errno
    import subprocess

    script = tmp_path / "fd_budget.py"
    script.write_text(FD_BUDGET_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(__file__)),
                                                       os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=100, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    for row in seen:
        assert row["got"] in (["returned", 40], ["OSError", errno.EMFILE, True]), row
        assert row["left"] == [] and row["fds"] == 0, row
    assert seen[0]["got"][0] == "OSError" and seen[-1]["got"] == ["returned", 40], seen  # both cases were met


@pytest.mark.timeout(30)
def test_rule4_a_stop_that_cannot_read_proc_still_stops_every_worker(monkeypatch):
    """Breaks if the stop's listing of the jobs' processes (/proc) raising, as it does with no file descriptor
    left, replaces the run's own error or keeps the stop from its workers' SIGKILL."""
    import errno

    from variants.supervisor import _family

    calls = []

    def no_descriptor_left(path):
        calls.append(path)
        raise OSError(errno.EMFILE, "Too many open files", path)

    monkeypatch.setattr(_family.os, "listdir", no_descriptor_left)  # os itself: restored when the test ends
    with pytest.raises(RunFailed) as e:
        sup.run(raise_on_three, range(40), workers=2)
    assert e.value.kind == "worker_error" and multiprocessing.active_children() == [], e.value
    assert "/proc" in calls  # the stop did try to list the jobs' processes, and failed


MAIN_WITHOUT_GUARD = """
import variants.supervisor as sup
sup.run(abs, range(3), workers=1)  # no `if __name__ == "__main__":` around it
print("done")
"""


@pytest.mark.timeout(60)
def test_a_main_module_without_the_main_guard_fails_with_multiprocessings_own_advice(tmp_path):
    """Breaks if the error a newcomer meets first (run() at the top level of a spawned main module) reaches the
    worker's stderr as something other than multiprocessing's own advice, or the parent does not fail fast
    with worker_died: the worker re-imports the main module, whose run() cannot spawn there."""
    import subprocess

    script = tmp_path / "no_guard.py"
    script.write_text(MAIN_WITHOUT_GUARD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(__file__)),
                                                       os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=50, env=env)
    assert done.returncode == 1 and "done" not in done.stdout, done
    assert "RunFailed: worker_died: a worker could not start" in done.stderr, done.stderr[-3000:]
    assert "freeze_support()" in done.stderr and "cannot join thread" not in done.stderr, done.stderr[-3000:]


@pytest.mark.timeout(30)
def test_rule5_remaining_is_exactly_what_is_left():
    """Breaks if remaining() misses the items never pulled or repeats done ones."""
    done = []
    with pytest.raises(RunFailed) as info:
        sup.run(raise_on_three, iter(range(1000)), workers=2, on_result=lambda i, r: done.append(i))
    left = list(info.value.report.remaining())
    assert sorted(done + left) == list(range(1000)), (len(done), len(left))
    assert left[0] == 3 or 3 in left


HAND_OVER_ITEMS = 8


def _fresh_supervisor() -> sup._Supervisor:
    """A supervisor with its items thread running and HAND_OVER_ITEMS read ahead; no worker is started."""
    options = sup.Options(workers=1, on_result=None, timeout=None, task_timeout=None, on_error="abort",
                          retries=0, max_in_flight=HAND_OVER_ITEMS, grace=1.0)
    s = sup._Supervisor(identity, iter(range(2 * HAND_OVER_ITEMS)), options)
    s.source.set_capacity(HAND_OVER_ITEMS)
    s.source.start()
    deadline = time.monotonic() + 5
    while len(s.source.buffer) < HAND_OVER_ITEMS and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(s.source.buffer) == HAND_OVER_ITEMS
    return s


class _CtrlCAtInstruction:
    """Raise KeyboardInterrupt at the ``at``-th bytecode instruction executed inside ``codes`` (0-based).

    On 3.12+ through sys.monitoring's INSTRUCTION events (PEP 669): CPython 3.12.1's sys.settrace ignores
    ``frame.f_trace_opcodes`` set from the trace function, so a settrace version of this test passed there
    without ever raising (CI on 246a628). On 3.11, sys.settrace with opcode events. ``fired`` tells whether
    the interrupt was raised; ``seen`` counts the instructions met."""

    def __init__(self, codes: set, at: int) -> None:
        self.codes, self.at, self.seen, self.fired = codes, at, 0, False

    def _step(self) -> None:
        self.seen += 1
        if self.seen == self.at + 1:
            self.fired = True
            raise KeyboardInterrupt

    def __enter__(self) -> _CtrlCAtInstruction:
        mon = getattr(sys, "monitoring", None)
        if mon is not None:
            self.tool = next(i for i in range(6) if mon.get_tool(i) is None)
            mon.use_tool_id(self.tool, "ctrl-c test")
            mon.register_callback(self.tool, mon.events.INSTRUCTION, lambda code, offset: self._step())
            for code in self.codes:
                mon.set_local_events(self.tool, code, mon.events.INSTRUCTION)
        else:
            def trace(frame, event, arg):
                if frame.f_code not in self.codes:
                    return None
                frame.f_trace_opcodes = True
                if event == "opcode":
                    self._step()
                return trace
            sys.settrace(trace)
        return self

    def __exit__(self, *exc) -> None:
        mon = getattr(sys, "monitoring", None)
        if mon is not None:
            for code in self.codes:
                mon.set_local_events(self.tool, code, 0)
            mon.register_callback(self.tool, mon.events.INSTRUCTION, None)
            mon.free_tool_id(self.tool)
        else:
            sys.settrace(None)


@pytest.mark.timeout(60)
def test_rule5_a_ctrl_c_anywhere_in_the_hand_over_loses_no_item():
    """Breaks if an item leaves the source before the report holds it (take a batch, then record it item
    by item: a Ctrl-C in between lost item 7 in CI on 3.13). A KeyboardInterrupt is raised at each bytecode
    of the hand-over in turn, one run per bytecode; after each, remaining() must yield every item once.
    Not traced: the notify to the items thread after the move (an interrupt can land between a lock's
    acquire and its ``with`` block, leaving the lock held: that is not the bookkeeping under test)."""
    hand_over = {sup._Supervisor.next_positions.__code__, sup.Source.hand_over.__code__, RunReport.track.__code__}
    boundary = 0
    while True:
        s = _fresh_supervisor()
        try:
            with _CtrlCAtInstruction(hand_over, boundary) as ctrl_c:
                s.next_positions(HAND_OVER_ITEMS)
        except KeyboardInterrupt:
            pass
        s.report.set_rest(s.source.stop(s.report.holds))
        assert list(s.report.remaining()) == list(range(2 * HAND_OVER_ITEMS)), f"Ctrl-C at bytecode {boundary}"
        if not ctrl_c.fired:
            break  # the hand-over ran to its end: every bytecode boundary was tried
        boundary += 1
    # the interrupt really reached the hand-over's bytecodes, and the last run met every one of them
    assert boundary > 10 * HAND_OVER_ITEMS and ctrl_c.seen == boundary, (boundary, ctrl_c.seen)


@pytest.mark.timeout(30)
def test_rule5_the_items_own_error_carries_the_report():
    def items():
        yield from range(5)
        raise LookupError("the source broke")

    with pytest.raises(LookupError) as info:
        sup.run(identity, items(), workers=2)
    assert info.value.report.completed + len(list(info.value.report.remaining())) == 5


@pytest.mark.timeout(30)
def test_rule6_a_worker_error_shows_the_jobs_line():
    """Breaks if the worker's traceback is dropped: the printed failure names this file and the raise line."""
    with pytest.raises(RunFailed) as info:
        sup.run(raise_on_three, range(6), workers=2)
    text = "".join(traceback.format_exception(info.value))
    assert __file__ in text and "RAISE-LINE" in text and "ValueError: item three is bad" in text
    assert info.value.report.fates[0].traceback is not None


# -- the README's promises about the options ------------------------------------------------------------
def fail_on_odd(item):
    if item % 2:
        raise ValueError(f"odd {item}")
    return item


_RUNS_FILE = None


def count_runs(path_and_item):
    """Append the item to a file each time it runs; fail the first time an item ends in 5."""
    path, item = path_and_item
    with open(path, "a") as f:
        f.write(f"{item}\n")
    with open(path) as f:
        seen = sum(line.strip() == str(item) for line in f)
    if item % 10 == 5 and seen <= 2:
        raise RuntimeError(f"flaky {item} (run {seen})")
    return item


def thread_name(item):
    return item


# Rule 7: the time from the result at a quarter of the tasks to the result at three quarters, against the
# ideal (those results x the nap's measured duration / workers), for 4,000 tasks of 1 ms on 4 workers.
# Measured: 1.015-1.022 on an idle 2-core machine, 1.07-1.10 beside two CPU-bound processes, once 1.25 in CI
# beside the other xdist workers (3.11). Broken so that a worker waits for a round trip between tasks (one item
# per batch, BATCH_MAX = 1, and nothing queued behind it): 1.33-1.39 in each of three runs, idle (7ac50bd+).
# Not caught: BATCH_MAX = 1 alone (the second queued batch hides the round trip, as the rule says), nor one
# 20 ms batch at a time (a round trip per 20 tasks, within the noise). The neighbours' load only adds time, so
# the test takes the best of BUSY_TRIES runs, which a round trip per task cannot pass. 1.2: 0.1 above the loaded
# healthy figure, 0.13 below the broken one.
BUSY_BOUND = 1.2
BUSY_TRIES = 3


@pytest.mark.timeout(60)
def test_rule7_the_workers_are_kept_busy_once_up():
    """Breaks if a worker waits for a round trip between tasks (one item at a time, nothing queued behind it)."""
    from bench import throughput

    workers, tasks = 4, 4000
    ratios = []
    for _ in range(BUSY_TRIES):
        nap = throughput._nap_seconds(0.001)
        got = throughput._time("supervisor", workers, 0.001, tasks)
        assert got["done"] == tasks
        ratios.append(got["mid"] / (got["mid_tasks"] * nap / workers))
        if ratios[-1] < BUSY_BOUND:
            break
    assert min(ratios) < BUSY_BOUND, f"{[round(r, 3) for r in ratios]}x the ideal once up; {got}"


# What a spawned worker imports of this package: its own side only (variants/supervisor/__init__.py says why).
WORKER_SIDE = ["variants", "variants.supervisor", "variants.supervisor._worker"]
PROBE_JOB = """
import sys


def ours(_):
    return sorted(name for name in sys.modules if name.split(".")[0] == "variants")
"""


@pytest.mark.timeout(60)
def test_a_worker_imports_only_its_own_side_of_the_supervisor(tmp_path, monkeypatch):
    """Breaks if a spawned worker imports the main process's side (_core, contract.py and with it dataclasses):
    about 35 ms more of every worker's start-up, paid again at each replacement after a death. Only this
    package's modules are compared: what else a worker holds depends on how the test was started (spawn
    imports the main script again, pytest's own when run as ``pytest``)."""
    (tmp_path / "probe_job.py").write_text(PROBE_JOB)  # a job module that itself imports nothing of ours
    monkeypatch.syspath_prepend(str(tmp_path))  # spawn hands sys.path to the worker
    sys.modules.pop("probe_job", None)
    try:
        import probe_job

        got = []
        sup.run(probe_job.ours, [0], workers=1, on_result=lambda item, result: got.append(result))
    finally:
        sys.modules.pop("probe_job", None)
    assert got == [WORKER_SIDE]


@pytest.mark.timeout(30)
def test_on_result_error_is_never_retried_and_continue_goes_on():
    calls = []

    def on_result(item, result):
        calls.append(item)
        if item == 2:
            raise KeyError("db down")

    with pytest.raises(RunFailed) as info:
        sup.run(identity, range(6), workers=2, on_result=on_result, retries=3, on_error="continue")
    assert info.value.kind == "callback_error" and info.value.item == 2
    assert sorted(calls) == list(range(6)), "each result reached on_result once: item 2 was not retried"
    assert info.value.report.completed == 5


@pytest.mark.timeout(30)
def test_retries_rerun_a_failed_item_exactly_n_times(tmp_path):
    path = str(tmp_path / "runs.txt")
    report = sup.run(count_runs, [(path, i) for i in range(12)], workers=2, retries=2)
    with open(path) as f:
        runs = [int(line) for line in f]
    assert report.completed == 12
    assert runs.count(5) == 3 and runs.count(0) == 1, "two failures then a success: three runs of item 5"
    assert sum("retrying item" in n for n in report.notes) == 2


@pytest.mark.timeout(30)
def test_continue_reports_the_first_failure_and_a_timeout_still_ends_the_run():
    with pytest.raises(RunFailed) as info:
        sup.run(fail_on_odd, range(8), workers=2, on_error="continue")
    assert info.value.kind == "worker_error" and info.value.item in (1, 3, 5, 7)
    assert info.value.report.completed == 4 and len(info.value.report.fates) == 4
    with pytest.raises(RunFailed) as info:
        sup.run(sleep_for, [5.0] * 4, workers=2, on_error="continue", timeout=0.5)
    assert info.value.kind == "timeout" and info.value.item is None


@pytest.mark.timeout(30)
def test_ctrl_c_carries_the_report():
    def items():
        yield 0.2
        yield 0.2
        raise KeyboardInterrupt  # as if Ctrl-C landed while the loop ran: the same exit path

    with pytest.raises(KeyboardInterrupt) as info:
        sup.run(sleep_for, items(), workers=2)
    assert info.value.report.variant == "supervisor"
    assert sorted(info.value.report.remaining()) == sorted([0.2] * (2 - info.value.report.completed))


@pytest.mark.timeout(30)
def test_on_result_runs_in_the_callers_thread_and_items_on_another():
    import threading

    seen_result, seen_items = set(), set()

    def items():
        for i in range(5):
            seen_items.add(threading.get_ident())
            yield i

    sup.run(thread_name, items(), workers=2, on_result=lambda i, r: seen_result.add(threading.get_ident()))
    assert seen_result == {threading.get_ident()}
    assert threading.get_ident() not in seen_items


@pytest.mark.timeout(60)
def test_an_explicit_max_in_flight_is_never_exceeded():
    peak = 0
    real = sup._Supervisor.dispatch

    def watched(self):
        nonlocal peak
        real(self)
        peak = max(peak, self.in_flight())

    sup._Supervisor.dispatch = watched
    try:
        sup.run(identity, range(5000), workers=2, max_in_flight=7)
    finally:
        sup._Supervisor.dispatch = real
    assert 1 <= peak <= 7, peak


@pytest.mark.timeout(30)
def test_remaining_continues_the_callers_iterator_once():
    it = iter(range(100))
    with pytest.raises(RunFailed) as info:
        sup.run(raise_on_three, it, workers=1, max_in_flight=2)
    first = list(info.value.report.remaining())
    assert 3 in first and max(first) == 99
    assert list(info.value.report.remaining()) == [f for f in first if f in info.value.report.unfinished()], \
        "read once: the second reading has only the unfinished items, the iterator is spent"
    assert next(it, None) is None


def test_oom_evidence_from_a_v2_cgroup_counts_its_own_kills_not_its_sub_cgroups(tmp_path):
    # cgroup v2: memory.events counts OOM kills in sub-cgroups too (a process the job moved into a cgroup of its
    # own, killed there, is not the worker); memory.events.local counts this cgroup's own. Files as v2 writes them.
    from variants.supervisor._oom import _cgroup_oom_kills

    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    (tmp_path / "memory.events.local").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n")
    assert _cgroup_oom_kills(tmp_path) == 0
    (tmp_path / "memory.events.local").unlink()  # a kernel before 5.2: the hierarchical count is all there is
    assert _cgroup_oom_kills(tmp_path) == 1


def test_a_worker_sends_a_large_result_at_once_and_holds_tiny_ones_back(monkeypatch):
    """Rule 3's "one batch of answers" is bounded in bytes too: once the waiting results reach FLUSH_BYTES the batch
    goes at once, so fast large results do not pile up several to a message in the main process (33 -> 37-40 MiB
    at 2,000 results of 1,000,000 ints without it). Tiny results still wait to share a message."""
    monkeypatch.setattr(_worker, "FLUSH_AFTER", 60.0)  # the age-based send stays out of the way: no timing here
    sent: list[list[tuple[object, ...]]] = []

    class Pipe:  # a message is the list of answers, then one frame per large result: put back together here
        def send(self, message: list[tuple[object, ...]]) -> None:
            sent.append(message)

        def send_bytes(self, frame: bytes) -> None:
            message = sent[-1]
            i = next(i for i, a in enumerate(message) if isinstance(a[2], int))
            assert message[i][2] == len(frame)
            message[i] = (*message[i][:2], frame, *message[i][3:])

    box = _worker._Outbox(Pipe(), _worker.new_slot(multiprocessing.get_context("spawn")))  # type: ignore[arg-type]
    for pos in range(3):
        box.put((pos, "ok", b"t", 0.0))
    box.put((3, "err", "x" * _worker.FLUSH_BYTES, "traceback", 0.0))  # a message is not a result: it waits too
    assert sent == [], "tiny answers went before they were old, numerous or large"
    big = b"x" * (_worker.FLUSH_BYTES - 2)
    box.put((4, "ok", big, 0.0))
    assert [[a[0] for a in m] for m in sent] == [[0, 1, 2, 3, 4]], "the batch did not go once its results were large"
    box.put((5, "ok", b"y" * _worker.FLUSH_BYTES, 0.0))
    assert [[a[0] for a in m] for m in sent][1:] == [[5]], "a result of FLUSH_BYTES alone waited"


# -- faults at every phase of a worker's life (_worker.PHASES), and the regressions the review found ---------------

def sleep_or_hold_the_gil(item):
    """``"gil"``: a computation in C that never releases the GIL (the worker's answers thread cannot run)."""
    if item == "gil":
        return sum(range(10**12))
    return item


@pytest.mark.timeout(60)
def test_rule2_each_task_of_a_batch_is_timed_from_its_own_start():
    """Breaks if a task's start is read once per batch: after 2,000 tiny tasks the batches hold hundreds, so three
    0.3 s tasks share one, and counted from the batch's start the third passes task_timeout=0.5 (0.9 s)."""
    report = sup.run(sleep_for, [0.0] * 2000 + [0.3] * 3, workers=1, task_timeout=0.5)
    assert report.completed == 2003


@pytest.mark.timeout(60)
def test_rule2_a_hang_that_holds_the_gil_is_charged_to_the_running_task():
    """Breaks if a hang is charged to the first task the parent has no answer for: a job stuck in C code holding
    the GIL stops the worker's answers thread too, so the answers of the tiny tasks before it are still in the
    worker, and the first unanswered task is one of them, not the one running."""
    items = [0] * 300 + ["gil"] + [0] * 10
    with pytest.raises(RunFailed) as info:
        sup.run(sleep_or_hold_the_gil, items, workers=1, task_timeout=1.0, on_error="continue")
    assert [(f.item, f.kind) for f in info.value.report.fates] == [("gil", "task_timeout")]
    assert info.value.report.completed == 310


def start_helper(ignore_hup):
    """Start `sleep` (with SIGHUP ignored, if asked: a helper that a lost terminal or an orphaned group does not
    end) and return its pid without waiting for it."""
    import subprocess

    helper = subprocess.Popen(["sleep", "3600"], preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
                              if ignore_hup else None)
    return helper.pid


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except OSError:
        return False


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ignore_hup", [False, True])
def test_rule4_a_helper_a_job_started_and_left_does_not_outlive_a_successful_run(ignore_hup):
    """Breaks if the final signal to what the jobs started is dropped from the stop: the run succeeds, each job
    left a `sleep` running, and once run() returned none of them is alive."""
    pids = []
    sup.run(start_helper, [ignore_hup] * 2, workers=2, on_result=lambda item, pid: pids.append(pid))
    deadline = time.monotonic() + 1.0  # the helpers got SIGKILL before run() returned; this only lets them be reaped
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pids) == 2 and not any(map(_alive, pids)), [p for p in pids if _alive(p)]


@pytest.mark.timeout(30)
def test_rule6_continue_mode_keeps_the_jobs_traceback():
    """Breaks if on_error="continue"'s final RunFailed drops the cause: its __cause__ is the first failure's
    traceback from the worker, naming this file's RAISE-LINE."""
    with pytest.raises(RunFailed) as info:
        sup.run(raise_on_three, range(6), workers=2, on_error="continue")
    cause = info.value.__cause__
    assert cause is not None and "RAISE-LINE" in str(cause) and "raise_on_three" in str(cause), repr(cause)
    assert info.value.item == 3


def close_fds_at_one(item):
    if item == 1:
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        time.sleep(30)  # lives on without its pipe: only the pipe's EOF can tell
    return item


@pytest.mark.timeout(30)
def test_a_pipe_that_breaks_while_the_worker_lives_is_charged_at_once():
    """Breaks if EOF on a live worker's pipe is taken for its death (waited for, then let go): the job closes the
    worker's descriptors and sleeps 30 s; the run must fail within FAST, naming item 1, with no worker left."""
    t0 = time.monotonic()
    with pytest.raises(RunFailed) as info:
        sup.run(close_fds_at_one, range(4), workers=1)
    assert time.monotonic() - t0 < 5.0, "the pipe's EOF was not acted on"  # 30 s if it waits for the sleep
    assert info.value.kind == "worker_died" and info.value.item == 1, info.value
    assert "pipe broke" in str(info.value) and multiprocessing.active_children() == []


def fork_a_copy_at_one(how):
    """At item 1, fork: the copy returns the job's value (or calls sys.exit) and so comes back into the worker's
    task loop, while the worker itself returns its own answer."""
    item, mode = how
    if item == 1 and os.fork() == 0:
        if mode == "exit":
            sys.exit(3)
        time.sleep(0.2)  # the worker answers first; the copy then runs on with the worker's queue
        return ("copy", os.getpid())
    return ("worker", os.getpid())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["return", "exit"])
def test_only_the_worker_answers_for_its_tasks(mode):
    """Breaks if a forked copy of a worker can report in its name: every item is answered once, by a worker."""
    seen = []
    report = sup.run(fork_a_copy_at_one, [(i, mode) for i in range(6)], workers=1,
                     on_result=lambda item, result: seen.append((item[0], result[0])))
    assert report.completed == 6 and sorted(seen) == [(i, "worker") for i in range(6)], seen


def inner_pool(item):
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(abs, -item).result(timeout=30)


@pytest.mark.timeout(60)
def test_a_job_may_use_a_process_pool_of_its_own():
    """Breaks if workers are daemons again (multiprocessing refuses children to a daemon)."""
    results = []
    sup.run(inner_pool, [1, 2], workers=2, on_result=lambda item, result: results.append(result))
    assert sorted(results) == [1, 2]


# How long die_soon's thread waits for its worker to be idle before it kills it anyway (the test then fails on the
# phase its error names): a worker is idle within milliseconds of its initializer; 5 s is for a loaded machine.
IDLE_WAIT_LIMIT = 5.0


def die_soon():
    """An initializer that leaves a thread to SIGKILL this worker once it waits for work: its main thread blocked in
    ``conn.poll`` in ``_worker.main``, which it only reaches idle. (A fixed 0.1 s once landed, on a loaded
    machine, while the worker was still in its initializer: a different phase, so a different error.)"""
    import sys
    import threading

    main = threading.main_thread().ident

    def idle() -> bool:
        frame, names = sys._current_frames().get(main), set()
        while frame is not None:
            names.add(frame.f_code.co_name)
            frame = frame.f_back
        return {"main", "poll"} <= names and "die_soon" not in names

    def later():
        deadline = time.monotonic() + IDLE_WAIT_LIMIT
        while not idle() and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=later, daemon=True).start()


@pytest.mark.timeout(60)
def test_deaths_with_no_item_in_play_end_the_run_past_the_budget():
    """Breaks if a worker that keeps dying between tasks is replaced without end: each worker dies as soon as it is
    idle, since the items source has nothing more for a while; past DEATH_BUDGET deaths in a row with no
    item in play and nothing answered the run fails as worker_died saying where, and its notes stay bounded."""
    import threading

    more = threading.Event()

    def items():
        yield 0
        more.wait(30)  # a slow source: meanwhile every replacement dies idle

    t0 = time.monotonic()
    try:
        with pytest.raises(RunFailed) as info:
            sup.run(identity, items(), workers=1, initializer=die_soon)
    finally:
        more.set()
    assert time.monotonic() - t0 < 10.0
    assert info.value.kind == "worker_died" and "keep dying while idle" in str(info.value), info.value
    assert len(info.value.report.notes) <= 2 * sup.NOTES_PER_KIND + 2, info.value.report.notes


def die_on_exit(x):
    """Return ``x``, and leave a finalizer that SIGKILLs this worker as it exits (after it was told to exit and
    handed over its last answers): a library's exit hook that crashes."""
    from multiprocessing import util

    util.Finalize(None, os.kill, args=(os.getpid(), signal.SIGKILL), exitpriority=100)
    return x


@pytest.mark.timeout(60)
def test_a_death_while_exiting_loses_nothing_and_is_noted():
    """Breaks if a worker that dies once told to exit (phase exiting: every answer of it already handed over) is
    taken for a fault of an item, or makes the run wait or fail: with max_tasks_per_worker=1 every worker is
    retired after one task and dies in its exit; every item is still done once, and the deaths are noted."""
    results: list[int] = []
    report = sup.run(die_on_exit, range(8), workers=2, max_tasks_per_worker=1,
                     on_result=lambda item, result: results.append(result))
    assert sorted(results) == list(range(8)) and report.completed == 8
    assert any("exit code -9" in n for n in report.notes), report.notes
    assert len(report.notes) <= 2 * sup.NOTES_PER_KIND + 2, report.notes


# -- a worker stopped or killed half-way through receiving a large item (the loop writes it as the pipe takes it) ---
BIG_ITEM = 16 << 20  # far more than a pipe holds (a socket's buffer: ~208 KiB by default, 4 MiB at most here)


def pid_and_len(item):
    return os.getpid(), len(item)


@pytest.mark.timeout(60)
def test_a_worker_stopped_while_it_receives_a_large_item_holds_up_no_other():
    """Breaks if the loop writes an item in one blocking call: the first worker to answer is SIGSTOPped, so the
    next large item sent to it stays half-written; the loop must go on with the other worker, and task_timeout
    stop the stopped one (its item runs elsewhere). A blocking write hangs the loop, and the run, for good."""
    stopped: list[int] = []

    def on_result(item, result):
        if not stopped:
            os.kill(result[0], signal.SIGSTOP)
            stopped.append(result[0])

    report = sup.run(pid_and_len, (bytes(BIG_ITEM) for _ in range(8)), workers=2, task_timeout=2.0, grace=0.2,
                     on_result=on_result)
    assert report.completed == 8
    assert any(f"worker pid {stopped[0]}" in n and "without starting one" in n for n in report.notes), report.notes
    assert multiprocessing.active_children() == []


@pytest.mark.timeout(60)
def test_a_worker_killed_while_it_receives_a_large_item_loses_no_item():
    """Breaks if a worker that dies with an item half-written to it blocks the loop, charges that item, or loses
    it: the first worker to answer is SIGSTOPped (the next item sent to it stays half-written), then SIGKILLed
    at the other worker's next answer; its item was never received, so it runs elsewhere and the run succeeds."""
    stopped: list[int] = []

    def on_result(item, result):
        if not stopped:
            os.kill(result[0], signal.SIGSTOP)
            stopped.append(result[0])
        elif len(stopped) == 1 and result[0] != stopped[0]:
            os.kill(stopped[0], signal.SIGKILL)
            stopped.append(result[0])

    report = sup.run(pid_and_len, (bytes(BIG_ITEM) for _ in range(8)), workers=2, on_result=on_result)
    assert report.completed == 8 and len(stopped) == 2
    assert any(f"worker pid {stopped[0]}, no item in play" in n and "SIGKILL" in n for n in report.notes), report.notes
    assert multiprocessing.active_children() == []


def test_bytes_a_broken_pipe_cannot_take_are_dropped_not_raised():
    """Breaks if a failed write to a worker raises out of the loop, or is retried without end: the worker died
    between the loop's wait and its write (a run rarely gets there: the loop reads the pipe's EOF before it writes).
    Its death is charged by its exit fd and EOF, as any other; the bytes it can no longer take are dropped."""
    import socket
    from types import SimpleNamespace

    from variants.supervisor._inbox import Outgoing

    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        w = SimpleNamespace(out=Outgoing(ours.fileno()))
        sup._Supervisor.write(None, w)  # type: ignore[arg-type]  (nothing waiting: nothing written)
        w.out.put([bytes(BIG_ITEM)])
        sup._Supervisor.write(None, w)  # type: ignore[arg-type]
        assert w.out, "the pipe took a whole item: it cannot be half-written here"
        theirs.close()
        sup._Supervisor.write(None, w)  # type: ignore[arg-type]
        assert not w.out


def test_the_parent_keeps_a_frame_buffer_for_the_next_only_up_to_spare_max():
    """Breaks if a worker's inbox keeps the buffer of a frame larger than SPARE_MAX (rule 3: the parent would hold
    workers x the largest result beyond what it reads, 4 x 19 MiB with the memory sweep's 10^7-int results)."""
    from variants.supervisor import _inbox

    box = _inbox.Inbox(-1)
    small = box._buffer(_inbox.SPARE_MAX)
    assert box.spare is not None and len(small) == _inbox.SPARE_MAX
    kept = box.spare
    large = box._buffer(_inbox.SPARE_MAX + 1)
    assert box.spare is kept and len(large) == _inbox.SPARE_MAX + 1, "a frame past SPARE_MAX replaced the spare"
