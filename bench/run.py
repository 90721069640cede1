"""Regenerate results/: raw data stamped with the machine, charts, the fault matrix, the README sections.

    python bench/run.py                 # the full run (its measured duration is in the README's stamp)
    python bench/run.py --quick         # a small version of every sweep (under 2 minutes)
    python bench/run.py --only supervisor,callback_monitor --only-sweeps matrix
    python bench/run.py --out /tmp/x    # anywhere else; README.md is rewritten only for results/
    python bench/run.py --render-only   # charts and tables again from results/raw only

Every run goes through the same lab harness as the experiments (a fresh runner process under a
watchdog). Raw data (results/raw/*.json) is the only source of truth: ``render()`` rebuilds every
chart and table from it. Everything is written to a temporary folder first and moved into place only
when every sweep finished: a failed run leaves the previous results untouched, and what it measured
before failing is kept in OUT/partial/raw (stamped "incomplete", with the error), never discarded.

A design whose package is not installed is recorded as "not_installed" with the reason, in every
sweep, and every chart and table says so. Every repetition of a point is run, whatever the ones before it did:
a hang with every process idle is no proof that the next run hangs too (the article's design, terminating its
workers while a 10^7-int result was on its way, hung in one full run and raised in the next, issue 26).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench import report, summary  # noqa: E402
from experiments.lab import cgroup  # noqa: E402
from experiments.lab.harness import Outcome, run_scenario  # noqa: E402
from experiments.lab.jobs import ARTICLE_N, EVERY  # noqa: E402
from experiments.lab.scenarios import SCENARIOS, Scenario, hung_workers_continue  # noqa: E402
from variants import VARIANTS  # noqa: E402

RESULTS = ROOT / "results"
README = ROOT / "README.md"

ARTICLE_TASKS = 2_000
# Seconds the article's loop takes to build its 1,000,000 ints one append at a time: 37-41 ms measured on an idle
# core (jobs.Workload, 38f8c5a's machine).
ARTICLE_LOOP = 0.04
MEMORY_BUDGET_MB = 6000  # a run whose retained results would exceed this is not run (drawn "not run")
# dask's protocol serializes a list result element by element: ~2 s per 100,000 ints measured (see
# experiments/lab/scenarios.py; in a full bench, beside its other runs, nearer 4 s). A run moving more list
# elements than this through it is not run: memory_payload's 20 results of 100,000 ints took 74.5 s of the
# full bench (ffc5682), more than any other point, to draw one more point of a line the 10,000-int point and
# the "not run" mark already place.
DASK_LIST_BUDGET = 1_000_000


@dataclass
class Plan:
    quick: bool
    variants: list[str]
    sweeps: list[str]
    # Repetitions of every matrix row: a cell whose outcome differs between them is published as "mixed", never
    # as whichever came last (issue 26: Dask's death while sending raised in one full run and hung in the next).
    # The charted faults' rows are also the 4-worker points of the latency charts (median and min–max bars).
    reps: int = 2
    # The other latency points, as often: one run of the article's design raising at 10^7-int results in 0.7 s
    # was published, and the next full run hung there (the chart draws both marks at a point whose runs differ).
    sweep_reps: int = 2
    matrix_scenarios: list[str] = field(default_factory=list)
    workers: tuple[int, ...] = (1, 2, 4, 8)
    payloads: tuple[int, ...] = (10**4, 10**5, 10**6, 10**7)
    task_counts: tuple[int, ...] = (100, 1000, 10_000)
    task_counts_n: int = 10**4  # small results, so even the design that keeps them all fits 10,000 tasks
    payload_items: int = 20
    trace_items: int = 100
    overhead_tasks: int = 10_000
    overhead_rounds: int = 3
    # The supervisor at 100 tasks and at ARTICLE_TASKS tasks of the article's payload: does the main process's
    # peak grow with the task count? 2,000 tasks (20x) answer it; 10,000 took 5 minutes of a 2-core machine for
    # the same flat line (35 vs 33 MiB measured), and memory_tasks already goes to 10,000. Its workers build each
    # list in one step (``instant``) after sleeping as long as the article's loop takes (ARTICLE_LOOP): the main
    # process receives the same 1,000,000 ints at the same pace, and the loop's CPU (this sweep was 104 s of the
    # bench's CPU-bound shared part, 18ec0f2) is spared. The pace matters: without the sleep (135f757-38f8c5a) the
    # supervisor's peak was 37-40 MiB at 2,000 tasks against 33 at 100, because its workers hold answers back for
    # up to 5 ms (FLUSH_AFTER) and so sent several 1,000,000-int results in one message.
    article_sweep: bool = True
    # With the matrix: the supervisor's run timeout with every worker hung in continue mode (a figure of its
    # own, not a matrix row: no other design has continue mode). Three runs give its spread; 3.5 s each.
    continue_reps: int = 3

    alone: bool = False  # --alone: every run alone (concurrency 1 in every sweep)
    # The commit and whether the code was clean when the run began (code_state): the stamp's, checked again at the end
    code_at_start: dict[str, Any] = field(default_factory=lambda: code_state())

    @classmethod
    def make(cls, quick: bool, variants: list[str], sweeps: list[str], alone: bool = False) -> Plan:
        if not quick:
            return cls(False, variants, sweeps, matrix_scenarios=list(SCENARIOS), alone=alone)
        # --quick: every sweep and chart exercised at one or two points, small (CI runs it on the README's
        # install; the goal is under 2 minutes there). Its figures check the machinery, they are not results.
        # Its runs are CPU-bound on 2 cores (spawns and imports): sharing the machine between its sweeps saves
        # little (112 s against 116 s when that was first tried), so it is made smaller instead: a trace of 10
        # article tasks, not 30 (8 trace runs took 33 s of its ~2 minutes).
        return cls(True, variants, sweeps, reps=1, alone=alone, matrix_scenarios=["worker_killed", "callback_raises"],
                   workers=(2, 4), payloads=(10**4,), task_counts=(50,), task_counts_n=1000, payload_items=10,
                   trace_items=10, overhead_tasks=500, overhead_rounds=1, article_sweep=False, continue_reps=1)


SWEEPS = report.SWEEPS


# -- measuring ---------------------------------------------------------------------------------------
def record(sweep: str, sc: Scenario, variant: str, workers: int, n: int, rep: int, o: Outcome) -> dict[str, Any]:
    r = o.result or {}
    report = r.get("report") or {}
    fates = report.get("fates")
    supported = r.get("exc_type") != "NotImplementedError"
    # Where every item is at fault (the article's print(hoge) in every task), any item named is the culprit: which
    # failure is seen first is a race (the experiments' culprit="any"); only "no item" is a fault of the design.
    every = (sc.kwargs.get("job") or {}).get("at") == EVERY
    return {
        "sweep": sweep, "scenario": sc.name, "title": sc.title, "variant": variant, "workers": workers, "n": n,
        "rep": rep, "status": o.status if supported else "not_supported", "kind": o.kind,
        "exc_type": r.get("exc_type"), "message": (r.get("message") or "")[:300],
        "fault_item": sc.fault_item, "item": o.item,
        "culprit_named": sc.fault_item is not None and o.item is not None and (every or o.item == sc.fault_item),
        "exitcode": o.exitcode, "detect": o.detect_latency, "stop": o.stop_latency, "exit": o.exit_latency,
        "lingered": o.lingered, "left_running": len(o.left_running), "left": o.left_running,
        "orphans_exit": o.orphans_exit_latency, "watchdog": sc.kwargs.get("watchdog"),
        "peak_rss_mb": r.get("peak_rss_mb"), "peak_children_mb": o.peak_children_mb,
        "completed": report.get("completed"), "fates": fates, "items_accounted": items_accounted(sc, r),
        # How many times the fault's item started: more than once is a re-run (report.recovered).
        "fault_starts": (None if sc.fault_item is None else
                         sum(e["ev"] == "start" and e.get("item") == sc.fault_item for e in o.events)),
        "memory_trace": o.memory_trace, "wall": o.wall, "hang_evidence": o.hang_evidence,
    }


def items_accounted(sc: Scenario, r: dict[str, Any]) -> bool | None:
    """Does the design's own account add up: every item the run got from its iterator is either done
    (its on_result returned, once) or listed by the report as left to do, never both? None where it
    cannot be asked: the design keeps no per-item account, or run() never came back with a report."""
    left = r.get("remaining")
    if left is None:
        return None
    count, raise_at = sc.kwargs.get("items", 0), sc.kwargs.get("items_raise_at")
    expected = count if raise_at is None else min(count, raise_at)  # the iterator raises at raise_at
    if r.get("callback_repeats"):
        return False  # an item saved twice is not accounted for, whatever the counts say
    done = r.get("callback_items")
    if done is None:  # more than the runner lists: counts only
        return r.get("callback_calls", 0) + len(left) == expected and len(set(map(repr, left))) == len(left)
    done_set, left_set = set(map(repr, done)), set(map(repr, left))
    return not (done_set & left_set) and (done_set | left_set) == {repr(i) for i in range(expected)}


class Job(NamedTuple):
    """One run of the plan."""

    sweep: str
    scenario: Scenario
    variant: str
    workers: int
    n: int  # the job's payload (ints per result)
    rep: int  # repetition number
    extra: dict[str, Any]  # items, sample_memory


def jobs_for(plan: Plan, skips: list[str] | None = None) -> list[Job]:
    """Every run the plan makes, in order; what it leaves out for this machine goes into ``skips``, in words."""
    out = []
    oom_ok, oom_why = cgroup.availability()

    def add(sweep, make, variant, workers=4, n=None, rep=0, **extra):
        sc = make(workers=workers) if n is None else make(workers=workers, n=n)
        if "oom" in sc.needs and not oom_ok:
            if skips is not None:
                skips.append(f"{sweep}: {sc.name} (needs a real OOM kill: {oom_why})")
            return
        if sweep == "latency_payload" and n:
            # Each task builds, pickles and unpickles n ints: ~1 s per 10^6 ints on a loaded 2-core machine
            # (measured), which the scenario's short watchdog does not allow for at 10^7: a slow run is not a hang.
            sc.kwargs["watchdog"] = sc.kwargs.get("watchdog", 30.0) + n / 10**6
        out.append(Job(sweep, sc, variant, workers, sc.kwargs["job"].get("n", 0), rep, extra))

    for v in plan.variants:
        if "matrix" in plan.sweeps:
            for name in plan.matrix_scenarios:
                for rep in range(plan.reps):
                    add("matrix", SCENARIOS[name], v, rep=rep)
            if v == "supervisor":
                for rep in range(plan.continue_reps):
                    add("continue_timeout", hung_workers_continue, v, rep=rep)
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
                    if (n == SCENARIOS[fault]().kwargs["job"].get("n") and "matrix" in plan.sweeps
                            and fault in plan.matrix_scenarios):
                        continue  # the matrix already ran this point (same fault, 4 workers, same payload)
                    for rep in range(plan.sweep_reps):
                        add("latency_payload", SCENARIOS[fault], v, n=n, rep=rep)
        if "memory_tasks" in plan.sweeps:
            for count in plan.task_counts:
                add("memory_tasks", _healthy, v, n=plan.task_counts_n, items=count)
            if plan.article_sweep and v == "supervisor":
                for count in (100, ARTICLE_TASKS):
                    add("memory_article", functools.partial(_healthy, instant=True, delay=ARTICLE_LOOP), v,
                        n=ARTICLE_N, items=count)
        if "memory_payload" in plan.sweeps:
            for n in plan.payloads:
                add("memory_payload", _healthy, v, n=n, items=plan.payload_items)
        if "memory_trace" in plan.sweeps:
            add("memory_trace", _healthy, v, n=ARTICLE_N, items=plan.trace_items, sample_memory=True)
    return out


def _healthy(workers: int = 4, n: int = ARTICLE_N, instant: bool = False, delay: float = 0.0) -> Scenario:
    job = {"type": "Workload", "n": n, **({"instant": True, "delay": delay} if instant else {})}
    return Scenario("healthy", {"job": job, "items": 100,
                                "run_kwargs": {"workers": workers}, "watchdog": 900}, None, "healthy run")


def retained_mb(variant: str, n: int, items: int) -> float:
    """What a design that keeps every result would hold: only as_completed does (see its docstring)."""
    return items * n * 8 / 2**20 if variant == "as_completed" else 0.0


def run_one(job: Job) -> dict[str, Any]:
    sweep, sc, variant, workers, n, rep, extra = job
    kwargs = dict(sc.kwargs)
    if "items" in extra:
        kwargs["items"] = extra["items"]
    if extra.get("sample_memory"):
        kwargs["sample_memory"] = True
    # Every record carries the same keys, so tables and charts read a skipped point like a measured one.
    skip = {"sweep": sweep, "scenario": sc.name, "title": sc.title, "variant": variant, "workers": workers, "n": n,
            "rep": rep, "items": kwargs.get("items"), "fault_item": sc.fault_item}
    if retained_mb(variant, n, kwargs.get("items", 0)) > MEMORY_BUDGET_MB:
        return skip | {"status": "not_run", "message": f"would retain ~"
                       f"{retained_mb(variant, n, kwargs['items']) / 1024:.0f} GiB of results"}
    if variant == "dask_distributed" and n * kwargs.get("items", 0) > DASK_LIST_BUDGET:
        return skip | {"status": "not_run",
                       "message": f"{kwargs['items']} results of {n:,} ints: ~{n * kwargs['items'] / 50_000:.0f} s "
                                  "of dask list serialization"}
    ok, why = VARIANTS[variant].available()
    if not ok:
        return skip | {"status": "not_installed", "message": why}
    o = run_scenario(variant, **kwargs)
    rec = record(sweep, sc, variant, workers, n, rep, o)
    rec["items"] = kwargs.get("items")
    return rec


# How long the overhead sweep's pytest process may take as a whole before it is killed and the bench fails.
OVERHEAD_LIMIT = 1200
# A line of ``pytest -v`` that ends one benchmark: one tick of the progress bar.
BENCHMARK_DONE = re.compile(r"::test_\S+ (PASSED|FAILED|ERROR|SKIPPED)")


def overhead_benchmarks() -> int:
    """How many benchmarks bench/test_overhead.py times: its two baselines and every installed design (it is
    parametrized over the installed ones, whatever --only says; run_overhead keeps the plan's)."""
    return 2 + sum(v.available()[0] for v in VARIANTS.values())


def run_overhead(plan: Plan, tmp: Path, tick: Any = None) -> dict[str, Any]:
    """The overhead sweep in a pytest process of its own; ``tick(name)`` as each benchmark ends."""
    out = tmp / "benchmark.json"
    env = dict(os.environ, BENCH_TASKS=str(plan.overhead_tasks), BENCH_ROUNDS=str(plan.overhead_rounds),
               PYTHONPATH=str(ROOT))
    # -n 0: one process (pytest-benchmark refuses to time under xdist, and timings must not share cores).
    # -v: a line per benchmark as it ends, read as it comes for the progress bar.
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "bench" / "test_overhead.py"), "-v", "-n", "0",
           "--benchmark-enable", f"--benchmark-json={out}", "-p", "no:randomly"]
    lines: list[str] = []
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        def read() -> None:
            for line in proc.stdout:
                lines.append(line)
                if tick is not None and (m := BENCHMARK_DONE.search(line)):
                    tick(m.group(0).removeprefix("::"))
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=OVERHEAD_LIMIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        reader.join(timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"overhead benchmark failed:\n{''.join(lines)[-6000:]}")
    data = json.loads(out.read_text())
    rows = []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if info.get("variant") in plan.variants or info.get("variant") in ("plain_executor", "reference_map"):
            rows.append({"variant": info["variant"], "tasks": info["tasks"], "workers": info["workers"],
                         "median_s": b["stats"]["median"], "min_s": b["stats"]["min"], "max_s": b["stats"]["max"],
                         "rounds": b["stats"]["rounds"]})
    return {"runs": rows, "pytest_benchmark_machine_info": data.get("machine_info", {})}


