"""Rebuild every chart and table in a results folder from its raw/*.json, and the README's sections.

Nothing here measures: it only reads raw data. Stale derived files are removed first, so what is in
the folder is exactly what the raw data supports.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402

from bench import huge, throughput  # noqa: E402
from experiments.lab.scenarios import CRASH_WORDS, HUNG_GRACE  # noqa: E402
from variants import VARIANTS  # noqa: E402

MARK = "<!-- bench:{name}:{edge} -->"
SWEEPS = ("matrix", "latency_workers", "latency_payload", "memory_tasks", "memory_payload", "memory_trace",
          "overhead", "throughput", "huge")
BASELINE = "plain_executor"
FAULT_ORDER = ["worker_raises", "worker_raises_every", "worker_killed", "worker_crash_KillSelfAt",
               "worker_crash_SegfaultAt", "worker_crash_ExitAt", "worker_oom", "callback_raises", "run_timeout",
               "hang_with_timeout", "hang_no_timeout", "task_timeout", "hang_ignoring_sigterm", "hang_in_child_process",
               "main_raises", "main_killed", "ctrl_c", "many_tiny_tasks", "memory_limit_overrun"]
# The latency charts: one panel per fault, the three places a fault starts (the job, the worker process,
# the main process's callback). The OOM kill takes the SIGKILL path and timeouts are deadlines, both
# measured at 4 workers in the matrix.
LATENCY_FAULTS = {
    "worker_raises": "a worker raises",
    "worker_killed": "a worker is SIGKILLed",
    "callback_raises": "the result callback raises",
}
PAYLOAD_FAULTS = {"worker_killed": "a worker is SIGKILLed", "callback_raises": "the result callback raises"}
# Matrix rows in words; a scenario not listed here keeps the title it was measured with.
# Titles in words for raw data measured before the scenarios carried them (their titles named job classes).
PLAIN_TITLES = {f"worker_crash_{kind}": f"a worker dies by itself: {words}" for kind, words in CRASH_WORDS.items()}
SKIPPED = ("not_installed", "not_supported", "not_run")


RECOMMENDED = "supervisor"  # the design to copy: drawn in black, thicker and on top, in every chart


def color(variant: str) -> str:
    """The recommended design is black, a colour no other design has; the others take tab10's in registry order."""
    if variant == RECOMMENDED:
        return "black"
    names = [v for v in VARIANTS if v != RECOMMENDED]
    if variant in names:
        return plt.get_cmap("tab10")(names.index(variant))
    return "0.4"


def line(variant: str) -> dict[str, Any]:
    """Line width and drawing order: the recommended design's line is set apart from the peers' and on top."""
    return {"lw": 2.6, "zorder": 4} if variant == RECOMMENDED else {"lw": 1.2, "zorder": 2}


def worker_ticks(ax, workers: list[int]) -> None:
    """Ticks at the worker counts measured, written 1, 2, 4, 8 (not 2^0 .. 2^3) on a log-2 axis."""
    ax.set_xticks(workers, [str(w) for w in workers])
    ax.xaxis.set_minor_locator(ticker.NullLocator())


def readable_log_axis(axis) -> None:
    """Labels at 1, 2 and 5 of every decade, in plain numbers, so points between two decades can be read off."""
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=(3.0, 4.0, 6.0, 7.0, 8.0, 9.0)))


def load(folder: Path) -> dict[str, Any]:
    return {f.stem: json.loads(f.read_text()) for f in sorted((folder / "raw").glob("*.json"))}


def med(values: list[float]) -> tuple[float, float, float] | None:
    vals = [v for v in values if v is not None]
    return (statistics.median(vals), min(vals), max(vals)) if vals else None


def ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


