"""bench/huge.py: the huge-data sweep's points, its limits, its failure records and its rendering."""

from __future__ import annotations

from bench import huge


def test_every_point_moves_enough_bytes_and_not_too_many_items():
    for size in huge.SIZES:
        n = huge.count_for(size)
        assert huge.MIN_COUNT <= n <= huge.MAX_COUNT
        assert n * size >= min(huge.TOTAL, huge.MAX_COUNT * size)
    plan = huge.points(["supervisor", "pool"], quick=False)
    assert len(plan) == 2 * len(huge.SIZES) * len(huge.DIRECTIONS)
    assert {p["variant"] for p in huge.points(["supervisor", "pool", "pebble_pool"], quick=True)} == {"supervisor",
                                                                                                     "pebble_pool"}


def test_the_machine_limits_are_measured():
    assert huge.one_pipe_rate(huge.MiB, total=16 * huge.MiB) > 0
    assert huge.memory_copy_rate(huge.MiB, total=16 * huge.MiB) > 0


def test_a_point_that_cannot_run_says_why_and_one_past_its_limit_is_stopped():
    failed = huge.measure({"variant": "no_such_design", "direction": "back", "size": 1024, "count": 8})
    assert failed["status"] == "failed" and "no_such_design" in failed["error"], failed
    slow = huge.measure({"variant": "supervisor", "direction": "back", "size": 64 << 20, "count": 64}, limit=0.5)
    assert slow == {"status": "timeout", "error": "past the 0.5 s limit"}, slow


def test_rendering_from_raw_records(tmp_path):
    runs = [{"limit": "one pipe", "size": s, "mb_s": 4000.0} for s in (huge.MiB, 8 * huge.MiB)]
    runs += [{"limit": "memory copy", "size": s, "mb_s": 20000.0} for s in (huge.MiB, 8 * huge.MiB)]
    runs += [{"variant": v, "direction": d, "size": s, "count": 8, "status": "returned", "mb_s": rate,
              "peak_mb": s / huge.MiB * 2, "wall": 1.0}
             for v, rate in (("supervisor", 900.0), ("pebble_pool", 600.0)) for d in huge.DIRECTIONS
             for s in (huge.MiB, 8 * huge.MiB)]
    runs.append({"variant": "pool", "direction": "out", "size": huge.MiB, "count": 8, "status": "timeout",
                 "error": "past the 90 s limit"})
    assert huge.chart(runs, tmp_path) == "huge.png" and (tmp_path / "huge.png").stat().st_size > 0
    table = huge.text(runs)
    assert "| `supervisor` | 900 (+2 MiB) | 900 (+16 MiB) |" in table, table
    assert "| `pool` | timeout | — |" in table, table
    assert table.count("| this machine: one pipe | 4,000 | 4,000 |") == 2, table
