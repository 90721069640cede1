"""bench/report.py rebuilds charts, the fault matrix and README sections from raw data alone."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from types import SimpleNamespace

import pytest

from bench import report
from variants import VARIANTS


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


def _stamp():
    return {"date": "d", "python": "3.x", "implementation": "CPython", "os": "os", "kernel": "k", "cpu": "cpu",
            "cpus": 2, "memory_gib": 1.0, "start_method": "spawn", "packages": {"psutil": "1"},
            "git_commit": "abc", "git_dirty": False, "oom_cgroup": "cgroup v2 memory controller", "mode": "quick",
            "reps": 1, "bench_seconds": 61.0, "sweep_seconds": {"matrix": 30.0, "memory_tasks": 31.0}}


def test_a_missing_package_is_said_in_every_table_and_chart(tmp_path):
    """An install without an optional package (Dask, before `.[dev]` had it): its records carry the reason, and
    nothing crashes on them."""
    from bench import run

    sc = run.SCENARIOS["worker_killed"]()
    missing = [d for d in VARIANTS.values() if d.requires][:1]
    if not missing:
        pytest.skip("no design in the registry needs an optional package")
    name = missing[0].name
    raw = tmp_path / "raw"
    raw.mkdir()
    skip = {"sweep": "memory_tasks", "scenario": "healthy", "title": "healthy run", "variant": name, "workers": 4,
            "n": 10, "rep": 0, "items": 100, "fault_item": None, "status": "not_installed",
            "message": f"{name} needs a package, which is not installed"}
    measured = {"sweep": "memory_tasks", "scenario": "healthy", "variant": "supervisor", "workers": 4, "n": 10,
                "rep": 0, "items": 100, "status": "returned", "peak_rss_mb": 20.0}
    (raw / "memory_tasks.json").write_text(json.dumps({"stamp": _stamp(), "runs": [measured, skip]}))
    matrix = [_run("supervisor", "raised", "worker_died", 0.004, 2),
              skip | {"sweep": "matrix", "scenario": sc.name, "title": sc.title, "fault_item": sc.fault_item}]
    (raw / "matrix.json").write_text(json.dumps({"stamp": _stamp(), "runs": matrix}))
    report.render(tmp_path, readme=None, link_base="/elsewhere/out")
    assert (tmp_path / "memory_tasks.png").exists()
    assert "not installed" in (tmp_path / "fault_matrix.md").read_text()
    assert report.skipped_notes([skip], "items") == [f"{name}: not installed ({skip['message']})"]
    assert "](/elsewhere/out/memory_tasks.png)" in (tmp_path / "README-section.md").read_text()


def test_recovery_is_worded_as_recovery():
    back = _run("dask_distributed", "returned", detect=3.2) | {"completed": 12, "items": 12, "fault_starts": 2}
    lost = _run("pool", "returned", detect=3.2) | {"completed": 11, "items": 12, "fault_starts": 1}
    ran_once = _run("billiard_pool", "returned", detect=None) | {"completed": 16, "items": 16, "fault_starts": 1}
    assert report.cell([back])["outcome"] == "recovered: task re-ran"
    assert report.cell([lost])["outcome"] == "returned, fault not reported"
    # every item done, but the fault's task ran once: nothing was re-run, the fault simply did not stop it
    assert report.cell([ran_once])["outcome"] == "returned: every item done, the fault's task ran to its end"
    assert not report.recovered(ran_once)
    # no item at fault (a job leaves a helper and returns): the run's success is neither a re-run nor a missed fault
    helper = _run("pool", "returned", detect=0.3) | {"completed": 8, "items": 8, "fault_item": None,
                                                     "fault_starts": None, "left_running": 1}
    assert report.cell([helper])["outcome"] == "returned: every item done"
    # a design that re-runs the faulty task until the watchdog is not waiting: it loops, and the cell says so
    looping = [_run("dask_distributed", "hung") | {"fault_starts": 61},
               _run("dask_distributed", "hung") | {"fault_starts": 68}]
    assert report.cell(looping)["outcome"] == "HANGS, re-running the fault's task (61+ starts)"
    assert report.cell([_run("pool", "hung") | {"fault_starts": 1}])["outcome"] == "HANGS"


def test_the_continue_timeout_figure_is_the_lateness_past_deadline_plus_grace():
    def rec(status, kind, detect):
        return {"sweep": "continue_timeout", "title": "every worker hangs", "variant": "supervisor", "workers": 4,
                "status": status, "kind": kind, "detect": detect}

    grace = report.HUNG_GRACE
    text = report.continue_timeout_text({"continue_timeout": {"runs": [
        rec("raised", "timeout", grace + 0.012), rec("raised", "timeout", grace + 0.020),
        rec("raised", "timeout", grace + 0.015)]}})
    assert "raised timeout 15 ms after the deadline plus the grace (min–max 12 ms–20 ms, 3 run(s))" in text, text
    # a run that did not raise the timeout is said, never folded into the figure
    text = report.continue_timeout_text({"continue_timeout": {"runs": [
        rec("raised", "timeout", grace + 0.012), rec("hung", None, None)]}})
    assert "12 ms" in text and "1 run(s) ended otherwise: hung" in text, text
    assert report.continue_timeout_text({}) == ""


@pytest.mark.parametrize(("result", "accounted"), [
    ({"callback_items": [0, 1, 3], "remaining": [2, 4, 5], "callback_repeats": 0}, True),
    ({"callback_items": [0, 1, 3], "remaining": [2, 4], "callback_repeats": 0}, False),  # item 5 lost
    ({"callback_items": [0, 1, 3], "remaining": [2, 3, 4, 5], "callback_repeats": 0}, False),  # 3 done and left
    ({"callback_items": [0, 1, 2, 3, 4, 5], "remaining": [], "callback_repeats": 1}, False),  # one saved twice
    ({"callback_calls": 3, "callback_items": None, "remaining": [2, 4, 5]}, True),  # too many to list: counts
    ({"callback_items": [0, 1, 3]}, None),  # the design keeps no per-item account
])
def test_items_accounted_is_a_real_check(result, accounted):
    from bench import run

    sc = run.Scenario("x", {"items": 6})
    assert run.items_accounted(sc, result) is accounted


def test_every_repetition_is_run_whatever_the_first_did(monkeypatch):
    """Breaks if a repetition is skipped (or copied) because the one before it hung with every process idle: the
    article's design hung so in one full run and raised in the next (issue 26), so a hang proves nothing about the
    next run, and a cell whose runs differ is published as mixed."""
    from bench import run
    from experiments.lab.harness import Outcome

    calls = []

    def fake_run_scenario(variant, **kwargs):
        calls.append(variant)
        hung = len(calls) == 1
        return Outcome(variant=variant, status="hung" if hung else "raised", result=None if hung else {
                           "exc_type": "RunFailed", "kind": "worker_died", "message": "worker_died"},
                       fault_t=None, detect_latency=None if hung else 0.01, stop_latency=None, exit_latency=None,
                       lingered=False, left_running=["1 worker"] if hung else [], orphans_exit_latency=None,
                       peak_children_mb=None, memory_trace=[], stdout="", stderr="",
                       hang_evidence={"verdict": "idle"} if hung else None)

    monkeypatch.setattr(run, "run_scenario", fake_run_scenario)
    sc = run.SCENARIOS["worker_killed"]()
    reps = [run.Job("matrix", sc, "pool", 4, 10, rep, {}) for rep in (0, 1)]
    bar = SimpleNamespace(set_postfix_str=lambda *a, **k: None, update=lambda: None)
    got = [r for _, r in run.measure(reps, {"matrix": 2}, bar, defaultdict(float), {})]
    assert calls == ["pool", "pool"], "the repetition after an idle hang was not run"
    assert [r["status"] for r in got] == ["hung", "raised"], got
    assert report.cell(got)["outcome"].startswith("mixed over 2 runs: HANGS x1, raised"), report.cell(got)


# The limit each point of the test below gets. The quick point (50 empty tasks) is run again while its runs
# took under REPEAT_BUDGET (1 s), so its figure comes at most one run after that budget; one run is ~0.4 s on an
# idle machine, its 2 workers' spawn alone took 2.1 s in CI beside the other xdist workers (1.0 s here failed
# there). 4 s on top of the budget covers that run twice over.
TINY_LIMIT = 5.0
# The slow point: 4,000 tasks of 10 ms on 2 workers, 20 s of work, four times the limit on any machine.
SLOW_POINT = {"seconds": 0.01, "tasks": 4000}


def test_a_throughput_point_past_its_limit_is_killed_and_the_next_point_still_measured():
    from bench import throughput

    assert TINY_LIMIT >= throughput.REPEAT_BUDGET + 4.0
    slow, quick = dict(SLOW_POINT), {"seconds": 0.0, "tasks": 50}
    slow_out, quick_out = throughput.measure("supervisor", 2, [slow, quick], limit=TINY_LIMIT)
    assert slow_out["total"] is None and f"did not finish within {TINY_LIMIT:.0f} s" in slow_out["error"]
    assert quick_out["total"] > 0 and "error" not in quick_out, quick_out
    # its rate once up: from the 12th result (50 // 4) to the 37th, inside the same run
    assert quick_out["mid_tasks"] == 25 and 0 <= quick_out["mid"] < quick_out["total"], quick_out


def test_a_throughput_figure_is_the_best_of_its_runs_within_the_repeat_budget(monkeypatch):
    """Breaks if a short point is not run again, a slow one is, the figure is not the best run, or a short run
    (fewer tasks done) is hidden by a complete one."""
    from bench import throughput

    def fake(elapsed_done_mid):
        seq = iter(elapsed_done_mid)
        return lambda contender, workers, seconds, tasks: dict(zip(("elapsed", "done", "mid"), next(seq), strict=True),
                                                                mid_tasks=5)

    monkeypatch.setattr(throughput, "_time", fake([(0.4, 10, 0.2), (0.3, 10, 0.1), (0.25, 9, 0.15), (0.1, 10, 0.0)]))
    got = throughput._best("supervisor", 2, 0.0, 10)
    assert got == {"elapsed": 0.25, "done": 9, "runs": [0.4, 0.3, 0.25], "mid": 0.1, "mids": [0.2, 0.1, 0.15],
                   "mid_tasks": 5}, got
    monkeypatch.setattr(throughput, "_time", fake([(0.4, 10, 0.2), (0.3, 10, None), (0.2, 10, 0.1)]))
    assert throughput._best("supervisor", 2, 0.0, 10)["mid"] is None  # a run without a window: no figure
    slow = throughput.REPEAT_BUDGET + 0.1
    monkeypatch.setattr(throughput, "_time", fake([(slow, 10, 0.2), (0.1, 10, 0.1)]))
    assert throughput._best("supervisor", 2, 0.0, 10) == {"elapsed": slow, "done": 10, "runs": [slow], "mid": 0.2,
                                                          "mids": [0.2], "mid_tasks": 5}


def test_a_throughput_point_predicted_past_the_limit_is_not_run_and_says_why(monkeypatch):
    from bench import throughput

    timed = []
    monkeypatch.setattr(throughput, "measure", lambda c, w, points: timed.extend(p for p in points
                                                                                 if "total" not in p) or points)
    runs = throughput.sweep(["dask_distributed"], quick=False, per_task={"dask_distributed": 0.0055})
    dask = [r for r in runs if r["contender"] == "dask_distributed"]
    skipped = [r for r in dask if r.get("error", "").startswith("not run")]
    # 20,000 x 5.5 ms = 110 s; 8 workers x 1,000 tasks of 1 ms at 5.5 ms each = 44 s: past the 20 s limit
    assert {(r["seconds"], r["workers"]) for r in skipped} == {(0.0, 2), (0.0, 8), (0.001, 8)}
    assert "5.5 ms per tiny task" in skipped[0]["error"]
    # 2 workers x 1,000 tasks: 11 s
    assert {(r["seconds"], r["workers"]) for r in timed if r["contender"] == "dask_distributed"} == {(0.001, 2)}


def test_the_rate_once_up_is_timed_between_the_quarter_results(monkeypatch):
    """Breaks if the window is not from the (n // 4)-th to the (3n // 4)-th result, or a short run gets one."""
    from bench import throughput

    assert [throughput.window(n) for n in (1, 2, 3, 4, 8, 100)] == [(1, 1), (1, 1), (1, 2), (1, 3), (2, 6), (25, 75)]
    got = throughput._time("supervisor", 1, 0.0, 2)
    assert got["done"] == 2 and got["mid"] is None  # no window in 2 results
    clock = iter(range(0, 1000, 10))  # each call 10 "seconds" after the last: t0, the 8 results, the end
    monkeypatch.setattr(throughput, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: next(clock))}))
    monkeypatch.setattr("variants.VARIANTS", {"fake": type("V", (), {"run": staticmethod(
        lambda job, items, workers, on_result: [on_result(i, job(i)) for i in items])})()})
    got = throughput._time("fake", 1, 0.0, 8)
    assert got == {"elapsed": 90, "done": 8, "mid": 40, "mid_tasks": 4}, got  # results 2..6 arrived at 20..60


