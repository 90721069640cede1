"""Regenerate results/: raw data stamped with the machine, charts, the fault matrix, the README sections.

    python bench/run.py                 # the full run (about 20 minutes on 2 cores)
    python bench/run.py --quick         # a small version of every sweep (under 3 minutes)
    python bench/run.py --only supervisor,callback_monitor --only-sweeps matrix
    python bench/run.py --out /tmp/x    # anywhere else; README.md is rewritten only for results/

Every run goes through the same lab harness as the experiments (a fresh runner process under a
watchdog). Raw data (results/raw/*.json) is the only source of truth: ``render()`` rebuilds every
chart and table from it, and can be called alone (``--render-only``). Everything is written to a
temporary folder first and moved into place only when every sweep finished: a failed sweep leaves
the previous results untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench import report  # noqa: E402
from experiments.lab import cgroup  # noqa: E402
from experiments.lab.harness import Outcome, run_scenario  # noqa: E402
from experiments.lab.jobs import ARTICLE_N  # noqa: E402
from experiments.lab.scenarios import SCENARIOS, Scenario  # noqa: E402
from variants import VARIANTS  # noqa: E402

RESULTS = ROOT / "results"
README = ROOT / "README.md"

MEMORY_BUDGET_MB = 6000  # a run whose retained results would exceed this is not run (drawn "not run")
# dask's protocol serializes a list result element by element: ~2 s per 100,000 ints measured (see
# experiments/lab/scenarios.py). A run moving more list elements than this through it is not run.
DASK_LIST_BUDGET = 2_000_000


@dataclass
class Plan:
    quick: bool
    variants: list[str]
    sweeps: list[str]
    reps: int = 2  # the fault matrix (and the 4-worker points of the latency charts)
    sweep_reps: int = 1  # the other latency points
    matrix_scenarios: list[str] = field(default_factory=list)
    workers: tuple[int, ...] = (1, 2, 4, 8)
    payloads: tuple[int, ...] = (10**4, 10**5, 10**6, 10**7)
    task_counts: tuple[int, ...] = (100, 1000, 10_000)
    task_counts_n: int = 10**4  # small results, so even the design that keeps them all fits 10,000 tasks
    payload_items: int = 20
    trace_items: int = 100
    overhead_tasks: int = 10_000
    overhead_rounds: int = 3
    article_10k: bool = True  # supervisor at 100 vs 10,000 tasks of the article's payload

    @classmethod
    def make(cls, quick: bool, variants: list[str], sweeps: list[str]) -> Plan:
        if not quick:
            return cls(False, variants, sweeps, matrix_scenarios=list(SCENARIOS))
        # --quick: every sweep and chart exercised once, small (CI runs it; the goal is under 3 minutes)
        return cls(True, variants, sweeps, reps=1,
                   matrix_scenarios=["worker_killed", "callback_raises", "task_timeout"],
                   workers=(2, 4), payloads=(10**4, 10**6), task_counts=(50, 200), payload_items=10,
                   trace_items=30, overhead_tasks=500, overhead_rounds=1, article_10k=False)


SWEEPS = ("matrix", "latency_workers", "latency_payload", "memory_tasks", "memory_payload", "memory_trace",
          "overhead")


# -- measuring ---------------------------------------------------------------------------------------
def record(sweep: str, sc: Scenario, variant: str, workers: int, n: int, rep: int, o: Outcome) -> dict[str, Any]:
    r = o.result or {}
    report = r.get("report") or {}
    fates = report.get("fates")
    supported = r.get("exc_type") != "NotImplementedError"
    return {
        "sweep": sweep, "scenario": sc.name, "title": sc.title, "variant": variant, "workers": workers, "n": n,
        "rep": rep, "status": o.status if supported else "not_supported", "kind": o.kind,
        "exc_type": r.get("exc_type"), "message": (r.get("message") or "")[:300],
        "fault_item": sc.fault_item, "item": o.item,
        "culprit_named": sc.fault_item is not None and o.item is not None and o.item == sc.fault_item,
        "exitcode": o.exitcode, "detect": o.detect_latency, "stop": o.stop_latency, "exit": o.exit_latency,
        "lingered": o.lingered, "left_running": len(o.left_running), "left": o.left_running,
        "orphans_exit": o.orphans_exit_latency, "watchdog": sc.kwargs.get("watchdog"),
        "peak_rss_mb": r.get("peak_rss_mb"), "peak_children_mb": o.peak_children_mb,
        "completed": report.get("completed"), "fates": fates, "items_accounted": fates is not None,
        "memory_trace": o.memory_trace, "wall": o.wall,
    }


def jobs_for(plan: Plan) -> list[tuple[str, Scenario, str, int, int, int, dict[str, Any]]]:
    """Every (sweep, scenario, variant, workers, n, rep, extra) the plan runs, in order."""
    out = []
    oom_ok = cgroup.availability()[0]

    def add(sweep, make, variant, workers=4, n=None, rep=0, **extra):
        sc = make(workers=workers) if n is None else make(workers=workers, n=n)
        if "oom" in sc.needs and not oom_ok:
            return
        out.append((sweep, sc, variant, workers, sc.kwargs["job"].get("n", 0), rep, extra))

    for v in plan.variants:
        if "matrix" in plan.sweeps:
            for name in plan.matrix_scenarios:
                for rep in range(plan.reps):
                    add("matrix", SCENARIOS[name], v, rep=rep)
        if "latency_workers" in plan.sweeps:
            for fault in (report.LATENCY_FAULTS if not plan.quick else ["worker_killed"]):
                for w in plan.workers:
                    if w == 4 and "matrix" in plan.sweeps and fault in plan.matrix_scenarios:
                        continue  # the matrix already ran this point
                    for rep in range(plan.sweep_reps):
                        add("latency_workers", SCENARIOS[fault], v, workers=w, rep=rep)
        if "latency_payload" in plan.sweeps:
            for fault in (report.PAYLOAD_FAULTS if not plan.quick else ["worker_killed"]):
                for n in plan.payloads:
                    for rep in range(plan.sweep_reps):
                        add("latency_payload", SCENARIOS[fault], v, n=n, rep=rep)
        if "memory_tasks" in plan.sweeps:
            for count in plan.task_counts:
                add("memory_tasks", _healthy, v, n=plan.task_counts_n, items=count)
            if plan.article_10k and v == "supervisor":
                for count in (100, 10_000):
                    add("memory_article", _healthy, v, n=ARTICLE_N, items=count)
        if "memory_payload" in plan.sweeps:
            for n in plan.payloads:
                add("memory_payload", _healthy, v, n=n, items=plan.payload_items)
        if "memory_trace" in plan.sweeps:
            add("memory_trace", _healthy, v, n=ARTICLE_N, items=plan.trace_items, sample_memory=True)
    return out


def _healthy(workers: int = 4, n: int = ARTICLE_N) -> Scenario:
    return Scenario("healthy", {"job": {"type": "Workload", "n": n}, "items": 100,
                                "run_kwargs": {"workers": workers}, "watchdog": 900}, None, "healthy run")


def retained_mb(variant: str, n: int, items: int) -> float:
    """What a design that keeps every result would hold: only as_completed does (see its docstring)."""
    return items * n * 8 / 2**20 if variant == "as_completed" else 0.0


def run_one(job) -> dict[str, Any]:
    sweep, sc, variant, workers, n, rep, extra = job
    kwargs = dict(sc.kwargs)
    if "items" in extra:
        kwargs["items"] = extra["items"]
    if extra.get("sample_memory"):
        kwargs["sample_memory"] = True
    if retained_mb(variant, n, kwargs.get("items", 0)) > MEMORY_BUDGET_MB:
        rec = {"sweep": sweep, "scenario": sc.name, "variant": variant, "workers": workers, "n": n, "rep": rep,
               "items": kwargs["items"], "status": "not_run",
               "message": f"would retain ~{retained_mb(variant, n, kwargs['items']) / 1024:.0f} GiB of results"}
        return rec
    if variant == "dask_distributed" and n * kwargs.get("items", 0) > DASK_LIST_BUDGET:
        return {"sweep": sweep, "scenario": sc.name, "variant": variant, "workers": workers, "n": n, "rep": rep,
                "items": kwargs["items"], "status": "not_run",
                "message": f"{kwargs['items']} results of {n:,} ints: ~{n * kwargs['items'] / 50_000:.0f} s of "
                           "dask list serialization"}
    ok, why = VARIANTS[variant].available()
    if not ok:
        return {"sweep": sweep, "scenario": sc.name, "variant": variant, "workers": workers, "n": n, "rep": rep,
                "status": "not_installed", "message": why}
    o = run_scenario(variant, **kwargs)
    rec = record(sweep, sc, variant, workers, n, rep, o)
    rec["items"] = kwargs.get("items")
    return rec


def run_overhead(plan: Plan, tmp: Path) -> dict[str, Any]:
    out = tmp / "benchmark.json"
    env = dict(os.environ, BENCH_TASKS=str(plan.overhead_tasks), BENCH_ROUNDS=str(plan.overhead_rounds),
               PYTHONPATH=str(ROOT))
    # -n 0: one process (pytest-benchmark refuses to time under xdist, and timings must not share cores).
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "bench" / "test_overhead.py"), "-q", "-n", "0",
           "--benchmark-enable", f"--benchmark-json={out}", "-p", "no:randomly"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"overhead benchmark failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    data = json.loads(out.read_text())
    rows = []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if info.get("variant") in plan.variants or info.get("variant") == "plain_executor":
            rows.append({"variant": info["variant"], "tasks": info["tasks"], "workers": info["workers"],
                         "median_s": b["stats"]["median"], "min_s": b["stats"]["min"], "max_s": b["stats"]["max"],
                         "rounds": b["stats"]["rounds"]})
    return {"runs": rows, "pytest_benchmark_machine_info": data.get("machine_info", {})}


# -- stamping ----------------------------------------------------------------------------------------
def stamp(plan: Plan, started: float) -> dict[str, Any]:
    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "os": platform.platform(), "kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "start_method": "spawn",
        "packages": {p: version(p) for p in ("psutil", "memory-profiler", "matplotlib", "pytest-benchmark",
                                             "pebble", "loky", "distributed")},
        "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
        "oom_cgroup": cgroup.availability()[1], "mode": "quick" if plan.quick else "full",
        "reps": plan.reps, "bench_seconds": round(time.monotonic() - started, 1),
    }


# -- the command -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small version of every sweep (under 3 minutes)")
    ap.add_argument("--only", default="", help="comma-separated variants (default: every registered one)")
    ap.add_argument("--only-sweeps", default="", help=f"comma-separated sweeps among {', '.join(SWEEPS)}")
    ap.add_argument("--out", default=str(RESULTS), help="output folder (default: results/)")
    ap.add_argument("--render-only", action="store_true", help="rebuild charts and tables from OUT/raw only")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    variants = [v for v in (args.only.split(",") if args.only else VARIANTS) if v]
    sweeps = [s for s in (args.only_sweeps.split(",") if args.only_sweeps else SWEEPS) if s]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}; registered: {', '.join(VARIANTS)}")
    for s in sweeps:
        if s not in SWEEPS:
            ap.error(f"unknown sweep {s!r}; known: {', '.join(SWEEPS)}")
    if args.render_only:
        report.render(out, readme=README if out == RESULTS.resolve() else None)
        return 0

    plan = Plan.make(args.quick, variants, sweeps)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "raw").mkdir()
        todo = jobs_for(plan)
        by_sweep: dict[str, list[dict[str, Any]]] = defaultdict(list)
        bar = tqdm(todo, unit="run", desc="bench", dynamic_ncols=True, file=sys.stderr)
        for job in bar:
            bar.set_postfix_str(f"{job[0]} {job[1].name} {job[2]} w={job[3]}", refresh=False)
            by_sweep[job[0]].append(run_one(job))
        if "overhead" in sweeps:
            bar.write("bench: overhead (pytest-benchmark)")
            by_sweep["overhead"] = run_overhead(plan, tmp)  # type: ignore[assignment]
        st = stamp(plan, started)
        for sweep, runs in by_sweep.items():
            payload = runs if isinstance(runs, dict) else {"runs": runs}
            (tmp / "raw" / f"{sweep}.json").write_text(json.dumps({"stamp": st, **payload}, indent=1, default=repr))
        keep_other_variants(tmp, out, set(plan.variants))
        report.render(tmp, readme=None)  # render here first: a rendering error leaves `out` untouched
        install(tmp, out)
    report.render(out, readme=README if out == RESULTS.resolve() else None)
    print(f"bench: wrote {out} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


def keep_other_variants(tmp: Path, out: Path, ran: set[str]) -> None:
    """A run limited by --only / --only-sweeps keeps what it did not redo from the existing raw data."""
    for old in (out / "raw").glob("*.json") if (out / "raw").exists() else []:
        new = tmp / "raw" / old.name
        old_data = json.loads(old.read_text())
        if not new.exists():
            shutil.copy2(old, new)
            continue
        new_data = json.loads(new.read_text())
        if isinstance(new_data.get("runs"), list) and isinstance(old_data.get("runs"), list):
            kept = [r for r in old_data["runs"] if r.get("variant") not in ran]
            new_data["runs"] = kept + new_data["runs"]
            new.write_text(json.dumps(new_data, indent=1, default=repr))


def install(tmp: Path, out: Path) -> None:
    """Replace raw and derived files in ``out`` with the new set (stale ones go)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "raw").mkdir(exist_ok=True)
    for old in [*out.glob("*.png"), out / "fault_matrix.md", out / "README-section.md", *(out / "raw").glob("*.json")]:
        if old.exists():
            old.unlink()
    for f in tmp.rglob("*"):
        if f.is_file() and f.name != "benchmark.json":
            dest = out / f.relative_to(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)


if __name__ == "__main__":
    sys.exit(main())
