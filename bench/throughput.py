"""Throughput on the healthy path: how long each design takes for many short tasks, against the reference.

    python -m bench.throughput points '{"contender": "supervisor", "workers": 2,
                                        "points": [{"seconds": 0.001, "tasks": 2000}]}'

Each contender and worker count runs in a fresh process of its own (this module, ``points``), which first
imports the design and the library it wraps and runs one unrecorded task, then times each point: the clock
runs around the whole ``run()`` (workers spawned, every task done, workers stopped), so every figure
includes the design's own start-up and shutdown, for every contender alike. Each figure is the best of up
to ``REPEATS`` runs (see there), the same rule for every contender. The time once the workers are up is
read inside the same runs, from when each result reached ``on_result``: ``mid`` is the time from the
result at a quarter of the tasks to the result at three quarters (``mid_tasks`` results; see
``window``), compared with its ideal ``mid_tasks x seconds / workers``, and with the nap's own measured
duration (``nap``: ``time.sleep`` overshoots, by 14% for 1 ms on our machine, which no design can win
back). The reference is
``ProcessPoolExecutor.map(chunksize=256)`` under spawn: the fastest plain way to run many tiny tasks, knowing
nothing of faults.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "ProcessPoolExecutor.map(chunksize=256)"
CHUNKSIZE = 256
DURATIONS = (0.0, 0.0001, 0.001, 0.01)  # seconds per task
WORKERS = (1, 2, 4, 8)
# Tasks per point: 20,000 tiny tasks (the figure) where a task is no work at all, 10,000 of 0.1 ms
# (a second of work at 1 worker); of 1 ms and 10 ms, where "within 5% of the ideal once the workers are up" is
# asked, this many per worker (PER_WORKER), so that the work is about a second at every worker count and the
# first quarter of it (a quarter second, before ``window`` starts) covers the workers' start-up. Measured for
# the supervisor on 2 cores: at 8 workers the first result came 0.37-0.51 s into a run and the quarter mark at
# 0.70-0.82 s, and the rate between the quarter marks was as close to the ideal as at 1 worker (1.035-1.046
# against 1.028-1.043 of it).
TASKS = {0.0: 20_000, 0.0001: 10_000, 0.001: 1_000, 0.01: 100}
QUICK_TASKS = {0.0: 5_000, 0.0001: 2_000, 0.001: 200, 0.01: 20}
PER_WORKER = (0.001, 0.01)

# Seconds a point may take before it counts as "did not finish"; with the overhead sweep's per-task figures, a
# point predicted past it is not run (``sweep``). The slowest points that finish: Dask's 2,000 tasks of 1 ms on 2
# workers, 12.1 s, and the article's design's 8,000 on 8 workers, 10.9 s (a8dcd0e); 20 s leaves 1.65x. The
# points this rules out: Dask's 8-worker 1 ms point (~43 s at its 5.4 ms per task) and every contender's 20,000
# tiny tasks that take over 20 s, that is Dask's (~107 s) and the article's design's (~24 s at its 1.2 ms per
# task; 21.7 and 27.2 s measured on a8dcd0e, 49 s of the bench, a tenth of the throughput sweep). Their
# per-task cost is the overhead sweep's figure; their 1 ms points place them.
POINT_LIMIT = 20.0
# A point is not run when its prediction is past POINT_LIMIT / PREDICTION_MARGIN: the overhead sweep's per-task
# figure was 12% off a throughput point's in both directions (a8dcd0e: the article's design predicted 24.3 s for
# 21.7 s measured, Dask 10.8 s for 12.1 s), so a point predicted just under the limit could still run past it and
# be drawn "did not finish"; 1.3 covers that 12% twice over.
PREDICTION_MARGIN = 1.3
# Seconds for a points process to get ready: start, import the design, run one warm-up task and calibrate the
# nap (Dask: its imports and a first LocalCluster, up to ~10 s measured with the other core busy).
STARTUP_LIMIT = 30.0
NOT_RUN = "not run: "  # how a point skipped for its predicted time begins its error
NOT_READY = "not ready: "  # how the error of a points process that never got ready begins
# A point of tiny tasks takes a fraction of a second, and one run of it moves by about 30% with the scheduler
# on 2 busy cores (measured: 0.29-0.38 s for the same supervisor point, 0.16-0.20 s for the reference's). So a
# point is run again, up to REPEATS runs, while its runs so far took less than REPEAT_BUDGET seconds, and its
# figure is the best run (as timeit reports, and as the issue's own table was measured); every run of a point
# is kept in the raw data ("runs"). A point slower than the budget runs once: its noise is a small share of it
# (the supervisor's 4,000 tasks of 1 ms on 4 workers: 1.41-1.46 s over 4 runs, 3.5%; its rate once up, ``mid``,
# within 1% run to run). A point thus takes at most about REPEAT_BUDGET plus one run.
REPEATS = 3
REPEAT_BUDGET = 1.0


def tasks_for(seconds: float, workers: int, quick: bool = False) -> int:
    """How many tasks a point of this duration and worker count runs (see TASKS)."""
    base = (QUICK_TASKS if quick else TASKS)[seconds]
    return base * workers if seconds in PER_WORKER else base


def nap(seconds: float, item: int) -> int:
    """The task: sleep ``seconds`` (0: return at once), return the item. No event log, no payload."""
    if seconds:
        time.sleep(seconds)
    return item


def _import(contender: str) -> None:
    """The contender's design and the library it wraps, imported before any clock starts: the points time the
    design, not the interpreter's first import of it (only the first point of a process would pay that)."""
    if contender == REFERENCE:
        import concurrent.futures  # noqa: F401
        return
    from variants import VARIANTS

    v = VARIANTS[contender]
    importlib.import_module(v.module)
    if v.requires:
        importlib.import_module(v.requires)