def test_the_readme_line_quotes_the_supervisors_worst_complete_point_once_up():
    """Breaks if an incomplete point, the reference, or a point without a window is quoted."""
    from bench import throughput

    def pt(c, w, d, mid, **kw):
        tasks = 1000 * w
        return {"contender": c, "variant": c, "workers": w, "seconds": d, "tasks": tasks, "total": 2.0, "mid": mid,
                "mid_tasks": tasks // 2, "mid_ideal": tasks // 2 * d / w, "nap": d * 1.1,
                "mid_ideal_nap": tasks // 2 * d * 1.1 / w, **kw}

    runs = [pt(throughput.REFERENCE, 8, 0.001, 0.9), pt("supervisor", 2, 0.001, 0.56), pt("supervisor", 8, 0.001, 0.58),
            pt("supervisor", 4, 0.001, 0.9, error="3000 of 4000 tasks done"), pt("supervisor", 1, 0.01, None)]
    line = throughput.text(runs).splitlines()[-1]
    assert "at most 1.055× the ideal" in line and "8 workers" in line, line  # 0.58 / 0.55
    assert "2 worker(s) 1 ms 1.018×" in line and "4 worker(s)" not in line and "10 ms" not in line, line
    assert "not in this raw data" in throughput.text([pt("supervisor", 2, 0.001, None)])


def test_each_phase_runs_exactly_its_runs_at_once_and_the_phases_never_overlap(monkeypatch):
    """Breaks if the runs at a time behind a figure depend on the moment (issue 26: extra runs admitted while the
    CPU looked idle), if a phase goes past its setting, or if the memory sweeps' runs share the machine with the
    fault sweeps'."""
    import threading

    from bench import run

    going: dict[str, int] = defaultdict(int)
    seen: dict[str, list[int]] = defaultdict(list)
    lock = threading.Lock()

    def fake_run_one(job):
        phase = "fault" if job.sweep in run.PHASES["fault"][0] else "memory"
        with lock:
            going[phase] += 1
            seen[phase].append(going[phase])
            assert not going["fault" if phase == "memory" else "memory"], "the two phases shared the machine"
        time.sleep(0.05)
        with lock:
            going[phase] -= 1
        return {"rep": job.rep}

    monkeypatch.setattr(run, "run_one", fake_run_one)
    sc = SimpleNamespace(name="s")
    todo = ([run.Job("matrix", sc, v, 4, n, 0, {}) for v in "abc" for n in range(4)]
            + [run.Job("memory_tasks", sc, v, 4, n, 0, {}) for v in "abc" for n in range(3)])
    bar = SimpleNamespace(set_postfix_str=lambda *a, **k: None, update=lambda: None)
    got = run.measure(todo, {"matrix": 3, "memory_tasks": 2}, bar, defaultdict(float), {})
    assert len(got) == len(todo)
    assert max(seen["fault"]) == 3 and max(seen["memory"]) == 2, dict(seen)
    # while at least as many runs as lanes were queued, every lane was busy: the load is the setting, not a moment's
    assert seen["fault"][2:9].count(3) >= 5, seen["fault"]
    assert run.concurrency(alone=True) == dict.fromkeys(run.concurrency(), 1)


def test_a_partial_run_keeps_the_designs_it_did_not_run_and_never_an_old_reference(tmp_path):
    # The bug this guards: a full run kept the old run's reference and baseline records beside its own, and
    # the README's throughput table quoted the old reference (it takes the first record of a contender).
    from bench import run

    old, new = tmp_path / "old", tmp_path / "new"
    for folder, runs in ((old, [{"variant": "pool", "total": 1.0}, {"variant": "supervisor", "total": 9.0},
                                {"variant": "ProcessPoolExecutor.map(chunksize=256)", "total": 0.16}]),
                         (new, [{"variant": "supervisor", "total": 0.2},
                                {"variant": "ProcessPoolExecutor.map(chunksize=256)", "total": 0.12}])):
        (folder / "raw").mkdir(parents=True)
        stamp = {"git_commit": "a" * 40 if folder == old else "b" * 40, "git_dirty": False, "date": str(folder)}
        (folder / "raw" / "throughput.json").write_text(json.dumps({"stamp": stamp, "runs": runs}))
    run.keep_other_variants(new, old, ran={"supervisor"})
    data = json.loads((new / "raw" / "throughput.json").read_text())
    assert sorted((r["variant"], r["total"]) for r in data["runs"]) == [
        ("ProcessPoolExecutor.map(chunksize=256)", 0.12), ("pool", 1.0), ("supervisor", 0.2)]
    # the kept record is the old run's, said so in the record and in the new stamp, never the new run's
    kept = next(r for r in data["runs"] if r["variant"] == "pool")
    assert kept["measured_by"]["git_commit"] == "a" * 40 and data["stamp"]["kept_from"] == [kept["measured_by"]]
    assert all("measured_by" not in r for r in data["runs"] if r["variant"] != "pool")
    assert report.kept_lines({"throughput": data}) == [
        f"Kept (throughput): 1 record(s) of designs that run did not run, measured by the run of {old} on commit "
        "`aaaaaaaaaa`."]


def test_overhead_times_a_slow_design_once_and_a_very_slow_one_on_a_tenth_of_the_tasks(monkeypatch):
    """Breaks if a design past TENTH_ROUND is timed on every task (a minute of Dask per bench), if one past
    SLOW_ROUND only is not timed on every task, or if a fast one loses its rounds."""
    from bench import test_overhead as oh

    monkeypatch.setattr(oh, "TASKS", 100)
    seen = []

    # A warm-up of 10 tasks that takes 20 ms: predicted 0.2 s for all 100. A sleep never ends early, so the
    # bounds below 0.2 s hold always; the 1.0 s one holds unless the 20 ms sleep overshoots to 100 ms (5x).
    def go(items):
        seen.append(len(items))
        time.sleep(0.02)

    for slow, tenth, expected in [(1.0, 2.0, (oh.ROUNDS, 100)), (0.1, 2.0, (1, 100)), (0.05, 0.1, (1, 10))]:
        monkeypatch.setattr(oh, "SLOW_ROUND", slow)
        monkeypatch.setattr(oh, "TENTH_ROUND", tenth)
        assert oh._plan(go) == expected, (slow, tenth)
    assert seen == [10, 10, 10]


def test_the_shared_runs_are_spread():
    """Breaks if a design's runs of a sweep stay bunched together."""

    from bench import run

    sc = SimpleNamespace(name="s")
    todo = [run.Job(sweep, sc, v, 4, n, 0, {}) for v in ("a", "b")
            for sweep, count in (("matrix", 6), ("memory_tasks", 2)) for n in range(count)]
    order = run.spread(todo, list(range(len(todo))))
    assert sorted(order) == list(range(len(todo)))
    memory_at = [k for k, i in enumerate(order) if todo[i].sweep == "memory_tasks"]
    assert memory_at[0] < len(order) / 2 < memory_at[-1], f"the memory runs bunched at one end: {memory_at}"
    assert [todo[i].variant for i in order[:2]] == ["a", "b"], "one design's runs first, the other's after"
    # Four designs' four payloads, largest last in each: their largest land in four different quarters.
    todo = [run.Job("memory_payload", sc, v, 4, n, 0, {}) for v in "abcd" for n in range(4)]
    order = run.spread(todo, list(range(len(todo))))
    largest_at = sorted(k * 4 // len(order) for k, i in enumerate(order) if todo[i].n == 3)
    assert largest_at == [0, 1, 2, 3], f"every design's largest payload in the same part of the bench: {largest_at}"


def test_the_stamp_line_names_the_sweeps_that_shared_the_machine():
    assert report.shared_sweeps({"overlapped": ["matrix", "latency_workers", "memory_tasks"]}) == "fault and memory sweeps"
    assert report.shared_sweeps({"overlapped": ["memory_tasks", "memory_payload"]}) == "memory sweeps"
    assert report.shared_sweeps({"overlapped": ["matrix"]}) == "fault sweeps"
    assert report.shared_sweeps({}) == "fault sweeps"  # a stamp from before the memory sweeps shared it


def test_the_durations_line_says_which_install_each_command_ran_on():
    """A stamp lists a package that is not installed with the version None: a suite measured without Dask must
    not be said to have run on the README's install, which has Dask (the render of 20f136c's record mixed them)."""
    def stamp(distributed):
        return {"date": "2026-12-04T19:57:49+00:00", "python": "3.11.7", "implementation": "CPython", "cpus": 2,
                "git_commit": "0" * 40, "git_dirty": False, "packages": {"psutil": "7", "distributed": distributed},
                "mode": "full", "sweeps": list(report.SWEEPS), "jobs": 2, "bench_seconds": 873.1}

    suite = {"seconds": 483.0, "passed": 536, "skipped": 55, "workers": 2}
    readme = report.durations_text({report.SUITE: {**suite, "stamp": stamp(None)}, "matrix": {"stamp": stamp("2026.8.0")}})
    assert "`python -m pytest` on an install without Dask took 8.1 min" in readme, readme
    assert "`python bench/run.py` on the README's install (`.[dev]`) took 14.6 min" in readme, readme
    full = report.durations_text({report.SUITE: {**suite, "stamp": stamp("2026.8.0")}})
    assert "`python -m pytest` on the README's install (`.[dev]`) took" in full, full


def test_a_cell_whose_repetitions_differ_is_published_as_mixed_never_as_the_last():
    """Breaks if a matrix cell shows one repetition's outcome when its repetitions disagree (issue 26: Dask's death
    while sending raised in one full run and hung in the next, each published as if it were the only one)."""
    raised = {"status": "raised", "kind": "worker_died", "detect": 17.6, "fault_item": 2, "item": 2,
              "culprit_named": True}
    hung = {"status": "hung", "fault_item": 2, "fault_starts": 1, "left_running": 1}
    for order in ([raised, hung], [hung, raised]):
        c = report.cell(order)
        assert c["outcome"] == "mixed over 2 runs: HANGS x1, raised worker_died x1", c["outcome"]
    assert report.cell([raised, raised])["outcome"] == "raised worker_died"


def test_the_readme_says_the_runs_at_a_time_and_the_repetitions_the_bench_uses():
    """Breaks if the README's "Runs at a time" line and the bench disagree: the fault and memory sweeps' settings,
    or a matrix row or latency point run fewer than twice (one run cannot show that its outcome differs between
    runs)."""
    from pathlib import Path

    from bench import run

    text = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert f"fault sweeps' runs (which mostly wait) {run.FAULT_RUNS} at a time, the memory sweeps' {run.MEMORY_RUNS}" in text
    assert "Every fault-matrix cell and every latency-chart point is run twice" in text
    plan = run.Plan.make(False, ["supervisor"], ["matrix", "latency_workers", "latency_payload"])
    reps = defaultdict(int)
    for job in run.jobs_for(plan):
        if job.sweep != "continue_timeout":  # a figure of its own (three runs for its spread), not a matrix cell
            reps[job.sweep, job.scenario.name, job.workers, job.n] += 1
    assert set(reps.values()) == {2}, {k: n for k, n in reps.items() if n != 2}
    assert {name for sweep, name, _, _ in reps if sweep == "matrix"} == set(run.SCENARIOS)
    assert {sweep for sweep, *_ in reps} == {"matrix", "latency_workers", "latency_payload"}
