"""Throughput on the healthy path: how long each design takes for many short tasks, against the reference.

    python -m bench.throughput points '{"contender": "supervisor", "workers": 2, "up": true,
                                        "points": [{"seconds": 0.001, "tasks": 1000}]}'

Each contender and worker count runs in a fresh process of its own (this module, ``points``), which first
imports the design and the library it wraps and runs one unrecorded task, then times each point: the clock
runs around the whole ``run()`` (workers spawned, every task done, workers stopped), so every figure
includes the design's own start-up and shutdown, for every contender alike. Each figure is the best of up
to ``REPEATS`` runs (see there), the same rule for every contender. The same process first times
one task that does nothing (``up``): that start-up and shutdown alone, which does not depend on the task
duration; ``total - up`` is the time once the workers are up, compared with the ideal
``tasks x seconds / workers``, and with the nap's own measured duration (``nap``: ``time.sleep`` overshoots,
by 14% for 1 ms on our machine, which no design can win back). The reference is
``ProcessPoolExecutor.map(chunksize=256)`` under spawn: the fastest plain way to run many tiny tasks, knowing
nothing of faults.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
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
# Tasks per point: enough that the work (tasks x duration) is about a second at 1 worker, and 20,000
# tiny tasks (the figure) where a task is no work at all.
TASKS = {0.0: 20_000, 0.0001: 10_000, 0.001: 1_000, 0.01: 100}
QUICK_TASKS = {0.0: 5_000, 0.0001: 2_000, 0.001: 200, 0.01: 20}
# Seconds a point may take before it counts as "did not finish". The slowest point that finishes is the
# article's design at 8 workers on 20,000 tiny tasks, 24 s measured: 40 s leaves it a 1.6x margin.
POINT_LIMIT = 40.0
# Seconds more for a process's first figure: it first starts, imports the design and runs one warm-up task
# (Dask: its imports and a first LocalCluster, up to ~10 s measured with the other core busy).
STARTUP_LIMIT = 30.0
NOT_RUN = "not run: "  # how a point skipped for its predicted time begins its error
# A point of tiny tasks takes a fraction of a second, and one run of it moves by about 30% with the scheduler
# on 2 busy cores (measured: 0.29-0.38 s for the same supervisor point, 0.16-0.20 s for the reference's). So a
# point is run again, up to REPEATS runs, while its runs so far took less than REPEAT_BUDGET seconds, and its
# figure is the best run (as timeit reports, and as the issue's own table was measured); every run of a point
# is kept in the raw data ("runs"; of ``up``, the best only). A point slower than the budget runs once: its
# noise is a small share of it. A point thus takes at most about REPEAT_BUDGET plus one run.
REPEATS = 3
REPEAT_BUDGET = 2.0


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


def _time(contender: str, workers: int, seconds: float, tasks: int) -> dict[str, Any]:
    import functools

    job = functools.partial(nap, seconds)  # picklable: a module-level function and a float
    done = 0

    def count(item: Any, result: Any) -> None:
        nonlocal done
        done += 1

    t0 = time.perf_counter()
    if contender == REFERENCE:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            for _ in ex.map(job, range(tasks), chunksize=CHUNKSIZE):
                done += 1
    else:
        from variants import VARIANTS

        VARIANTS[contender].run(job, range(tasks), workers=workers, on_result=count)
    return {"elapsed": time.perf_counter() - t0, "done": done}


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
    ``done`` is the fewest tasks any run did, so that one short run is not hidden by a complete one."""
    runs = [_time(contender, workers, seconds, tasks)]
    while len(runs) < REPEATS and sum(r["elapsed"] for r in runs) < REPEAT_BUDGET:
        runs.append(_time(contender, workers, seconds, tasks))
    return {"elapsed": min(r["elapsed"] for r in runs), "done": min(r["done"] for r in runs),
            "runs": [r["elapsed"] for r in runs]}


