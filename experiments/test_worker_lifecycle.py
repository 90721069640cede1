"""Workers with a lifecycle: a memory limit per worker, recycling after N tasks, and per-worker set-up.

The article's real enemy is the kernel OOM killer, which picks its victim by size across a whole memory
cgroup (or machine): a worker, the parent, or a bystander. With ``memory_limit`` the supervisor gives each
worker a memory cgroup of its own, so crossing the limit ends only that worker, and it says so.
These options are the supervisor's; the peers' equivalents (loky's memory threshold, billiard's
max_memory_per_child, pebble's max_tasks and initializer, Dask's nanny thresholds) are not in this file yet.
"""

from __future__ import annotations

import sqlite3

import pytest

from experiments.lab import cgroup
from experiments.lab.harness import run_scenario

VARIANT = "supervisor"
LIMIT_MIB = 200
# A job that allocates twice its limit at item 3 while other tasks run: detection is one wake-up after
# the kernel's SIGKILL (measured 10-50 ms; the OOM killer's own scan comes first). PROMPT: 1 s, loaded CI.
PROMPT = 1.0


@pytest.mark.timeout(60)
def test_a_worker_over_its_memory_limit_dies_alone_and_is_named():
    ok, why = cgroup.availability()
    if not ok:
        pytest.skip(why)
    o = run_scenario(VARIANT, job={"type": "AllocateAt", "at": 3, "mb": 2 * LIMIT_MIB, "n": 1000, "delay": 0.2},
                     items=16, run_kwargs={"workers": 4, "on_error": "continue", "memory_limit": LIMIT_MIB << 20},
                     watchdog=30)
    report = o.result["report"]
    assert (o.status, o.kind, o.item, o.exitcode) == ("raised", "worker_died", 3, -9), o.stderr[-2000:]
    assert f"exceeded its memory_limit of {LIMIT_MIB} MiB" in o.result["message"], o.result["message"]
    assert report["fates"] == {"done": 15, "failed": 1, "never_run": 0}, "the other items all finished"
    assert sum("replaced worker" in n for n in report["notes"]) == 1, "one worker died: the culprit's"
    assert any("cgroup" in n and "per worker" in n for n in report["notes"]), "the mechanism is stated"
    assert o.detect_latency is not None and o.detect_latency <= PROMPT


@pytest.mark.timeout(60)
def test_the_memory_limit_without_a_cgroup_is_an_address_space_limit(monkeypatch):
    """Where no memory cgroup can be made, the job gets MemoryError (reported as that item's worker_error)."""
    from variants.supervisor import _limits

    monkeypatch.setattr(_limits, "V1_ROOT", _limits.Path("/nonexistent"))
    monkeypatch.setattr(_limits, "V2_ROOT", _limits.Path("/nonexistent"))
    from experiments.lab.jobs import AllocateAt
    from variants.contract import RunFailed
    from variants.supervisor import run

    with pytest.raises(RunFailed) as info:
        run(AllocateAt(at=1, mb=2 * LIMIT_MIB, n=10), range(4), workers=2, memory_limit=LIMIT_MIB << 20)
    assert info.value.kind == "worker_error" and info.value.item == 1
    assert "MemoryError" in str(info.value)
    assert any("RLIMIT_AS" in n for n in info.value.report.notes), info.value.report.notes


@pytest.mark.timeout(60)
def test_workers_are_recycled_after_n_tasks_and_every_item_is_done_once(tmp_path):
    db = str(tmp_path / "seen.sqlite")
    o = run_scenario(VARIANT, job={"type": "UsesInitDb", "n": 1}, items=60,
                     run_kwargs={"workers": 2, "max_tasks_per_worker": 10, "initializer": "open_db_once",
                                 "initargs": [db]}, watchdog=30)
    assert o.status == "returned", o.stderr[-2000:]
    assert o.result["callback_calls"] == 60 and o.result["callback_repeats"] == 0
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT item, pid FROM seen").fetchall()
    conn.close()
    assert sorted(item for item, _ in rows) == list(range(60)), "each item once, through the initializer's connection"
    pids = {pid for _, pid in rows}
    assert len(pids) == 6, f"60 tasks, 10 per worker: six workers, got {len(pids)}"
    assert sum("retired worker" in n for n in o.result["report"]["notes"]) >= 5


@pytest.mark.timeout(30)
def test_an_initializer_that_raises_ends_the_run_with_its_traceback():
    o = run_scenario(VARIANT, job={"type": "Workload", "n": 1}, items=10,
                     run_kwargs={"workers": 2, "initializer": "failing_initializer"}, watchdog=20)
    assert (o.status, o.kind) == ("raised", "worker_error"), o.stderr[-2000:]
    assert "initializer raised ConnectionError" in o.result["message"]
    assert o.result["callback_calls"] == 0 and not o.left_running
