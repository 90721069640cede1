"""bench/summary.py: the closing lines of a bench run, on a small made-up set of records (no sweep is run)."""

from __future__ import annotations

import copy
from pathlib import Path

from bench import summary


def _run(variant, status, kind=None, **more):
    return {"sweep": "matrix", "scenario": "worker_killed", "variant": variant, "workers": 4, "n": 10,
            "items": None, "rep": 0, "status": status, "kind": kind} | more


def _records():
    matrix = [_run("pool", "hung"), _run("pool", "hung", rep=1),
              _run("supervisor", "raised", "worker_died"),
              _run("mpire_pool", "not_installed", message="mpire is not installed")]
    throughput = {"runs": [
        {"contender": "supervisor", "workers": 2, "seconds": 0.0, "tasks": 500, "total": 0.4},
        {"contender": "dask_distributed", "workers": 2, "seconds": 0.0, "tasks": 500, "total": None,
         "error": "not run: ~77 s predicted from the overhead sweep (3.9 ms per tiny task), past the 20 s limit"},
        {"contender": "pool", "workers": 2, "seconds": 0.001, "tasks": 200, "total": None,
         "error": "did not finish within 20 s"}]}
    overhead = {"runs": [{"variant": "supervisor", "tasks": 500, "workers": 2, "median_s": 0.5}]}
    return {"matrix": matrix, "throughput": throughput, "overhead": overhead}


def _raw(by_sweep):
    return {f"{name}.json": (data if isinstance(data, dict) else {"runs": data}) | {"stamp": {}}
            for name, data in by_sweep.items()}


def _summary(by_sweep, old_raw, plan_skips=()):
    return "\n".join(summary.summary(
        files=[Path("/tmp/q/raw/matrix.json"), Path("/tmp/q/fault_matrix.md")], seconds=95.4,
        sweep_seconds={"matrix": 60.0, "throughput": 20.0}, by_sweep=by_sweep, plan_skips=list(plan_skips),
        new_raw=_raw(by_sweep), old_raw=old_raw))


def test_the_summary_names_files_duration_and_every_skip_with_its_reason():
    by_sweep = _records()
    text = _summary(by_sweep, None, ["memory_tasks: worker_oom (needs a real OOM kill: no cgroup v2)"])
    assert "95 s (1.6 min)" in text and "matrix 60 s" in text, text
    assert "/tmp/q/raw/matrix.json" in text and "/tmp/q/fault_matrix.md" in text, text
    assert "matrix: mpire_pool not_installed: mpire is not installed" in text, text
    assert "throughput: dask_distributed: not run: ~77 s predicted" in text, text
    assert "throughput: pool: did not finish within 20 s" in text, text
    assert "needs a real OOM kill: no cgroup v2" in text, text
    assert "skipped (4):" in text, text
    assert "no committed run to compare" in text, text


def test_the_summary_counts_the_outcome_cells_that_changed_against_the_committed_run():
    by_sweep = _records()
    old = copy.deepcopy(by_sweep)
    old["matrix"][0]["status"] = "raised"  # the committed run: pool raised where it now hangs
    old["matrix"][0]["kind"] = "worker_died"
    old["throughput"]["runs"][2].update(total=3.0, error=None)  # ... and pool's point finished
    old["matrix"].append(_run("billiard_pool", "raised", "worker_died"))  # a design only the committed run has
    old_raw = _raw(old) | {"memory_tasks.json": None}
    new = by_sweep | {"memory_tasks": [_run("supervisor", "returned", sweep="memory_tasks", scenario="healthy")]}
    text = _summary(new, old_raw)
    assert "matrix.json: 1 of 4 outcome cells changed (1 only in the committed run)" in text, text
    assert "worker_killed pool 4 10 0: raised worker_died -> hung" in text, text
    assert "throughput.json: 1 of 3 outcome cells changed" in text, text
    assert "throughput pool 2 0.001: finished -> did not finish within 20 s" in text, text
    assert "memory_tasks.json: not in the committed run (1 outcome cells, all new)" in text, text
    assert "overhead.json" not in text.split("against the committed run:")[1], "timings are not outcomes"


def test_no_change_is_said_as_zero():
    by_sweep = _records()
    text = _summary(by_sweep, _raw(copy.deepcopy(by_sweep)))
    assert "matrix.json: 0 of 4 outcome cells changed" in text and "->" not in text, text