def _points(spec: dict[str, Any]) -> None:
    """The child: import, warm up, then ``up`` if asked, then each point; one JSON line per figure, as it is
    measured. The warm-up is one unrecorded one-task run: the first run() of a process also starts
    multiprocessing's resource tracker and fills the page cache (measured: a first one-task run 0.16 s, a
    2,000-task run after it 0.13 s), which only the first point would pay."""
    contender, workers = spec["contender"], spec["workers"]
    _import(contender)
    _time(contender, workers, 0.0, 1)
    todo = ([{"key": "up", "seconds": 0.0, "tasks": 1}] if spec.get("up") else []) + [
        {"key": "total", **p} for p in spec["points"]]
    naps = {s: _nap_seconds(s) for s in {p["seconds"] for p in todo}}
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
    run. A point that would take longer than ``POINT_LIMIT`` at that rate is not run, and says so with the
    figure it is predicted from (Dask's scheduler: ~5 ms per task, so 20,000 tiny tasks would take ~100 s;
    two such points cost 80 s of bench to learn "did not finish")."""
    out = []
    for contender in [REFERENCE, *contenders]:
        full = contender == REFERENCE or contender in FULL_SWEEP
        if quick and not full:
            continue
        durations = (0.0, 0.001) if quick else DURATIONS if full else OTHERS_DURATIONS
        for w in (2,) if quick else WORKERS if full else OTHERS_WORKERS:
            points = []
            for seconds in durations:
                tasks = (QUICK_TASKS if quick else TASKS)[seconds]
                point = {"contender": contender, "variant": contender, "workers": w, "seconds": seconds,
                         "tasks": tasks, "ideal": tasks * seconds / w}
                rate = (per_task or {}).get(contender)
                if rate and tasks * max(rate, seconds / w) > POINT_LIMIT:
                    point.update(total=None, error=f"{NOT_RUN}~{tasks * max(rate, seconds / w):.0f} s predicted from "
                                 f"the overhead sweep ({rate * 1000:.1f} ms per tiny task), past the "
                                 f"{POINT_LIMIT:.0f} s limit")
                points.append(point)
            out += measure(contender, w, points)
            if progress is not None:
                progress(f"throughput {contender} w={w}")
    return out


def measure(contender: str, workers: int, points: list[dict[str, Any]], python: str = sys.executable,
            limit: float = POINT_LIMIT) -> list[dict[str, Any]]:
    """Time ``points`` (dicts with ``seconds`` and ``tasks``; one already given a ``total`` of None is
    skipped) and the contender's ``up`` in one fresh process; each point gets ``total`` (its best run),
    ``runs``, ``up``, ``steady``, and for a task that sleeps ``nap`` (its measured duration) and ``ideal_nap``,
    or an ``error``. A point past ``limit`` ends its process (with everything it started); the
    points after it get a process of their own."""
    todo = [p for p in points if "total" not in p]
    up: float | None = None
    need_up = True
    while todo:
        spec = {"contender": contender, "workers": workers, "up": need_up,
                "points": [{"seconds": p["seconds"], "tasks": p["tasks"]} for p in todo]}
        # A session of its own, so that a point past its limit goes with every process it started (Dask's
        # nannies and workers), not only the one we started.
        with tempfile.TemporaryFile("w+") as stderr:
            proc = subprocess.Popen([python, "-m", "bench.throughput", "points", json.dumps(spec)], cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
            failed = _collect(proc, need_up, todo, limit, stderr)
        up_got = [p.pop("_up") for p in todo if "_up" in p]
        if up_got:
            up, need_up = up_got[0], False
        if failed is None:
            break
        if need_up:  # no figure at all from this contender and worker count: every point says why
            for p in todo:
                p.update(total=None, error=failed)
            break
        stuck = next(p for p in todo if "total" not in p)
        stuck.update(total=None, error=failed)
        todo = [p for p in todo if "total" not in p]
    for p in points:
        if p.get("nap"):
            p["ideal_nap"] = p["tasks"] * p["nap"] / workers  # the ideal with the nap's real duration
        if up is not None:
            p["up"] = up
            if p.get("total") is not None:
                p["steady"] = p["total"] - up
    return points


def _collect(proc: subprocess.Popen, need_up: bool, todo: list[dict[str, Any]], limit: float,
             stderr: Any) -> str | None:
    """Read the child's figures into ``todo`` (``up`` into the first point's ``_up``), each within ``limit``
    s (the first within ``STARTUP_LIMIT`` more); then end its session. Returns why it stopped early, or None."""
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    failed = None
    for n, p in enumerate(([None] if need_up else []) + todo):
        try:
            line = lines.get(timeout=limit + (STARTUP_LIMIT if n == 0 else 0.0))
        except queue.Empty:
            failed = f"did not finish within {limit:.0f} s"
            break
        if line is None:  # the process ended (or closed its stdout) without this figure
            try:
                proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                pass
            stderr.seek(0)
            failed = f"exited with code {proc.returncode} without a result: " + stderr.read()[-400:]
            break
        got = json.loads(line)
        if p is None:
            todo[0]["_up"] = got["elapsed"]
            continue
        p["total"], p["runs"] = got["elapsed"], got.get("runs")
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
    ref = {(r["workers"], r["seconds"]): r["total"] for r in runs
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
            pts = sorted((report._dodge(r["workers"], k, len(designs), 2), r["total"] / ref[(r["workers"], d)])
                         for r in runs if r["contender"] == v and r["seconds"] == d and r.get("total")
                         and (r["workers"], d) in ref)
            failed = [r for r in runs if r["contender"] == v and r["seconds"] == d and not r.get("total")]
            if failed:
                notes.append(f"{v}, {d * 1000:g} ms tasks: {len(failed)} point(s) not drawn "
                             f"({(failed[0].get('error') or '')[:110].strip()})")
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=4, label=v, color=report.color(v))
        ax.axhline(1.0, ls="--", color="black", lw=1)
        tasks = next(r["tasks"] for r in runs if r["seconds"] == d)
        ax.set_title(f"{d * 1000:g} ms per task ({tasks:,} tasks)", fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_xticks(WORKERS, [str(w) for w in WORKERS])
        ax.set_xlabel("workers")
        ax.set_yscale("log")
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
        tasks = next(r["tasks"] for r in runs if r["seconds"] == d)
        if d and tasks <= CHUNKSIZE * max(WORKERS):
            notes.append(f"{d * 1000:g} ms tasks: {tasks} tasks make {-(-tasks // CHUNKSIZE)} chunk(s) of {CHUNKSIZE}, "
                         "so the reference runs them on that many workers at most (below 1× is the reference's "
                         "chunking, not speed)")
    fig.suptitle(f"How much slower than the reference, {REFERENCE}, is each design on short tasks?",
                 fontsize=10)
    fig.tight_layout(rect=(0.01, 0.05 * len(notes), 1, 0.8))
    report._footnotes(fig, notes)
    return report._save(fig, out / "throughput.png")


def text(runs: list[dict[str, Any]], link_base: str = "results") -> str:
    """The README's lines: 20,000 tiny tasks side by side, and the supervisor against the ideal."""
    def total(c: str, w: int, d: float) -> str:
        r = next((r for r in runs if r["contender"] == c and r["workers"] == w and r["seconds"] == d), None)
        if r is None:
            return "n/a"
        if r.get("total"):
            return f"{r['total']:.2f} s"
        error = r.get("error") or "n/a"
        if error.startswith(NOT_RUN):  # "not run: ~100 s predicted from ..." -> "not run (~100 s predicted)"
            return f"not run ({error[len(NOT_RUN):].split(' from ')[0]})"
        return error[:40]

    missing = [r for r in runs if "seconds" not in r]
    runs = [r for r in runs if "seconds" in r]
    contenders = [REFERENCE] + [c for c in dict.fromkeys(r["contender"] for r in runs) if c != REFERENCE]
    tiny = next((r["tasks"] for r in runs if r["seconds"] == 0.0), None)
    lines = [f"| {tiny:,} tiny tasks, start-up included | " + " | ".join(f"{w} workers" for w in (2, 8)) + " |",
             "|---|---|---|"]
    for c in contenders:
        lines.append(f"| `{c}` | {total(c, 2, 0.0)} | {total(c, 8, 0.0)} |")
    for r in missing:
        lines.append(f"| `{r['contender']}` | not installed | not installed |")
    def steady(c: str) -> list[dict[str, Any]]:
        # Only points whose work (the ideal) is at least the start-up they are measured against: where the
        # one-task run takes longer than the work, total - up is mostly the start-up's own spread.
        # The reference: only where its chunks of CHUNKSIZE fill every worker (100 tasks are one chunk: one worker).
        return [r for r in runs if r["contender"] == c and r["seconds"] >= 0.001 and r.get("steady") is not None
                and r["ideal"] >= (r.get("up") or 0) and (c != REFERENCE or r["tasks"] >= CHUNKSIZE * r["workers"])]

    def worst(c: str) -> dict[str, Any] | None:
        pts = steady(c)
        return max(pts, key=lambda r: r["steady"] / r["ideal"]) if pts else None

    sup, ref = worst("supervisor"), worst(REFERENCE)
    lines.append("")
    if sup is None or sup["steady"] <= 0:
        lines.append("Supervisor once its workers are up: the work was too short to measure against its start-up "
                     "here (a --quick run?).")
    else:
        def at(r: dict[str, Any]) -> str:
            real = (f"; {r['steady'] / r['ideal_nap']:.2f}× with the nap's measured duration, "
                    f"{r['nap'] * 1000:.3g} ms") if r.get("ideal_nap") and r.get("nap") else ""
            return f"{r['steady'] / r['ideal']:.2f}× ({r['seconds'] * 1000:g} ms tasks, {r['workers']} workers{real})"

        lines.append(f"Once its workers are up (total minus a one-task run), on 1 ms and 10 ms tasks, at the points "
                     f"where the work is at least the start-up: the supervisor is at most {at(sup)} the ideal tasks × "
                     "duration / workers"
                     + (f"; the reference, where its chunks fill every worker, at most {at(ref)}" if ref else "")
                     + f". Chart: [throughput.png]({link_base}/throughput.png).")
    return "\n".join(lines)
