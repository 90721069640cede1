"""bench/compare.py: two runs compared cell by cell; an outcome that flips fails, a figure that moves is listed."""

from __future__ import annotations

import json

from bench import compare, run
from tests.test_report import _run


def _write(folder, runs, overhead=None):
    (folder / "raw").mkdir(parents=True)
    stamp = {"git_commit": "0" * 40, "git_dirty": False, "date": "d"}
    (folder / "raw" / "matrix.json").write_text(json.dumps({"stamp": stamp, "runs": runs}))
    if overhead:
        rows = [{"variant": v, "tasks": 1000, "workers": 2, "median_s": s, "min_s": s, "max_s": s, "rounds": 3}
                for v, s in overhead.items()]
        (folder / "raw" / "overhead.json").write_text(json.dumps({"stamp": stamp, "runs": rows}))


def test_a_flipped_outcome_fails_and_a_moved_figure_is_listed(tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    _write(old, [_run("supervisor", "raised", "worker_died", 0.007, 2),
                 _run("pebble_pool", "raised", "worker_died", 0.04, 2),
                 _run("loky_executor", "raised", "worker_died", 0.010, 2), _run("pool", "hung")],
           overhead={"plain_executor": 1.0, "loky_executor": 3.5, "supervisor": 0.08})
    _write(new, [_run("supervisor", "raised", "worker_died", 0.012, 2),
                 _run("pebble_pool", "raised", "worker_died", 0.09),
                 _run("loky_executor", "raised", "worker_died", 0.300, 2), _run("pool", "hung")],
           overhead={"plain_executor": 1.0, "loky_executor": 1.26, "supervisor": 0.09})
    flips, races, drifts, compared = compare.compare(compare.load_dir(old), compare.load_dir(new))
    assert compared == 4 + 2
    assert [f.split(" | ")[1] for f in flips] == ["`pebble_pool`"], flips  # item named -> no item: a flip
    assert any("`loky_executor` | detection 10 ms | 300 ms" in d for d in drifts), drifts
    assert any("overhead | `loky_executor` | 3.50× | 1.26×" in d for d in drifts), drifts
    assert not any("supervisor" in d for d in drifts), "7 ms against 12 ms is within the absolute floor"
    assert compare.main([str(old), str(new)]) == 1
    assert "1 flipped" in capsys.readouterr().out


def test_tolerance():
    assert compare.agree(0.007, 0.012) and compare.agree(1.0, 1.9) and compare.agree(None, None)
    assert not compare.agree(1.0, 2.1) and not compare.agree(0.01, 0.3) and not compare.agree(None, 0.1)


def test_a_run_is_stamped_dirty_when_the_code_moved_while_it_ran():
    start = run.code_state()
    assert run.code_state(start)["git_commit"] == start["git_commit"]
    moved = run.code_state({"git_commit": "0" * 40, "git_dirty": False})
    assert moved == {"git_commit": "0" * 40, "git_dirty": True}


def test_a_looping_design_is_the_same_cell_whatever_its_count_of_re_runs(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    _write(old, [_run("dask_distributed", "hung") | {"fault_starts": 45}])
    _write(new, [_run("dask_distributed", "hung") | {"fault_starts": 50}])
    flips, races, drifts, compared = compare.compare(compare.load_dir(old), compare.load_dir(new))
    assert (flips, races, drifts, compared) == ([], [], [], 1)


def test_where_every_item_is_at_fault_any_item_named_is_the_culprit():
    from experiments.lab.harness import Outcome
    from experiments.lab.scenarios import worker_raises, worker_raises_every

    def outcome(item):
        return Outcome(variant="pool", status="raised", result={"kind": "worker_error", "item": item}, fault_t=0.0,
                       detect_latency=0.01, stop_latency=None, exit_latency=0.01, lingered=False, left_running=[],
                       orphans_exit_latency=None, peak_children_mb=None, memory_trace=[], stdout="", stderr="")

    every, one = worker_raises_every(), worker_raises()
    assert run.record("matrix", every, "pool", 4, 1, 0, outcome(7))["culprit_named"] is True
    assert run.record("matrix", every, "pool", 4, 1, 0, outcome(None))["culprit_named"] is False
    assert run.record("matrix", one, "pool", 4, 1, 0, outcome(one.fault_item + 1))["culprit_named"] is False


def test_a_huge_data_rate_that_moved_by_more_than_half_is_a_drift(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    for folder, rates in ((old, (700, 800)), (new, (680, 300))):
        _write(folder, [_run("supervisor", "raised", "worker_died", 0.007, 2)])
        runs = [{"variant": "supervisor", "direction": d, "size": 1 << 20, "mb_s": r, "status": "returned"}
                for d, r in zip(("back", "out"), rates, strict=True)] + [{"limit": "one pipe", "size": 1 << 20, "mb_s": 9}]
        (folder / "raw" / "huge.json").write_text(json.dumps({"stamp": {}, "runs": runs}))
    flips, races, drifts, compared = compare.compare(compare.load_dir(old), compare.load_dir(new))
    assert compared == 1 + 2 and not flips
    assert drifts == ["huge data, out 1,024 KiB | `supervisor` | 800 MB/s | 300 MB/s"], drifts


def test_a_latency_chart_point_is_compared_like_a_matrix_cell(tmp_path):
    """Breaks if the latency charts' points are left out: one run of the article's design raised at 10^7-int
    results and the next full run hung there, and nothing compared them (issue 26)."""
    old, new = tmp_path / "old", tmp_path / "new"
    for folder, status in ((old, "raised"), (new, "hung")):
        _write(folder, [_run("supervisor", "raised", "worker_died", 0.007, 2)])
        runs = [_run("callback_monitor", status, "callback_error" if status == "raised" else None,
                     0.7 if status == "raised" else None) | {"sweep": "latency_payload", "n": 10**7}]
        (folder / "raw" / "latency_payload.json").write_text(json.dumps({"stamp": {}, "runs": runs}))
    flips, races, drifts, compared = compare.compare(compare.load_dir(old), compare.load_dir(new))
    assert compared == 1 + 1 and not drifts, (compared, drifts)
    assert flips == ["a worker is SIGKILLed from outside, 10,000,000 ints per result | `callback_monitor` | "
                     "raised callback_error, no item | HANGS, no item"], flips


def test_a_mixed_cell_against_one_of_its_outcomes_is_a_race_and_against_another_a_flip(tmp_path):
    """Breaks if a design whose outcome depends on timing (measured both ways within one bench run) fails the
    comparison for showing one of its outcomes in the other run, or if an outcome no run saw passes as a race."""
    old, new = tmp_path / "old", tmp_path / "new"
    _write(old, [_run("billiard_pool", "hung"), _run("billiard_pool", "raised", "worker_died", 2.0, 2) | {"rep": 1},
                 _run("pebble_pool", "hung"), _run("pebble_pool", "raised", "worker_died", 0.2, 2) | {"rep": 1}])
    _write(new, [_run("billiard_pool", "hung"), _run("billiard_pool", "hung") | {"rep": 1},
                 _run("pebble_pool", "returned"), _run("pebble_pool", "returned") | {"rep": 1}])
    flips, races, drifts, compared = compare.compare(compare.load_dir(old), compare.load_dir(new))
    assert compared == 2 and not drifts
    assert [r.split(" | ")[1] for r in races] == ["`billiard_pool`"], races
    assert [f.split(" | ")[1] for f in flips] == ["`pebble_pool`"], flips