def window(tasks: int) -> tuple[int, int]:
    """The results whose arrival times bound ``mid``: the (tasks // 4)-th and the (3 * tasks // 4)-th, counted
    from 1. Before the first, the workers are starting (spawn, imports, the first batches); after the second,
    they run out of work one by one. Between them every worker is busy, if the design keeps it busy."""
    return max(1, tasks // 4), max(1, 3 * tasks // 4)


def _time(contender: str, workers: int, seconds: float, tasks: int) -> dict[str, Any]:
    import functools

    job = functools.partial(nap, seconds)  # picklable: a module-level function and a float
    arrived: list[float] = []  # when each result reached the main process (on_result, or map's iterator)
    arrive = arrived.append
    start, end = window(tasks)

    t0 = time.perf_counter()
    if contender == REFERENCE:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            for _ in ex.map(job, range(tasks), chunksize=CHUNKSIZE):
                arrive(time.perf_counter())
    else:
        from variants import VARIANTS

        VARIANTS[contender].run(job, range(tasks), workers=workers,
                                on_result=lambda item, result: arrive(time.perf_counter()))
    elapsed = time.perf_counter() - t0
    done = len(arrived)
    mid = arrived[end - 1] - arrived[start - 1] if done >= end and end > start else None
    return {"elapsed": elapsed, "done": done, "mid": mid, "mid_tasks": end - start}


# How long the nap's calibration runs per duration: the mean of naps adding up to about this many seconds
# (at least 20 naps), in the points process before any figure, with nothing else of the run going on.
NAP_CALIBRATION = 0.2


def _nap_seconds(seconds: float) -> float:
    """The real mean duration of ``nap(seconds)`` in this process (0 for 0)."""
    if not seconds:
        return 0.0
    n = max(20, int(NAP_CALIBRATION / seconds))
    t0 = time.perf_counter()
    for i in range(n):
        nap(seconds, i)
    return (time.perf_counter() - t0) / n


def _best(contender: str, workers: int, seconds: float, tasks: int) -> dict[str, Any]:
    """The best of up to ``REPEATS`` runs of one point (see ``REPEAT_BUDGET``), every run listed in ``runs``;
    ``done`` is the fewest tasks any run did, so that one short run is not hidden by a complete one. ``mid``
    is the shortest of the runs' windows (the best, as for the total, though it may come from another
    run), None if any run had none; ``mids`` lists them all."""
    runs = [_time(contender, workers, seconds, tasks)]
    while len(runs) < REPEATS and sum(r["elapsed"] for r in runs) < REPEAT_BUDGET:
        runs.append(_time(contender, workers, seconds, tasks))
    mids = [r.get("mid") for r in runs]
    return {"elapsed": min(r["elapsed"] for r in runs), "done": min(r["done"] for r in runs),
            "runs": [r["elapsed"] for r in runs], "mid": None if None in mids else min(mids), "mids": mids,
            "mid_tasks": runs[0].get("mid_tasks")}


def _points(spec: dict[str, Any]) -> None:
    """The child: import, warm up, calibrate the nap, say it is ready (``{"ready": true}``), then each point;
    one JSON line per figure, as it is measured. The warm-up is one unrecorded one-task run: the first run()
    of a process also starts multiprocessing's resource tracker and fills the page cache (measured: a first
    one-task run 0.16 s, a 2,000-task run after it 0.13 s), which only the first point would pay."""
    contender, workers = spec["contender"], spec["workers"]
    _import(contender)
    _time(contender, workers, 0.0, 1)
    todo = spec["points"]
    naps = {s: _nap_seconds(s) for s in {p["seconds"] for p in todo}}
    print(json.dumps({"ready": True}), flush=True)
    for p in todo:
        got = _best(contender, workers, p["seconds"], p["tasks"])
        print(json.dumps({**p, **got, "nap": naps[p["seconds"]]}), flush=True)


# Every duration and worker count for the contenders of the table (the reference, the supervisor,
# multiprocessing.Pool); the other designs at 2 and 8 workers on tiny and 1 ms tasks, which is enough to
# place them.
FULL_SWEEP = ("supervisor", "pool")
OTHERS_DURATIONS = (0.0, 0.001)
OTHERS_WORKERS = (2, 8)


def sweep(contenders: list[str], quick: bool, progress: Any = None,
          per_task: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Every point: each contender (the reference first) x task duration x workers. Quick: the issue's
    contenders only, tiny and 1 ms tasks, 2 workers.

    ``per_task``: seconds per tiny task by design, as the overhead sweep measured them in the same bench
    run. A point that would take longer than ``POINT_LIMIT`` at that rate (with ``PREDICTION_MARGIN``) is not
    run, and says so with the figure it is predicted from (Dask's scheduler: ~5 ms per task, so 20,000 tiny
    tasks would take ~100 s; two such points cost 80 s of bench to learn "did not finish")."""
    out = []
    for contender, w, durations in processes(contenders, quick):
        points = []
        for seconds in durations:
            tasks = tasks_for(seconds, w, quick)
            point = {"contender": contender, "variant": contender, "workers": w, "seconds": seconds,
                     "tasks": tasks, "ideal": tasks * seconds / w}
            rate = (per_task or {}).get(contender)
            if rate and tasks * max(rate, seconds / w) > POINT_LIMIT / PREDICTION_MARGIN:
                point.update(total=None, error=f"{NOT_RUN}~{tasks * max(rate, seconds / w):.0f} s predicted from "
                             f"the overhead sweep ({rate * 1000:.1f} ms per tiny task), past the "
                             f"{POINT_LIMIT:.0f} s limit (with its margin)")
            points.append(point)
        out += measure(contender, w, points)
        if progress is not None:
            progress(f"throughput {contender} w={w}")
    return out


def processes(contenders: list[str], quick: bool) -> list[tuple[str, int, tuple[float, ...]]]:
    """What ``sweep`` runs, in order: (contender, workers, task durations), each in a process of its own (more
    than one when a point runs past its limit: ``measure``). bench/run.py counts them for its progress bar."""
    out = []
    for contender in [REFERENCE, *contenders]:
        full = contender == REFERENCE or contender in FULL_SWEEP
        if quick and not full:
            continue
        durations = (0.0, 0.001) if quick else DURATIONS if full else OTHERS_DURATIONS
        out += [(contender, w, durations) for w in ((2,) if quick else WORKERS if full else OTHERS_WORKERS)]
    return out


def measure(contender: str, workers: int, points: list[dict[str, Any]], python: str = sys.executable,
            limit: float = POINT_LIMIT) -> list[dict[str, Any]]:
    """Time ``points`` (dicts with ``seconds`` and ``tasks``; one already given a ``total`` of None is
    skipped) in one fresh process; each point gets ``total`` (its best run), ``runs``, ``mid``, ``mid_tasks``
    and ``mid_ideal`` (see ``window``), and for a task that sleeps ``nap`` (its measured duration),
    ``ideal_nap`` and ``mid_ideal_nap``; or an ``error``. A point past ``limit`` ends its process (with
    everything it started); the points after it get a process of their own."""
    todo = [p for p in points if "total" not in p]
    while todo:
        spec = {"contender": contender, "workers": workers,
                "points": [{"seconds": p["seconds"], "tasks": p["tasks"]} for p in todo]}
        # A session of its own, so that a point past its limit goes with every process it started (Dask's
        # nannies and workers), not only the one we started; a TMPDIR of its own, removed after it, so that what
        # they leave in the temporary folder (Dask's dask-scratch-space, multiprocessing's pymp-* folders, also
        # after a SIGKILL) goes too.
        with tempfile.TemporaryFile("w+") as stderr, tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
            proc = subprocess.Popen([python, "-m", "bench.throughput", "points", json.dumps(spec)], cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True,
                                    env={**os.environ, "TMPDIR": tmp})
            failed = _collect(proc, todo, limit, stderr)
        if failed is None:
            break
        if failed.startswith(NOT_READY):  # it cannot import or start the design: every point says why
            for p in todo:
                p.update(total=None, error=failed)
            break
        stuck = next(p for p in todo if "total" not in p)
        stuck.update(total=None, error=failed)
        todo = [p for p in todo if "total" not in p]
    for p in points:
        if p.get("mid_tasks"):
            p["mid_ideal"] = p["mid_tasks"] * p["seconds"] / workers
        if p.get("nap"):  # the ideals with the nap's real duration
            p["ideal_nap"] = p["tasks"] * p["nap"] / workers
            if p.get("mid_tasks"):
                p["mid_ideal_nap"] = p["mid_tasks"] * p["nap"] / workers
    return points


def _collect(proc: subprocess.Popen, todo: list[dict[str, Any]], limit: float,
             stderr: Any) -> str | None:
    """Read the child's ready line within ``STARTUP_LIMIT`` s, then its figures into ``todo``, each within
    ``limit`` s; then end its session. Returns why it stopped early (beginning with ``NOT_READY`` if it never
    got ready), or None."""
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    failed = None
    for p in [None, *todo]:  # None: the ready line
        try:
            line = lines.get(timeout=STARTUP_LIMIT if p is None else limit)
        except queue.Empty:
            failed = (f"{NOT_READY}within {STARTUP_LIMIT:.0f} s" if p is None
                      else f"did not finish within {limit:.0f} s")
            break
        if line is None:  # the process ended (or closed its stdout) without this figure
            try:
                proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                pass
            stderr.seek(0)
            failed = (NOT_READY if p is None else "") + (f"exited with code {proc.returncode} without a result: "
                                                         + stderr.read()[-400:])
            break
        if p is None:
            continue
        got = json.loads(line)
        p["total"], p["runs"] = got["elapsed"], got.get("runs")
        p["mid"], p["mids"], p["mid_tasks"] = got.get("mid"), got.get("mids"), got.get("mid_tasks")
        if got.get("nap"):
            p["nap"] = got["nap"]
        if got["done"] != p["tasks"]:
            p["error"] = f"{got['done']} of {p['tasks']} tasks done"
    _kill_session(proc)  # a point past its limit, or anything the contender left behind after its own exit
    reader.join(timeout=limit)
    proc.stdout.close()
    return failed


def _read_lines(stdout: Any, lines: queue.Queue) -> None:
    """Pass the child's JSON lines on as they come; None once its stdout closes."""
    for line in stdout:
        if line.startswith("{"):
            lines.put(line)
    lines.put(None)


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL every process of ``proc``'s session (started with start_new_session: its process group is
    ``proc.pid``) with the lab's own group helpers, and reap ``proc``; bounded."""
    import psutil

    from experiments.lab.harness import REAP_LIMIT, group_members, kill_group

    kill_group(proc.pid)
    psutil.wait_procs(group_members(proc.pid), timeout=REAP_LIMIT)
    try:
        proc.wait(timeout=REAP_LIMIT)
    except subprocess.TimeoutExpired:
        pass


if __name__ == "__main__":
    if sys.argv[1:2] == ["points"]:
        _points(json.loads(sys.argv[2]))


# -- rendering (called by bench/report.py from results/raw/throughput.json) ---------------------------------
def chart(runs: list[dict[str, Any]], out: Path) -> str | None:
    """Total time of each design relative to the reference, per task duration (panel) and workers (x)."""
    import matplotlib.pyplot as plt

    from bench import report

    runs = [r for r in runs if "seconds" in r]  # not the "not installed" records
    # The same point: workers, duration and task count (a design's records kept from an older run by --only may
    # have run another count than the reference measured now: it is not divided by it, and a note says so).
    ref = {(r["workers"], r["seconds"], r["tasks"]): r["total"] for r in runs
           if r["contender"] == REFERENCE and r.get("total")}
    if not ref:
        return None
    durations = sorted({r["seconds"] for r in runs})
    fig, axes = plt.subplots(1, len(durations), figsize=(3.2 * len(durations), 4.2), sharey=True, squeeze=False)
    notes = []
    for ax, d in zip(axes[0], durations, strict=True):
        designs = [c for c in dict.fromkeys(r["contender"] for r in runs) if c != REFERENCE]
        for k, v in enumerate(designs):
            # side by side, not one marker behind another, where designs measure alike
            pts = sorted((report._dodge(r["workers"], k, len(designs), 2), r["total"] / ref[(r["workers"], d, r["tasks"])])
                         for r in runs if r["contender"] == v and r["seconds"] == d and r.get("total")
                         and (r["workers"], d, r["tasks"]) in ref)
            failed = [r for r in runs if r["contender"] == v and r["seconds"] == d and not r.get("total")]
            unmatched = [r for r in runs if r["contender"] == v and r["seconds"] == d and r.get("total")
                         and (r["workers"], d, r["tasks"]) not in ref]
            if unmatched:
                notes.append(f"{v}, {d * 1000:g} ms tasks: {len(unmatched)} point(s) not drawn (no reference figure "
                             f"for {unmatched[0]['tasks']:,} tasks on {unmatched[0]['workers']} workers)")
            if failed:
                notes.append(f"{v}, {d * 1000:g} ms tasks: {len(failed)} point(s) not drawn "
                             f"({(failed[0].get('error') or '')[:110].strip()})")
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=4, label=v, color=report.color(v), **report.line(v))
        ax.axhline(1.0, ls="--", color="black", lw=1)
        ax.set_title(f"{d * 1000:g} ms per task ({_tasks_label(runs, d)})", fontsize=9)
        ax.set_xscale("log", base=2)
        report.worker_ticks(ax, WORKERS)
        ax.set_xlabel("workers")
        ax.set_yscale("log")
        report.readable_log_axis(ax.yaxis)
    axes[0][0].set_ylabel("time relative to the reference\n(dashed = 1×; start-up included)")
    labels: dict[str, Any] = {}
    for ax in axes[0]:  # every design drawn in any panel (Dask may be missing from the first)
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            labels.setdefault(lab, h)
    fig.legend(list(labels.values()), list(labels), loc="upper center", ncol=min(5, len(labels)), fontsize=8,
               bbox_to_anchor=(0.5, 0.9))
    partial = [d for d in durations if d not in OTHERS_DURATIONS]
    if partial and any(r["contender"] not in (REFERENCE, *FULL_SWEEP) for r in runs):
        notes.append(f"{' and '.join(f'{d * 1000:g} ms' for d in partial)} tasks: only {', '.join(FULL_SWEEP)} and "
                     f"the reference are measured; the other designs at {OTHERS_WORKERS[0]} and {OTHERS_WORKERS[1]} "
                     "workers on 0 and 1 ms tasks, enough to place them")
    for d in durations:
        short = sorted({(r["workers"], r["tasks"]) for r in runs if r["seconds"] == d and d
                        and -(-r["tasks"] // CHUNKSIZE) < r["workers"]})
        if short:
            notes.append(f"{d * 1000:g} ms tasks: " + ", ".join(f"{t} on {w} workers" for w, t in short)
                         + " make " + ", ".join(str(-(-t // CHUNKSIZE)) for w, t in short)
                         + f" chunk(s) of {CHUNKSIZE}: the reference runs them on that many workers (below 1× is its "
                           "chunking, not speed)")
    fig.suptitle(f"How much slower than the reference, {REFERENCE}, is each design on short tasks?",
                 fontsize=10)
    fig.tight_layout(rect=(0.01, 0.05 * len(notes), 1, 0.8))
    report._footnotes(fig, notes)
    return report._save(fig, out / "throughput.png")


def _tasks_label(runs: list[dict[str, Any]], d: float) -> str:
    """The panel's task count: one figure, or so many per worker where the count grows with the workers
    (PER_WORKER)."""
    counts = {r["workers"]: r["tasks"] for r in runs if r["seconds"] == d}
    per = {t // w for w, t in counts.items() if t % w == 0}
    if len(set(counts.values())) > 1 and len(per) == 1:
        return f"{per.pop():,} tasks per worker"
    return ", ".join(f"{t:,}" for t in sorted(set(counts.values()))) + " tasks"


def text(runs: list[dict[str, Any]], link_base: str = "results") -> str:
    """The README's lines: 20,000 tiny tasks side by side, and the supervisor against the ideal."""
    def total(c: str, w: int, d: float) -> str:
        r = next((r for r in runs if r["contender"] == c and r["workers"] == w and r["seconds"] == d), None)
        if r is None:
            return "n/a"
        if r.get("total"):
            times = [t for t in (r.get("runs") or []) if t]
            spread = f" (of {len(times)}: ≤ {max(times):.2f})" if len(times) > 1 else ""
            return f"{r['total']:.2f} s{spread}"
        error = r.get("error") or "n/a"
        if error.startswith(NOT_RUN):  # "not run: ~100 s predicted from ..." -> "not run (~100 s predicted)"
            return f"not run ({error[len(NOT_RUN):].split(' from ')[0]})"
        return error[:40]

    missing = [r for r in runs if "seconds" not in r]
    runs = [r for r in runs if "seconds" in r]
    contenders = [REFERENCE] + [c for c in dict.fromkeys(r["contender"] for r in runs) if c != REFERENCE]
    tiny = next((r["tasks"] for r in runs if r["seconds"] == 0.0), None)
    lines = []
    if tiny is not None:
        lines += [f"| {tiny:,} tiny tasks, start-up included: the best of up to {REPEATS} runs (of N: ≤ the slowest) | "
                  + " | ".join(f"{w} workers" for w in (2, 8)) + " |",
                  "|---|---|---|"]
        for c in contenders:
            lines.append(f"| `{c}` | {total(c, 2, 0.0)} | {total(c, 8, 0.0)} |")
        for r in missing:
            lines.append(f"| `{r['contender']}` | not installed | not installed |")
    pts = with_mid(runs, "supervisor")
    lines.append("")
    if not pts:
        lines.append("Supervisor once its workers are up: not in this raw data (no complete 1 ms or 10 ms point, or "
                     "data from before the rate once up was measured).")
    else:
        sup = max(pts, key=lambda r: r["mid"] / r["mid_ideal_nap"])
        durations, workers = sorted({r["seconds"] for r in pts}), sorted({r["workers"] for r in pts})
        lines.append(f"Once its workers are up (the time from the result at a quarter of the tasks to the result at "
                     f"three quarters, inside the same runs), on {' and '.join(f'{d * 1000:g} ms' for d in durations)} "
                     f"tasks at {', '.join(map(str, workers))} worker(s), the supervisor took at most "
                     f"{sup['mid'] / sup['mid_ideal_nap']:.3f}× the ideal (the results in that window × the nap's "
                     f"measured duration / workers; {sup['seconds'] * 1000:g} ms tasks, {sup['workers']} workers; "
                     f"{sup['mid'] / sup['mid_ideal']:.2f}× the nominal duration, the nap measuring "
                     f"{sup['nap'] * 1000:.3g} ms). Every point: "
                     + ", ".join(f"{r['workers']} worker(s) {r['seconds'] * 1000:g} ms {r['mid'] / r['mid_ideal_nap']:.3f}×"
                                 for r in pts)
                     + f". These are against the ideal; the chart, [throughput.png]({link_base}/throughput.png), "
                       f"draws every design against the reference, {REFERENCE}, start-up included.")
    return "\n".join(lines)


def with_mid(runs: list[dict[str, Any]], c: str) -> list[dict[str, Any]]:
    """``c``'s complete points of 1 ms and 10 ms tasks with a rate once the workers are up (``mid``). Not
    asked of the reference: ``map`` hands its results over in chunks of CHUNKSIZE, in order, so its window's
    ends fall on whole chunks (256 ms of work at 1 ms) and its ``mid`` is only that coarse."""
    return [r for r in runs if r["contender"] == c and r["seconds"] in PER_WORKER and r.get("mid")
            and r.get("mid_ideal_nap") and r.get("total") and not r.get("error")]
