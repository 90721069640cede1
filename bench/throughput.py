"""Throughput on the healthy path: how long each design takes for many short tasks, against the reference.

    python -m bench.throughput one '{"contender": "supervisor", "workers": 2, "seconds": 0.001, "tasks": 1000}'

Each point runs in a fresh process (this module, ``one``), so every contender pays its own start-up
alike: the process starts, imports, then the clock runs around the whole ``run()`` (workers spawned,
every task done, workers stopped). The same contender is also timed on one task that does nothing
(``up``): its start-up and shutdown, measured once per contender and worker count (it does not depend on
the task duration); ``total - up`` is the time once the workers are up, compared with the ideal
``tasks x seconds / workers``. The reference is ``ProcessPoolExecutor.map(chunksize=256)`` under spawn:
the fastest plain way to run many tiny tasks, knowing nothing of faults.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
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
# Seconds a point may take before it counts as "did not finish": only Dask's scheduler on 20,000 tiny tasks
# gets there (over 60 s measured). The slowest other point is the article's design at 8 workers on 20,000
# tiny tasks, 24 s measured: 40 s leaves it a 1.6x margin.
POINT_LIMIT = 40.0


def nap(seconds: float, item: int) -> int:
    """The task: sleep ``seconds`` (0: return at once), return the item. No event log, no payload."""
    if seconds:
        time.sleep(seconds)
    return item


def _one(spec: dict[str, Any]) -> dict[str, Any]:
    import functools

    contender, workers, seconds, tasks = spec["contender"], spec["workers"], spec["seconds"], spec["tasks"]
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


# Every duration and worker count for the contenders of the table (the reference, the supervisor,
# multiprocessing.Pool); the other designs at 2 and 8 workers on tiny and 1 ms tasks, which is enough to
# place them (Dask's scheduler alone takes ~25 s for 5,000 tiny tasks: each point is a minute of bench).
FULL_SWEEP = ("supervisor", "pool")
OTHERS_DURATIONS = (0.0, 0.001)
OTHERS_WORKERS = (2, 8)


def sweep(contenders: list[str], quick: bool, progress: Any = None) -> list[dict[str, Any]]:
    """Every point: each contender (the reference first) x task duration x workers. Quick: the issue's
    contenders only, tiny and 1 ms tasks, 2 workers."""
    out = []
    for contender in [REFERENCE, *contenders]:
        full = contender == REFERENCE or contender in FULL_SWEEP
        if quick and not full:
            continue
        durations = (0.0, 0.001) if quick else DURATIONS if full else OTHERS_DURATIONS
        workers = (2,) if quick else WORKERS if full else OTHERS_WORKERS
        ups: dict[int, float] = {}  # workers -> the contender's start-up and shutdown, measured once
        for seconds in durations:
            for w in workers:
                out.append(measure(contender, w, seconds, (QUICK_TASKS if quick else TASKS)[seconds], up=ups.get(w)))
                if out[-1].get("up") is not None:
                    ups[w] = out[-1]["up"]
                if progress is not None:
                    progress(f"throughput {contender} {seconds * 1000:g} ms w={w}")
    return out


def measure(contender: str, workers: int, seconds: float, tasks: int, python: str = sys.executable,
            up: float | None = None) -> dict[str, Any]:
    """One point, in a fresh process: total time, start-up (one task of no work; ``up`` when already
    measured for this contender and worker count), and the ideal."""
    out: dict[str, Any] = {"contender": contender, "variant": contender, "workers": workers, "seconds": seconds,
                           "tasks": tasks, "ideal": tasks * seconds / workers}
    if up is not None:
        out["up"] = up
    for key, n, s in (("total", tasks, seconds), ("up", 1, 0.0)):
        if key in out:
            continue
        spec = {"contender": contender, "workers": workers, "seconds": s, "tasks": n}
        # A session of its own, so that a point past its limit goes with every process it started (Dask's
        # nannies and workers), not only the one we started.
        proc = subprocess.Popen([python, "-m", "bench.throughput", "one", json.dumps(spec)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=POINT_LIMIT)
        except subprocess.TimeoutExpired:
            _kill_session(proc)
            out[key] = None
            out["error"] = f"did not finish within {POINT_LIMIT:.0f} s"
            break
        _kill_session(proc)  # anything the contender left behind after its own exit
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            out[key] = None
            out["error"] = (stderr or stdout)[-500:]
            break
        got = json.loads(lines[-1])
        if got["done"] != n:
            out["error"] = f"{got['done']} of {n} tasks done"
        out[key] = got["elapsed"]
    if out.get("total") is not None and out.get("up") is not None:
        out["steady"] = out["total"] - out["up"]
    return out


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL every process of ``proc``'s session (started with start_new_session: its process group is
    ``proc.pid``) with the lab's own group helpers, and reap ``proc``; bounded."""
    import psutil

    from experiments.lab.harness import REAP_LIMIT, group_members, kill_group

    kill_group(proc.pid)
    psutil.wait_procs(group_members(proc.pid), timeout=REAP_LIMIT)
    try:
        proc.communicate(timeout=REAP_LIMIT)
    except subprocess.TimeoutExpired:
        pass


if __name__ == "__main__":
    if sys.argv[1:2] == ["one"]:
        print(json.dumps(_one(json.loads(sys.argv[2]))), flush=True)


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
        for v in [c for c in dict.fromkeys(r["contender"] for r in runs) if c != REFERENCE]:
            pts = sorted((r["workers"], r["total"] / ref[(r["workers"], d)]) for r in runs
                         if r["contender"] == v and r["seconds"] == d and r.get("total") and (r["workers"], d) in ref)
            failed = [r for r in runs if r["contender"] == v and r["seconds"] == d and not r.get("total")]
            if failed:
                notes.append(f"{v}, {d * 1000:g} ms tasks: {len(failed)} point(s) not drawn "
                             f"({(failed[0].get('error') or '')[:60].strip()})")
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
        return f"{r['total']:.2f} s" if r and r.get("total") else "n/a"

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
    sup = [r for r in runs if r["contender"] == "supervisor" and r["seconds"] >= 0.001 and r.get("steady")]
    worst = max(sup, key=lambda r: r["steady"] / r["ideal"]) if sup else None
    if worst is not None and worst["steady"] <= 0:  # the work was smaller than the start-up's own spread
        lines += ["", "Supervisor once its workers are up: the work was too short to measure against its start-up "
                      "here (a --quick run?)."]
    elif worst is not None:
        lines.append("")
        lines.append(f"Supervisor, once its workers are up (total minus a one-task run), on 1 ms and 10 ms tasks: at "
                     f"most {worst['steady'] / worst['ideal']:.2f}× the ideal tasks × duration / workers "
                     f"({worst['seconds'] * 1000:g} ms tasks, {worst['workers']} workers). Chart: "
                     f"[throughput.png]({link_base}/throughput.png).")
    return "\n".join(lines)
