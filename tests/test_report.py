"""bench/report.py rebuilds charts, the fault matrix and README sections from raw data alone."""

from __future__ import annotations

import json

from bench import report


def _run(variant, status, kind=None, detect=None, item=None):
    return {"sweep": "matrix", "scenario": "worker_killed", "title": "a worker is SIGKILLed from outside",
            "variant": variant, "workers": 4, "n": 10, "rep": 0, "status": status, "kind": kind, "exc_type": None,
            "fault_item": 2, "item": item, "culprit_named": item == 2, "exitcode": -9 if item else None,
            "detect": detect, "stop": None, "exit": 0.01, "lingered": False, "left_running": 0 if detect else 5,
            "orphans_exit": None, "watchdog": 5.0, "items_accounted": item is not None}


def test_render_from_raw_only(tmp_path):
    (tmp_path / "raw").mkdir()
    stamp = {"date": "d", "python": "3.x", "implementation": "CPython", "os": "os", "kernel": "k", "cpu": "cpu",
             "cpus": 2, "memory_gib": 1.0, "start_method": "spawn", "packages": {"psutil": "1"},
             "git_commit": "abc", "git_dirty": False, "oom_cgroup": "none", "mode": "quick", "reps": 1,
             "bench_seconds": 1.0}
    runs = [_run("pool", "hung"), _run("supervisor", "raised", "worker_died", 0.004, 2)]
    (tmp_path / "raw" / "matrix.json").write_text(json.dumps({"stamp": stamp, "runs": runs}))
    (tmp_path / "stale.png").write_text("old")
    readme = tmp_path / "README.md"
    readme.write_text("top\n<!-- bench:designs:begin -->\nold\n<!-- bench:designs:end -->\n"
                      "<!-- bench:results:begin -->\nold\n<!-- bench:results:end -->\nbottom\n")
    report.render(tmp_path, readme=readme)
    assert not (tmp_path / "stale.png").exists(), "stale derived files are removed"
    assert (tmp_path / "latency_vs_workers.png").exists()
    matrix = (tmp_path / "fault_matrix.md").read_text()
    assert "HANGS" in matrix and "raised worker_died" in matrix and "4 ms" in matrix
    text = readme.read_text()
    assert text.startswith("top\n") and text.endswith("bottom\n") and "old" not in text
    assert "raised worker_died in 4 ms, item named" in text