# -- the fault matrix --------------------------------------------------------------------------------
def cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Summarise the repetitions of one (variant, fault)."""
    statuses = sorted({r["status"] for r in runs})
    first = runs[0]
    kinds = sorted({str(r.get("kind") or r.get("exc_type")) for r in runs if r["status"] == "raised"})
    if statuses == ["raised"]:
        outcome = "raised " + "/".join(kinds)
    elif statuses == ["returned"] and first.get("fault_item") is None and all(all_done(r) for r in runs):
        # no item is at fault (a job leaves a helper running): a success; "left running" says the rest
        outcome = "returned: every item done"
    elif statuses == ["returned"] and all(recovered(r) for r in runs):
        outcome = "recovered: task re-ran"
    elif statuses == ["returned"] and all(all_done(r) for r in runs):
        # the fault's task ran once, to its end: billiard's max_memory_per_child (checked after a task, so the
        # overrunning task finishes), or a job using a process pool of its own in a design that allows it
        outcome = "returned: every item done, the fault's task ran to its end"
    elif len(statuses) == 1:
        outcome = {"hung": "HANGS", "over_watchdog": over_watchdog(runs), "parent_killed": "parent killed",
                   "returned": "returned, fault not reported",
                   "runner_died": "the main process died (no exception, no report)",
                   "not_supported": "not supported", "not_run": "not run",
                   "not_installed": "not installed"}.get(statuses[0], statuses[0])
        starts = [r.get("fault_starts") or 0 for r in runs]
        if statuses == ["hung"] and min(starts) > 2:
            # not stuck but looping: the design keeps re-running the task whose run is the fault (Dask, a worker
            # killed while sending): said, since "HANGS" alone reads as a wait on something that never comes
            outcome += f", re-running the fault's task ({min(starts)}+ starts)"
    else:
        # two outcomes over the repetitions: both said, with how often, never whichever came last
        words = {"hung": "HANGS", "over_watchdog": "over the watchdog", "returned": "returned",
                 "runner_died": "the main process died"}
        outcome = f"mixed over {len(runs)} runs: " + ", ".join(
            f"{'raised ' + '/'.join(kinds) if s == 'raised' else words.get(s, s)} x{sum(r['status'] == s for r in runs)}"
            for s in statuses)
    det = med([r.get("detect") for r in runs if r["status"] == "raised"])
    culprit = None if first.get("fault_item") is None else all(r.get("culprit_named") for r in runs)
    exitcode = sorted({r.get("exitcode") for r in runs if r.get("exitcode") is not None})
    left = max((r.get("left_running") or 0) for r in runs)
    orph = med([r.get("orphans_exit") for r in runs])
    accounted = [r.get("items_accounted") for r in runs]
    return {"outcome": outcome, "detect": det, "culprit": culprit, "exitcode": exitcode, "left": left,
            "accounted": (False if False in accounted else True if all(a is True for a in accounted)
                          else None if all(a is None for a in accounted) else "partly"),
            "orphans_exit": orph, "lingered": any(r.get("lingered") for r in runs), "n": len(runs),
            "exit": med([r.get("exit") for r in runs])}


def over_watchdog(runs: list[dict[str, Any]]) -> str:
    """A run the harness cut while it still worked: how long it had, and that there is no verdict."""
    walls = [r["wall"] for r in runs if r.get("wall")]
    return (f"over the watchdog: still working when cut at {max(walls):.0f} s, no verdict" if walls
            else "over the watchdog: still working when cut, no verdict")


def all_done(r: dict[str, Any]) -> bool:
    """run() returned after the fault with every item done."""
    return r["status"] == "returned" and r.get("completed") is not None and r.get("completed") == r.get("items")


def recovered(r: dict[str, Any]) -> bool:
    """Every item done and the fault's item started more than once: the design re-ran the lost task itself.
    (A record from before ``fault_starts`` was measured counts every item done as a re-run.)"""
    return all_done(r) and (r.get("fault_starts") is None or r["fault_starts"] > 1)


def matrix_cells(raw: dict[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    runs = raw.get("matrix", {}).get("runs", [])
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    titles: dict[str, str] = {}
    for r in runs:
        groups[(r["scenario"], r["variant"])].append(r)
        if r.get("title") or r["scenario"] not in titles:  # a "not run" record may carry no title
            titles[r["scenario"]] = PLAIN_TITLES.get(r["scenario"]) or r.get("title") or r["scenario"]
    faults = [f for f in FAULT_ORDER if f in titles] + sorted(set(titles) - set(FAULT_ORDER))
    variants = [v for v in VARIANTS if any(k[1] == v for k in groups)]
    return faults, variants, {k: cell(v) for k, v in groups.items()} | {("_title", f): titles[f] for f in titles}


def short(c: dict[str, Any]) -> str:
    text = c["outcome"]
    if c["detect"] is not None and c["outcome"].startswith("raised"):
        text += f" in {ms(c['detect'][0])}"
    if c["lingered"]:
        text += ", process never exits"
    elif c["exit"] is not None and c["exit"][0] > 1:
        text += f", exits {ms(c['exit'][0])} later"
    if c["outcome"] == "parent killed":
        text += ": orphans gone in " + ms(c["orphans_exit"][0]) if c["orphans_exit"] else ": orphans survive"
    elif c["left"]:
        text += f", {c['left']} process(es) left"
    if c["culprit"] is True:
        text += ", item named"
    return text


def matrix_markdown(raw: dict[str, Any], compact: bool) -> str:
    faults, variants, cells = matrix_cells(raw)
    if not faults:
        return "_No matrix data: run `python bench/run.py`._\n"
    if compact:
        lines = ["| fault | " + " | ".join(f"`{v}`" for v in variants) + " |",
                 "|---|" + "---|" * len(variants)]
        for f in faults:
            row = [short(cells[(f, v)]) if (f, v) in cells else "—" for v in variants]
            lines.append(f"| {cells[('_title', f)]} | " + " | ".join(row) + " |")
        return "\n".join(lines) + "\n"
    lines = ["Items accounted: every item is either done (its callback returned, once) or in the report's list "
             "of what is left, never both; n/a: the design keeps no per-item account, or run() never came back.\n",
             "| fault | variant | outcome | detection median [min–max] | culprit named | exit code | "
             "left running | orphans gone after | items accounted | runs |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for f in faults:
        for v in variants:
            c = cells.get((f, v))
            if c is None:
                continue
            d = c["detect"]
            det = f"{ms(d[0])} [{ms(d[1])}–{ms(d[2])}]" if d else "—"
            culprit = {True: "yes", False: "no", None: "n/a"}[c["culprit"]]
            orph = ms(c["orphans_exit"][0]) if c["orphans_exit"] else ("never (within watch)"
                                                                       if c["outcome"] == "parent killed" else "—")
            accounted = {True: "yes", False: "NO", None: "n/a", "partly": "partly"}[c["accounted"]]
            lines.append(f"| {cells[('_title', f)]} | `{v}` | {c['outcome']}{' (lingers)' if c['lingered'] else ''} "
                         f"| {det} | {culprit} | {', '.join(map(str, c['exitcode'])) or '—'} | {c['left']} | {orph} "
                         f"| {accounted} | {c['n']} |")
    return "\n".join(lines) + "\n"


# -- charts ------------------------------------------------------------------------------------------
def _dodge(x: float, k: int, count: int, base: float) -> float:
    """Shift design k's marker sideways on a log axis (7% of the tick spacing per design), so
    designs at the same point sit side by side instead of one behind the other."""
    return x * base ** (0.07 * (k - (count - 1) / 2))


def skipped_notes(runs: list[dict[str, Any]], x_key: str | None = None) -> list[str]:
    """One footnote per design and reason for points that were not measured (package missing, not supported,
    over a budget): a line that stops, or a design that is absent, says why under the chart."""
    xs: dict[tuple[str, str], set[Any]] = defaultdict(set)
    why: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in runs:
        if r["status"] in SKIPPED:
            key = (r["variant"], r["status"])
            xs[key].add(r.get(x_key) if x_key else None)
            if r.get("message") and r["message"] not in why[key]:
                why[key].append(r["message"])
    out = []
    for (v, status), points in xs.items():
        what = {"not_installed": "not installed", "not_supported": "not supported (refuses task_timeout)",
                "not_run": "not run"}[status]
        shown_at = sorted(points - {None})
        where = "" if status == "not_installed" or not shown_at else " at " + ", ".join(f"{x:,}" for x in shown_at)
        reasons = why[(v, status)]
        because = "" if not reasons or status == "not_supported" else \
            f" ({reasons[0]})" if len(reasons) == 1 else f" (e.g. {reasons[0]})"
        out.append(f"{v}{where}: {what}{because}"[:180])
    return out


NOTE_IN = 0.15  # inches per footnote line (7 pt text)


def _footnotes(fig, notes: list[str], bottom: float = 0.0) -> None:
    """Footnotes under everything else, one line each."""
    if notes:
        fig.text(0.01, 0.01, "\n".join(notes), fontsize=7, va="bottom")


def _latency_panel(ax, runs: list[dict[str, Any]], x_key: str, title: str, top: float) -> set[str]:
    """Median detection (min–max bars) per design; a design that never noticed is an ✕ in the band above
    `top` (drawn at the watchdog's cut), one that recovered by itself is a hollow square. Returns the kinds of
    mark drawn ("raised", "hung", "over_watchdog", "recovered"), for the legend. A run still working when the
    harness cut it (status "over_watchdog") is a triangle in the same band: no verdict, not a hang."""
    by_v: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r["status"] not in SKIPPED:
            by_v[r["variant"]][r[x_key]].append(r)
    shown = [v for v in VARIANTS if v in by_v]
    base = 10 if x_key == "n" else 2
    drawn: set[str] = set()
    for k, v in enumerate(shown):
        xs, ys, lo, hi, hung_x, rec_x, rec_y, over_x = [], [], [], [], [], [], [], []
        for x in sorted(by_v[v]):
            rs = by_v[v][x]
            det = med([r.get("detect") for r in rs if r["status"] == "raised"])
            if det:
                xs.append(_dodge(x, k, len(shown), base))
                ys.append(det[0])
                lo.append(det[0] - det[1])
                hi.append(det[2] - det[0])
            if any(r["status"] == "hung" or (r["status"] == "returned" and not recovered(r)) for r in rs):
                hung_x.append(_dodge(x, k, len(shown), base))
            if any(r["status"] == "over_watchdog" for r in rs):
                over_x.append(_dodge(x, k, len(shown), base))
            back = med([r.get("detect") for r in rs if recovered(r)])
            if back:
                rec_x.append(_dodge(x, k, len(shown), base))
                rec_y.append(back[0])
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", ms=4, capsize=2, color=color(v), label=v, **line(v))
            drawn.add("raised")
        if hung_x:
            ax.scatter(hung_x, [top * 2.0] * len(hung_x), marker="X", s=55, color=color(v), edgecolors="black",
                       linewidths=0.5, zorder=5, label=None if xs else v)
            drawn.add("hung")
        if over_x:
            ax.scatter(over_x, [top * 2.0] * len(over_x), marker="^", s=55, color=color(v), edgecolors="black",
                       linewidths=0.5, zorder=5, label=None if xs or hung_x else v)
            drawn.add("over_watchdog")
        if rec_x:
            ax.scatter(rec_x, rec_y, marker="s", s=40, facecolors="white", edgecolors=color(v), linewidths=1.5,
                       zorder=5, label=None if xs or hung_x or over_x else v)
            drawn.add("recovered")
    ax.axhspan(top * 1.4, top * 6, color="0.92", zorder=0)
    ax.text(0.5, top * 4.2, "never noticed (cut at the watchdog)", transform=ax.get_yaxis_transform(), fontsize=7,
            va="center", ha="center", color="0.3")
    ax.set_title(title, fontsize=10)
    ax.set_yscale("log")
    ax.set_ylim(top=top * 6)
    ax.set_xscale("log", base=10 if x_key == "n" else 2)
    if x_key == "workers":
        worker_ticks(ax, sorted({r[x_key] for r in runs}))
    ax.grid(True, which="both", alpha=0.3)
    return drawn


def _marker_legend(drawn: set[str]) -> list[Any]:
    """Legend entries for the kinds of mark some panel drew, and only those."""
    from matplotlib.lines import Line2D

    marks = {"raised": Line2D([], [], marker="o", color="0.3", lw=1.2, label="run() raised: median, bar = min–max"),
             "hung": Line2D([], [], marker="X", color="0.3", markeredgecolor="black", lw=0, ms=8,
                            label="never noticed: the run hung until the watchdog (its processes idle, or "
                                  "re-running the fault's task)"),
             "over_watchdog": Line2D([], [], marker="^", color="0.3", markeredgecolor="black", lw=0, ms=8,
                                     label="over the watchdog: still working when cut, so no verdict"),
             "recovered": Line2D([], [], marker="s", color="0.3", markerfacecolor="white", lw=0, ms=7,
                                 label="recovered: task re-ran, run() returned (time to return)")}
    return [h for kind, h in marks.items() if kind in drawn]


def _latency_chart(runs: list[dict[str, Any]], faults: dict[str, str], x_key: str, xlabel: str, title: str,
                   path: Path) -> str | None:
    panels = [f for f in faults if any(r["scenario"] == f for r in runs)]
    if not panels:
        return None
    measured = [r.get("detect") for r in runs if r["status"] in ("raised", "returned") and r.get("detect")]
    top = max(measured, default=1.0)
    notes = skipped_notes(runs, x_key)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6 + NOTE_IN * len(notes)), squeeze=False,
                             sharey=True)
    drawn: set[str] = set()
    for ax, f in zip(axes.flat, panels, strict=True):
        drawn |= _latency_panel(ax, [r for r in runs if r["scenario"] == f], x_key, faults[f], top)
        ax.set_xlabel(xlabel)
    axes.flat[0].set_ylabel("fault → run() raises (s, log)")
    _legend(fig, axes, extra=_marker_legend(drawn), notes=len(notes))
    _footnotes(fig, notes)
    fig.suptitle(title)
    return _save(fig, path)


def chart_latency_workers(raw: dict[str, Any], out: Path) -> str | None:
    runs = [r for r in raw.get("latency_workers", {}).get("runs", []) if r["scenario"] in LATENCY_FAULTS]
    runs += [r for r in raw.get("matrix", {}).get("runs", []) if r["scenario"] in LATENCY_FAULTS]
    return _latency_chart(runs, LATENCY_FAULTS, "workers", "workers in the pool",
                          "Does noticing a fault take longer with more workers?", out / "latency_vs_workers.png")


def chart_latency_payload(raw: dict[str, Any], out: Path) -> str | None:
    runs = raw.get("latency_payload", {}).get("runs", [])
    # The matrix's points (4 workers, its own payload) are this chart's points at that payload.
    runs += [r for r in raw.get("matrix", {}).get("runs", []) if r["scenario"] in PAYLOAD_FAULTS
             and r.get("workers") == 4 and r.get("n") not in {x.get("n") for x in runs if x["scenario"] == r["scenario"]
                                                              and x["variant"] == r["variant"]}]
    return _latency_chart(runs, PAYLOAD_FAULTS, "n", "result size: ints per result",
                          "Does a bigger result slow down noticing a fault? (4 workers)", out / "latency_vs_payload.png")


def chart_memory(raw: dict[str, Any], out: Path, sweep: str, x_key: str, xlabel: str, title: str,
                 guides: bool = False) -> str | None:
    runs = raw.get(sweep, {}).get("runs", [])
    measured = [r for r in runs if r.get("peak_rss_mb") and r.get(x_key) is not None]
    if not measured:
        return None
    notes = skipped_notes(runs, x_key)
    by_v: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in measured:
        by_v[r["variant"]].append(r)
    failed = [r for r in runs if r["status"] not in (*SKIPPED, "returned")]
    notes += [f"{r['variant']} at {r.get(x_key):,}: {r['status']} (no peak drawn)" for r in failed]
    fig, ax = plt.subplots(figsize=(8, 5.5 + NOTE_IN * len(notes)))
    shown = [v for v in VARIANTS if v in by_v]
    for k, v in enumerate(shown):
        pts = sorted(by_v[v], key=lambda r: r[x_key])
        ax.plot([_dodge(r[x_key], k, len(shown), 1.5) for r in pts], [r["peak_rss_mb"] for r in pts], marker="o",
                ms=4, color=color(v), label=v, **line(v))
    if guides:  # what holding one result, or every result, costs: a list of n small ints is n pointers
        xs = sorted({r[x_key] for r in measured})
        base = min(r["peak_rss_mb"] for r in measured)
        items = max((r.get("items") or 0) for r in measured)
        ax.plot(xs, [base + x * 8 / 2**20 for x in xs], ls="--", color="0.5", lw=1, label="baseline + one result")
        ax.plot(xs, [base + items * x * 8 / 2**20 for x in xs], ls=":", color="0.2", lw=1.2,
                label=f"baseline + all {items} results")
    ax.set_xscale("log")
    ax.set_yscale("log")
    readable_log_axis(ax.yaxis)  # the designs cluster at 20-50 MiB: labels at 20, 50 and between
    ax.set_xlabel(xlabel)
    ax.set_ylabel("main process peak RSS (MiB, kernel high-water mark)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout(rect=(0, (NOTE_IN * len(notes) + 0.1) / fig.get_figheight() if notes else 0, 1, 1))
    _footnotes(fig, notes)
    return _save(fig, out / f"{sweep}.png")


def chart_memory_trace(raw: dict[str, Any], out: Path) -> str | None:
    all_runs = raw.get("memory_trace", {}).get("runs", [])
    runs = [r for r in all_runs if r.get("memory_trace")]
    if not runs:
        return None
    notes = skipped_notes(all_runs, "n")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4 + NOTE_IN * len(notes)), sharex=True)
    for r in sorted(runs, key=lambda r: list(VARIANTS).index(r["variant"]) if r["variant"] in VARIANTS else 99):
        t = [p[0] for p in r["memory_trace"]]
        axes[0].plot(t, [p[1] for p in r["memory_trace"]], color=color(r["variant"]), label=r["variant"],
                     **line(r["variant"]))
        axes[1].plot(t, [p[2] for p in r["memory_trace"]], color=color(r["variant"]), label=r["variant"],
                     **line(r["variant"]))
    axes[0].set_title("main process RSS", fontsize=10)
    axes[1].set_title("all worker (and Manager) processes, summed RSS", fontsize=10)
    for ax in axes:
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("MiB")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    items = runs[0].get("items")
    fig.suptitle(f"Does memory stay flat during a run? {items} tasks of 1,000,000 ints, 4 workers (sampled every 50 ms)")
    fig.tight_layout(rect=(0, (NOTE_IN * len(notes) + 0.1) / fig.get_figheight() if notes else 0, 1, 1))
    _footnotes(fig, notes)
    return _save(fig, out / "memory_over_time.png")


def seconds_per_task(row: dict[str, Any]) -> float:
    """An overhead record's median round per task: a design too slow for every task ran a tenth of them
    (bench/test_overhead.py, TENTH_ROUND), so records compare per task, never per round."""
    return row["median_s"] / row["tasks"]


def chart_overhead(raw: dict[str, Any], out: Path) -> str | None:
    runs = raw.get("overhead", {}).get("runs", [])
    base = next((r for r in runs if r["variant"] == BASELINE), None)
    if not runs or base is None:
        return None
    rows = {r["variant"]: r for r in runs}
    order = [BASELINE] + [v for v in VARIANTS if v in rows]
    missing = [v for v in VARIANTS if v not in rows]
    notes = [f"{v}: not measured ({VARIANTS[v].available()[1] or 'not in this run'})" for v in missing]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(order) + 1.6 + NOTE_IN * len(notes)))
    rel = [seconds_per_task(rows[v]) / seconds_per_task(base) for v in order]
    ys = list(range(len(order)))[::-1]
    bars = ax.barh(ys, rel, color=["white" if v == BASELINE else color(v) for v in order], edgecolor="black",
                   linewidth=0.6, hatch=["//" if v == BASELINE else "" for v in order])
    ax.set_yticks(ys, [f"{v} (baseline)" if v == BASELINE else v for v in order])
    for b, v in zip(bars, order, strict=True):
        per_task = seconds_per_task(rows[v]) * 1e6
        once = f", {rows[v]['rounds']} round" if rows[v]["rounds"] != base["rounds"] else ""
        once += f" of {rows[v]['tasks']:,} tasks" if rows[v]["tasks"] != base["tasks"] else ""
        ax.annotate(f"{rel[order.index(v)]:.2f}×, {per_task:.0f} µs/task{once}", (max(b.get_width(), 1.0), b.get_y()
                    + b.get_height() / 2), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8,
                    bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none"})
    ax.axvline(1.0, ls="--", color="black", lw=1)
    ax.set_xscale("log")
    ax.set_xlim(right=max(rel) * 8)
    ax.set_xlabel(f"time per task relative to {BASELINE} (dashed line = 1×; median of {base['rounds']} rounds)")
    ax.set_title(f"What does each design cost when nothing fails?\n{base['tasks']:,} tiny tasks, {base['workers']} "
                 "workers, start-up included", fontsize=10)
    fig.tight_layout(rect=(0, (NOTE_IN * len(notes) + 0.1) / fig.get_figheight() if notes else 0, 1, 1))
    _footnotes(fig, notes)
    return _save(fig, out / "overhead.png")


def _legend(fig, axes, extra: list[Any] = (), notes: int = 0) -> None:
    labels: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                labels[lab] = h
    designs = [v for v in VARIANTS if v in labels]
    handles = [labels[v] for v in designs] + list(extra)
    names = designs + [h.get_label() for h in extra]
    height = fig.get_figheight()
    notes_frac = (NOTE_IN * notes + 0.1) / height if notes else 0.0
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, notes_frac))
    rows = max((len(handles) + 3) // 4, 1)
    fig.tight_layout(rect=(0, notes_frac + (0.2 * rows + 0.15) / height, 1, 0.94))


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


# -- text --------------------------------------------------------------------------------------------
def stamp_text(raw: dict[str, Any]) -> str:
    """The environment stamp; when sweeps were re-run separately (--only-sweeps), one line per stamp."""
    groups: dict[str, list[str]] = defaultdict(list)
    stamps: dict[str, dict[str, Any]] = {}
    for name, d in raw.items():
        if "stamp" in d and name != SUITE:
            key = f"{d['stamp']['git_commit']}|{d['stamp']['date']}"
            groups[key].append(name)
            stamps[key] = d["stamp"]
    lines = []
    for key, names in groups.items():
        st = stamps[key]
        pk = ", ".join(f"{k} {v}" for k, v in st["packages"].items() if v)
        which = "" if len(groups) == 1 else f"Sweeps {', '.join(sorted(names))}: "
        took = f"{st['bench_seconds'] / 60:.1f} min" if st.get("mode") else "?"
        if st.get("incomplete"):
            took += f", INCOMPLETE: {st['incomplete']}"
        reps = f"{st['reps']} repetition(s)" + (f" of {', '.join(st['repeated'])}, one of every other matrix row"
                                                 if st.get("repeated") and st["reps"] > 1 else " of every matrix row")
        if st.get("concurrency"):
            reps += "; " + runs_at_once_text(st["concurrency"])
        elif st.get("jobs", 1) > 1:
            reps += f"; {shared_sweeps(st)} {st['jobs']} runs at a time" + (
                f", up to {st['most_runs_at_once']} while the CPU was idle" if (st.get("most_runs_at_once") or 0)
                > st["jobs"] else "")
        lines.append(f"{which}measured {st['date']} by `python bench/run.py` ({st['mode']} mode, {reps}; "
                     f"the run took {took}) on {st['cpus']} × {st['cpu']}, {st['memory_gib']} "
                     f"GiB, {st['os']}; {st['implementation']} {st['python']}, start method {st['start_method']}; "
                     f"{pk}; commit `{st['git_commit'][:10]}`{' (dirty)' if st['git_dirty'] else ''}; "
                     f"OOM cgroup: {st['oom_cgroup']}.")
    lines += kept_lines(raw)
    for name, d in raw.items():  # a sweep's rows re-measured after the run say so, and why
        if "stamp" in d and d["stamp"].get("amended"):
            lines.append(f"Amended ({name}): {d['stamp']['amended']}.")
    return "\n\n".join(lines)


def kept_lines(raw: dict[str, Any]) -> list[str]:
    """Records a run limited by --only kept from an earlier run (bench/run.py keep_other_variants): whose they are."""
    lines = []
    for name, d in raw.items():
        for o in (d.get("stamp") or {}).get("kept_from") or []:
            count = sum(r.get("measured_by") == o for r in d.get("runs") or [])
            lines.append(f"Kept ({name}): {count} record(s) of designs that run did not run, measured by the run of "
                         f"{o['date']} on commit `{(o['git_commit'] or '?')[:10]}`{' (dirty)' if o['git_dirty'] else ''}.")
    return lines


def runs_at_once_text(conc: dict[str, int]) -> str:
    """The stamp's runs at a time per sweep, in words: "runs at a time: 6 in matrix, latency_workers, ...; the rest
    alone"."""
    by_n: dict[int, list[str]] = defaultdict(list)
    for sweep, n in conc.items():
        by_n[n].append(sweep)
    shared = [f"{n} in {', '.join(by_n[n])}" for n in sorted(by_n, reverse=True) if n > 1]
    return "runs at a time: " + ("; ".join(shared) + "; the rest alone" if shared else "every run alone")


def shared_sweeps(st: dict[str, Any]) -> str:
    """Which sweeps' runs shared the machine, from the stamp's ``overlapped`` list (older stamps: the fault ones)."""
    shared = st.get("overlapped", ["matrix"])
    kinds = [k for k, there in (("fault", any(not s.startswith("memory") for s in shared)),
                                ("memory", any(s.startswith("memory") for s in shared))) if there]
    return " and ".join(kinds) + " sweeps"


SUITE = "suite"  # raw/suite.json: written by the test suite itself (LAB_RECORD_SUITE=1 python -m pytest)


def installed(st: dict[str, Any]) -> str:
    """Which install a stamped command ran on: the README's (`.[dev]`, Dask included), or one without distributed
    (from before Dask joined `.[dev]`), where the Dask rows are skipped and the command is minutes shorter. A stamp
    lists a missing package with the version None."""
    if (st.get("packages") or {}).get("distributed"):
        return " on the README's install (`.[dev]`)"
    return " on an install without Dask"


def durations_text(raw: dict[str, Any]) -> str:
    """How long the README's two commands took here, from their own stamped records (never typed by hand)."""
    parts = []
    suite = raw.get(SUITE)
    if suite:
        st = suite["stamp"]
        parts.append(f"`python -m pytest`{installed(st)} took {suite['seconds'] / 60:.1f} min ({suite['passed']} passed, "
                     f"{suite['skipped']} skipped, {suite['workers']} xdist worker(s); {st['implementation']} "
                     f"{st['python']}, {st['cpus']} CPUs; {st['date']}, commit `{st['git_commit'][:10]}`"
                     f"{' (dirty)' if st['git_dirty'] else ''})")
    runs = {d["stamp"]["date"]: d["stamp"] for name, d in raw.items() if name != SUITE and "stamp" in d}
    for st in sorted(runs.values(), key=lambda st: st["date"]):
        sweeps = "every sweep" if set(st.get("sweeps") or []) >= set(SWEEPS) else ", ".join(st.get("sweeps") or [])
        alone = (max(st["concurrency"].values()) == 1) if st.get("concurrency") else st.get("jobs", 1) == 1
        flags = (" --quick" if st["mode"] == "quick" else "") + (" --alone" if alone else "")
        parts.append(f"`python bench/run.py{flags}`{installed(st)} took "
                     f"{st['bench_seconds'] / 60:.1f} min ({sweeps}; {st['date']})")
    if not parts:
        return ""
    return "Measured durations on this machine: " + "; ".join(parts) + ".\n"


def memory_article_text(raw: dict[str, Any]) -> str:
    runs = {r["items"]: r for r in raw.get("memory_article", {}).get("runs", []) if r.get("peak_rss_mb")}
    if len(runs) < 2:
        return ""
    few, many = min(runs), max(runs)
    a, b = runs[few]["peak_rss_mb"], runs[many]["peak_rss_mb"]
    return (f"Supervisor, the article's payload (1,000,000 ints per result): main process peak RSS "
            f"{a:.0f} MiB for {few:,} tasks, {b:.0f} MiB for {many:,} tasks ({(b - a) / a * 100:+.1f}%).\n")


def continue_timeout_text(raw: dict[str, Any]) -> str:
    """The supervisor's run timeout with every worker hung ignoring SIGTERM in continue mode: how late past
    the deadline plus one grace period run() raised (a loop stopping hung workers one by one: workers x grace)."""
    runs = raw.get("continue_timeout", {}).get("runs", [])
    if not runs:
        return ""
    timed = [r for r in runs if r.get("status") == "raised" and r.get("kind") == "timeout" and r.get("detect") is not None]
    first = runs[0]
    text = f"Supervisor, {first['title']}, {first['workers']} workers: "
    if timed:
        late = med([r["detect"] - HUNG_GRACE for r in timed])
        text += (f"`run()` raised timeout {ms(late[0])} after the deadline plus the grace "
                 f"(min–max {ms(late[1])}–{ms(late[2])}, {len(timed)} run(s)), not {first['workers']} × grace")
    others = [r for r in runs if r not in timed]
    if others:
        text += ("; " if timed else "") + f"{len(others)} run(s) ended otherwise: " + ", ".join(
            sorted({f"{r.get('status')} {r.get('kind') or ''}".strip() for r in others}))
    return text + ".\n"


def memory_limit_text(raw: dict[str, Any]) -> str:
    """Picking memory_limit from measured figures: the supervisor's workers' peak in the memory trace, and
    what the matrix's overrun row measured for it."""
    trace = next((r for r in raw.get("memory_trace", {}).get("runs", [])
                  if r["variant"] == "supervisor" and r.get("peak_children_mb")), None)
    if trace is None:
        return ""
    each = trace["peak_children_mb"] / trace["workers"]
    text = (f"Picking a `memory_limit`: in the memory trace (supervisor, results of 1,000,000 ints), its "
            f"{trace['workers']} workers together peaked at {trace['peak_children_mb']:.0f} MiB, about {each:.0f} MiB "
            f"each; a limit of about twice that leaves room for a larger response and still stops a runaway one. ")
    over = [r for r in raw.get("matrix", {}).get("runs", [])
            if r["scenario"] == "memory_limit_overrun" and r["variant"] == "supervisor" and r.get("detect")]
    if over:
        text += (f"A job past its limit was reported {ms(med([r['detect'] for r in over])[0])} after it began to "
                 f"allocate (matrix row \"{over[0]['title']}\"). ")
    return text + "\n"


def overhead_text(raw: dict[str, Any]) -> str:
    runs = {r["variant"]: r for r in raw.get("overhead", {}).get("runs", [])}
    base = runs.get(BASELINE)
    if not base:
        return ""
    parts = [f"`{v}` {seconds_per_task(r) / seconds_per_task(base):.2f}×"
             + (f" (of {r['tasks']:,})" if r["tasks"] != base["tasks"] else "") for v, r in runs.items() if v != BASELINE]
    return (f"Healthy-path time per task relative to a plain `ProcessPoolExecutor.submit` + `add_done_callback` loop "
            f"({base['tasks']:,} tiny tasks, start-up included): " + ", ".join(parts) + ".\n")


EVIDENCE = ["worker_raises", "worker_killed", "worker_oom", "callback_raises", "hang_ignoring_sigterm", "main_killed"]


def designs_markdown(raw: dict[str, Any]) -> str:
    """design | what breaks (its docstring's first line) | measured evidence (matrix cells) | link."""
    faults, variants, cells = matrix_cells(raw)
    lines = ["| design | its one sentence | measured (see the matrix) | code |", "|---|---|---|---|"]
    for v in VARIANTS:
        evidence = "<br>".join(f"{cells[('_title', f)]}: {short(cells[(f, v)])}" for f in EVIDENCE
                               if (f, v) in cells) or "not measured yet"
        path = VARIANTS[v].module.replace(".", "/")
        link = f"[{path}]({path}{'/' if (Path(__file__).parents[1] / path).is_dir() else '.py'})"
        lines.append(f"| `{v}` | {VARIANTS[v].summary} | {evidence} | {link} |")
    return "\n".join(lines) + "\n"


def render(folder: Path, readme: Path | None, link_base: str = "results") -> None:
    """Rebuild every derived file in ``folder`` from its raw data; ``readme``: also rewrite its generated
    sections, whose chart links point at ``link_base`` (the folder as the README reaches it)."""
    raw = load(folder)
    for old in [*folder.glob("*.png"), folder / "fault_matrix.md", folder / "README-section.md"]:
        if old.exists():
            old.unlink()
    charts = [c for c in (
        chart_latency_workers(raw, folder),
        chart_latency_payload(raw, folder),
        chart_memory(raw, folder, "memory_tasks", "items", "tasks in the run",
                     "Does the main process's memory grow with the number of tasks? (payload 10,000 ints)"),
        chart_memory(raw, folder, "memory_payload", "n", "result size: ints per result",
                     "Does the main process keep the results? Peak memory against result size, 20 tasks\n"
                     "(a line near the dashed guide holds one result at a time; near the dotted one, all of them)",
                     guides=True),
        chart_memory_trace(raw, folder),
        chart_overhead(raw, folder),
        throughput.chart(raw.get("throughput", {}).get("runs", []), folder),
        huge.chart(raw.get("huge", {}).get("runs", []), folder),
    ) if c]
    stamp = stamp_text(raw)
    (folder / "fault_matrix.md").write_text(
        "# Fault matrix\n\nGenerated by `python bench/run.py` from `raw/matrix.json`; do not edit.\n\n"
        + matrix_markdown(raw, compact=False) + "\n" + stamp + "\n")
    tp = raw.get("throughput", {}).get("runs", [])
    section = (matrix_markdown(raw, compact=True) + "\n" + memory_article_text(raw) + memory_limit_text(raw)
               + continue_timeout_text(raw)
               + overhead_text(raw) + "\n"
               + (throughput.text(tp, link_base) + "\n\n" if tp else "")
               + (huge.text(raw["huge"]["runs"], link_base) + "\n\n" if raw.get("huge", {}).get("runs") else "")
               + durations_text(raw) + "\n"
               + "\n".join(f"![{c}]({link_base}/{c})" for c in charts) + "\n\n" + stamp + "\n")
    (folder / "README-section.md").write_text(section)
    if readme is not None:
        for doc in (readme, readme.with_name("README.ja.md")):  # the Japanese README carries the same tables
            if doc.exists():
                text = replace_between(doc.read_text(), "results", section)
                doc.write_text(replace_between(text, "designs", designs_markdown(raw)))


def replace_between(text: str, name: str, body: str) -> str:
    begin, end = MARK.format(name=name, edge="begin"), MARK.format(name=name, edge="end")
    if begin not in text or end not in text:
        raise ValueError(f"README has no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + begin + "\n" + body.rstrip() + "\n" + end + tail