def per_task(overhead: dict[str, Any] | None) -> dict[str, float]:
    """Seconds per tiny task of each design, from the overhead sweep's medians (empty without that sweep)."""
    return {r["variant"]: report.seconds_per_task(r) for r in (overhead or {}).get("runs", [])}


# -- stamping ----------------------------------------------------------------------------------------
def machine_stamp(code_at_start: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where and on what a figure was measured: machine, Python, packages (the lab's and every design's), commit."""
    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(), "implementation": platform.python_implementation(),
        "os": platform.platform(), "kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "start_method": "spawn",
        "packages": {p: version(p) for p in ("psutil", "memory-profiler", "matplotlib", "pytest-benchmark", "pytest-xdist",
                                             *(v.requires for v in VARIANTS.values() if v.requires))},
        **code_state(code_at_start),
        "oom_cgroup": cgroup.availability()[1],
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def code_state(at_start: dict[str, Any] | None = None) -> dict[str, Any]:
    """The commit and whether the code differs from it (results/ is this command's own output, not code). Given
    the state when the run began, dirty also when the code changed or HEAD moved while it ran: a figure is only
    the commit's when the whole run measured that commit."""
    now = {"git_commit": _git("rev-parse", "HEAD"),
           "git_dirty": bool(_git("status", "--porcelain", "--", ".", ":!results"))}
    if at_start is None:
        return now
    return {"git_commit": at_start["git_commit"],
            "git_dirty": at_start["git_dirty"] or now["git_dirty"] or now["git_commit"] != at_start["git_commit"]}


def stamp(plan: Plan, started: float, seconds: dict[str, float]) -> dict[str, Any]:
    return machine_stamp(plan.code_at_start) | {
        "mode": "quick" if plan.quick else "full",
        "reps": plan.reps, "sweeps": plan.sweeps,
        "concurrency": concurrency(plan.alone),  # runs at a time, per sweep
        "bench_seconds": round(time.monotonic() - started, 1),
        "sweep_seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


# -- the command -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small version of every sweep (under 2 minutes)")
    ap.add_argument("--only", default="", help="comma-separated variants (default: every registered one)")
    ap.add_argument("--only-sweeps", default="", help=f"comma-separated sweeps among {', '.join(SWEEPS)}")
    ap.add_argument("--out", default=str(RESULTS), help="output folder (default: results/)")
    ap.add_argument("--render-only", action="store_true", help="rebuild charts and tables from OUT/raw only")
    ap.add_argument("--alone", action="store_true",
                    help=f"every run alone (default: the fault sweeps {FAULT_RUNS} runs at a time, the memory sweeps "
                         f"{MEMORY_RUNS}, the rest alone; stamped)")
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
        report.render(out, readme=README if out == RESULTS.resolve() else None, link_base=link_base(out))
        return 0

    plan = Plan.make(args.quick, variants, sweeps, alone=args.alone)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    by_sweep: dict[str, Any] = defaultdict(list)
    # Each sweep's time: the sum of its runs' durations (overlapping runs both count).
    seconds: dict[str, float] = defaultdict(float)
    measured: dict[int, dict[str, Any]] = {}
    plan_skips = [f"sweep {s} (not in --only-sweeps)" for s in SWEEPS if s not in sweeps]
    plan_skips += [f"design {v} (not in --only)" for v in VARIANTS if v not in variants]
    try:
        (tmp / "raw").mkdir()
        todo = jobs_for(plan, plan_skips)
        from bench import huge, throughput

        available = [v for v in plan.variants if VARIANTS[v].available()[0]]
        # One tick per lab run, per overhead benchmark and per throughput process: every sweep is in the total.
        total = (len(todo) + (overhead_benchmarks() if "overhead" in sweeps else 0)
                 + (len(throughput.processes(available, plan.quick)) if "throughput" in sweeps else 0)
                 + (len(huge.points(available, plan.quick)) if "huge" in sweeps else 0))
        bar = tqdm(total=total, unit="step", desc="bench", dynamic_ncols=True, file=sys.stderr)

        def tick(what: str) -> None:
            bar.set_postfix_str(what, refresh=False)
            bar.update()

        for sweep, rec in measure(todo, concurrency(plan.alone), bar, seconds, measured):
            by_sweep[sweep].append(rec)
        if "overhead" in sweeps:
            bar.set_postfix_str("overhead (pytest-benchmark, one process)")
            t = time.monotonic()
            by_sweep["overhead"] = run_overhead(plan, tmp, lambda name: tick(f"overhead {name}"))
            seconds["overhead"] += time.monotonic() - t
        if "throughput" in sweeps:
            bar.set_postfix_str("throughput (each design and worker count in a fresh process)")
            t = time.monotonic()
            by_sweep["throughput"] = {"runs": throughput.sweep(available, plan.quick, tick,
                                                                per_task=per_task(by_sweep.get("overhead"))) + [
                {"contender": v, "status": "not_installed", "message": VARIANTS[v].available()[1]}
                for v in plan.variants if v not in available]}
            seconds["throughput"] += time.monotonic() - t
        if "huge" in sweeps:
            bar.set_postfix_str("huge data (each design, direction and size in a fresh process)")
            t = time.monotonic()
            by_sweep["huge"] = {"runs": huge.sweep(available, plan.quick, tick) + [
                {"variant": v, "status": "not_installed", "message": VARIANTS[v].available()[1]}
                for v in plan.variants if v not in available]}
            seconds["huge"] += time.monotonic() - t
        bar.close()
        write_raw(tmp, by_sweep, stamp(plan, started, seconds))
        keep_other_variants(tmp, out, set(plan.variants))
        report.render(tmp, readme=None, link_base=link_base(out))  # first here: a rendering error leaves `out` as it was
        install(tmp, out)
        report.render(out, readme=README if out == RESULTS.resolve() else None, link_base=link_base(out))
    except BaseException as e:  # Ctrl-C included: what was measured is kept, never discarded
        if not by_sweep:
            for i in sorted(measured):
                by_sweep[todo[i].sweep].append(measured[i])
        if by_sweep:
            keep_partial(out, by_sweep, stamp(plan, started, seconds), e)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_summary(out, time.monotonic() - started, seconds, by_sweep, plan_skips)
    return 0


def print_summary(out: Path, duration: float, seconds: dict[str, float], by_sweep: dict[str, Any],
                  plan_skips: list[str]) -> None:
    """The closing summary (bench/summary.py) of a run whose results are now in ``out``."""
    raw = {f.name: json.loads(f.read_text()) for f in sorted((out / "raw").glob("*.json"))}
    files = sorted([*out.glob("*.png"), *(out / n for n in ("fault_matrix.md", "README-section.md")),
                    *(out / "raw" / n for n in raw)])
    files = [f for f in files if f.exists()] + ([README] if out == RESULTS.resolve() else [])
    lines = summary.summary(files=files, seconds=duration, sweep_seconds=dict(seconds), by_sweep=by_sweep,
                            plan_skips=plan_skips, new_raw=raw, old_raw=summary.committed_raw(ROOT, out, list(raw)))
    print("\n".join(lines))


# How many runs share the machine, per sweep: a setting, the same in every full run and stamped, so that two runs'
# figures are comparable (issue 26: before, extra runs were admitted while the CPU looked idle, so the concurrency
# behind a figure depended on the moment). The sweeps of one phase run together, their runs interleaved (``spread``):
# - the fault sweeps' runs mostly wait (sleeps, polls, a hang until its watchdog, billiard's terminate() sleeping,
#   Dask closing its cluster): 46% of their run time was more than 3 s into a run (2799d3a), a core idle, so one
#   run more than the cores. Not more: at 6 at a time (a full run of 7623a34, load average over 20 on 2 cores)
#   detection latencies grew 5-10x (loky 13 ms -> 119 ms) and mpire's slow death detection went past its
#   watchdog, published as hangs: the load of the bench itself was measured, not the designs.
# - the memory sweeps' figures are peaks (the runner's ru_maxrss and what it reports), not times; the only one that
#   moves with the CPU's speed is a backlog of results, which grows when the main process is slower than its
#   workers, and a shared core slows both: two at a time, one per core.
# - the sampled trace (its time axis), the continue-mode timeout, the overhead timing, the throughput and huge-data
#   sweeps: alone.
FAULT_RUNS = 3
MEMORY_RUNS = 2
PHASES = {"fault": (("matrix", "latency_workers", "latency_payload"), FAULT_RUNS),
          "memory": (("memory_tasks", "memory_payload", "memory_article"), MEMORY_RUNS)}
OVERLAPPABLE = tuple(s for sweeps, _ in PHASES.values() for s in sweeps)


def concurrency(alone: bool = False) -> dict[str, int]:
    """Runs at a time in each sweep (every sweep of SWEEPS and the matrix's continue-mode figure); 1 everywhere
    with ``alone`` (--alone)."""
    out = {s: 1 for s in (*SWEEPS, "memory_article", "continue_timeout")}
    if not alone:
        out |= {s: n for sweeps, n in PHASES.values() for s in sweeps}
    return out


def measure(todo: list[Any], runs_at_once: dict[str, int], bar: Any, seconds: dict[str, float],
            results: dict[int, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every run of the plan into ``results`` (by position: the caller keeps what was measured if a run
    fails), returned in the plan's order. Each phase of PHASES runs its sweeps' runs
    ``runs_at_once[sweep]`` at a time (the same for every sweep of a phase), spread out (``spread``), the later
    repetitions after every first one; then everything else one at a time. Each record says how many runs of
    its phase were going when it started (``at_once``, itself included)."""
    lock = threading.Lock()
    going = {"runs": 0}
    t0 = time.monotonic()

    def one(i: int) -> None:
        job = todo[i]
        with lock:
            going["runs"] += 1
            at_once = going["runs"]
        t = time.monotonic()
        rec = run_one(job)
        # When it started in the bench, and how many runs were going then (it included): the timeline.
        rec.update(started=round(t - t0, 3), at_once=at_once)
        with lock:
            going["runs"] -= 1
            results[i] = rec
            seconds[job.sweep] += time.monotonic() - t
        bar.set_postfix_str(f"{job.sweep} {job.scenario.name} {job.variant} w={job.workers}", refresh=False)
        bar.update()

    alone = []
    for sweeps, _ in PHASES.values():
        phase = [i for i, j in enumerate(todo) if j.sweep in sweeps]
        lanes_n = max((runs_at_once.get(todo[i].sweep, 1) for i in phase), default=1)
        if lanes_n == 1:
            alone += sorted(phase, key=lambda i: todo[i].rep > 0)
            continue
        order = spread(todo, [i for i in phase if todo[i].rep == 0]) + [i for i in phase if todo[i].rep > 0]
        with ThreadPoolExecutor(lanes_n, thread_name_prefix="bench-lane") as lanes:
            try:
                for f in [lanes.submit(one, i) for i in order]:
                    f.result()  # a failure in a lane fails the run, as it would one at a time
            except BaseException:  # Ctrl-C included: the runs not started are dropped, the running ones end
                lanes.shutdown(cancel_futures=True)
                raise
    for i in alone + [i for i, j in enumerate(todo) if j.sweep not in OVERLAPPABLE]:
        one(i)
    return [(todo[i].sweep, results[i]) for i in sorted(results)]


def spread(todo: list[Job], indices: list[int]) -> list[int]:
    """``indices`` reordered so that each design's runs of each sweep are spread evenly over the whole list:
    the k-th of a group's n runs at (k + 1/2) / n of the way, each design's group of a sweep turned by one more
    place than the design's before it. The plan lists a design's runs together and its memory sweeps last; in
    that order Dask's runs (each starting a cluster: seconds of CPU) came one after another, and the memory runs,
    which compute, only after every fault run, which mostly waits. Spread but not turned, every design's largest
    payload (the last of its group) came at the same place: the 20 results of 10^7 ints of 7 designs, each
    13-25 s of two busy cores, ran together in the 100 s where the CPU was busiest (a57ef4a's full run)."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i in indices:
        groups[(todo[i].variant, todo[i].sweep)].append(i)
    turns: dict[str, int] = defaultdict(int)  # per sweep: the designs' groups placed so far
    where = {}
    for (_, sweep), g in groups.items():
        turn = turns[sweep] % len(g)
        turns[sweep] += 1
        for k, i in enumerate(g[turn:] + g[:turn]):
            where[i] = (k + 0.5) / len(g)
    return sorted(indices, key=where.__getitem__)  # stable: equal places keep the plan's order


def link_base(out: Path) -> str:
    """How the README (at the repository's root) reaches the output folder's charts."""
    try:
        return out.relative_to(ROOT).as_posix()
    except ValueError:
        return out.as_posix()


def write_raw(folder: Path, by_sweep: dict[str, Any], st: dict[str, Any]) -> None:
    (folder / "raw").mkdir(parents=True, exist_ok=True)
    for sweep, runs in by_sweep.items():
        payload = runs if isinstance(runs, dict) else {"runs": runs}
        (folder / "raw" / f"{sweep}.json").write_text(json.dumps({"stamp": st, **payload}, indent=1, default=repr))


def keep_partial(out: Path, by_sweep: dict[str, Any], st: dict[str, Any], error: BaseException) -> None:
    """A failed run's measurements go to OUT/partial/raw (stamped incomplete), beside the results it did not
    replace; ``--render-only --out OUT/partial`` draws them."""
    partial = out / "partial"
    shutil.rmtree(partial, ignore_errors=True)
    st = st | {"incomplete": f"{type(error).__name__}: {error}"[:500]}
    write_raw(partial, by_sweep, st)
    print(f"bench: failed ({type(error).__name__}); the {sum(len(r) for r in by_sweep.values())} run(s) measured so "
          f"far are in {partial / 'raw'}", file=sys.stderr)


def keep_other_variants(tmp: Path, out: Path, ran: set[str]) -> None:
    """A run limited by --only / --only-sweeps keeps what it did not redo from the existing raw data: the
    runs of registered designs it did not run. A record of anything else (the throughput reference, the
    overhead baselines) is measured again whenever its sweep runs, so an old one is never kept beside it.
    A kept record is never passed off as the new run's: it carries the stamp of the run that measured it
    (``measured_by``), and the new stamp lists those runs (``kept_from``), which the README's stamp line says."""
    for old in (out / "raw").glob("*.json") if (out / "raw").exists() else []:
        new = tmp / "raw" / old.name
        old_data = json.loads(old.read_text())
        if not new.exists():
            shutil.copy2(old, new)
            continue
        new_data = json.loads(new.read_text())
        if isinstance(new_data.get("runs"), list) and isinstance(old_data.get("runs"), list):
            origin = origin_of(old_data.get("stamp") or {})
            kept = [{**r, "measured_by": r.get("measured_by") or origin} for r in old_data["runs"]
                    if r.get("variant") in VARIANTS and r["variant"] not in ran]
            kept_from = new_data["stamp"].setdefault("kept_from", []) if kept else []
            for r in kept:
                if r["measured_by"] not in kept_from:
                    kept_from.append(r["measured_by"])
            new_data["runs"] = kept + new_data["runs"]
            new.write_text(json.dumps(new_data, indent=1, default=repr))


def origin_of(st: dict[str, Any]) -> dict[str, Any]:
    """What names a run: its commit, whether the code was clean, its date."""
    return {"git_commit": st.get("git_commit"), "git_dirty": st.get("git_dirty"), "date": st.get("date")}


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
