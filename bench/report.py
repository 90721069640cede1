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

from variants import VARIANTS  # noqa: E402

MARK = "<!-- bench:{name}:{edge} -->"
BASELINE = "plain_executor"
FAULT_ORDER = ["worker_raises", "worker_raises_every", "worker_killed", "worker_crash_KillSelfAt",
               "worker_crash_SegfaultAt", "worker_crash_ExitAt", "worker_oom", "callback_raises", "run_timeout",
               "hang_with_timeout", "hang_no_timeout", "task_timeout", "hang_ignoring_sigterm", "main_raises",
               "main_killed", "ctrl_c", "many_tiny_tasks"]
LATENCY_FAULTS = {
    "worker_raises": "worker raises",
    "worker_killed": "worker SIGKILLed",
    "worker_oom": "worker OOM-killed (kernel)",
    "callback_raises": "callback raises",
    "task_timeout": "task hangs (task_timeout=1 s)",
    "run_timeout": "whole-run timeout: overshoot",
}
PAYLOAD_FAULTS = {"worker_killed": "worker SIGKILLed", "callback_raises": "callback raises"}


def color(variant: str) -> str:
    names = list(VARIANTS)
    if variant in names:
        return plt.get_cmap("tab10")(names.index(variant))
    return "0.4"


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
    elif len(statuses) == 1:
        outcome = {"hung": "HANGS", "parent_killed": "parent killed", "returned": "returned (not detected)",
                   "not_supported": "not supported", "not_run": "not run",
                   "not_installed": "not installed"}.get(statuses[0], statuses[0])
    else:
        outcome = "mixed: " + ", ".join(f"{s} x{sum(r['status'] == s for r in runs)}" for s in statuses)
    det = med([r.get("detect") for r in runs if r["status"] == "raised"])
    culprit = None if first.get("fault_item") is None else all(r.get("culprit_named") for r in runs)
    exitcode = sorted({r.get("exitcode") for r in runs if r.get("exitcode") is not None})
    left = max((r.get("left_running") or 0) for r in runs)
    orph = med([r.get("orphans_exit") for r in runs])
    return {"outcome": outcome, "detect": det, "culprit": culprit, "exitcode": exitcode, "left": left,
            "accounted": all(r.get("items_accounted") for r in runs), "orphans_exit": orph,
            "lingered": any(r.get("lingered") for r in runs), "n": len(runs),
            "exit": med([r.get("exit") for r in runs])}


def matrix_cells(raw: dict[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    runs = raw.get("matrix", {}).get("runs", [])
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    titles: dict[str, str] = {}
    for r in runs:
        groups[(r["scenario"], r["variant"])].append(r)
        if r.get("title") or r["scenario"] not in titles:  # a "not run" record carries no title
            titles[r["scenario"]] = r.get("title") or r["scenario"]
    faults = [f for f in FAULT_ORDER if f in titles] + sorted(set(titles) - set(FAULT_ORDER))
    variants = [v for v in VARIANTS if any(k[1] == v for k in groups)]
    return faults, variants, {k: cell(v) for k, v in groups.items()} | {("_title", f): titles[f] for f in titles}


def short(c: dict[str, Any]) -> str:
    text = c["outcome"]
    if c["detect"] is not None:
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
    lines = ["| fault | variant | outcome | detection median [min–max] | culprit named | exit code | "
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
            lines.append(f"| {cells[('_title', f)]} | `{v}` | {c['outcome']}{' (lingers)' if c['lingered'] else ''} "
                         f"| {det} | {culprit} | {', '.join(map(str, c['exitcode'])) or '—'} | {c['left']} | {orph} "
                         f"| {'yes' if c['accounted'] else 'no'} | {c['n']} |")
    return "\n".join(lines) + "\n"


# -- charts ------------------------------------------------------------------------------------------
def _latency_panel(ax, runs: list[dict[str, Any]], x_key: str, title: str) -> None:
    by_v: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        by_v[r["variant"]][r[x_key]].append(r)
    unsupported = []
    for v in [v for v in VARIANTS if v in by_v]:
        pts = by_v[v]
        xs, ys, lo, hi, hung_x, hung_y = [], [], [], [], [], []
        for x in sorted(pts):
            rs = pts[x]
            if all(r["status"] in ("not_supported", "not_installed") for r in rs):
                unsupported.append(v)
                break
            det = med([r.get("detect") for r in rs if r["status"] == "raised"])
            if det:
                xs.append(x)
                ys.append(det[0])
                lo.append(det[0] - det[1])
                hi.append(det[2] - det[0])
            if any(r["status"] in ("hung", "returned") for r in rs):
                hung_x.append(x)
                hung_y.append(max(r.get("watchdog") or 1 for r in rs))
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", ms=4, capsize=3, color=color(v), label=v)
        if hung_x:
            ax.scatter(hung_x, hung_y, marker="^", s=60, color=color(v), edgecolors="black",
                       label=f"{v}: never detected (watchdog)" if not xs else None, zorder=5)
    ax.set_title(title, fontsize=10)
    ax.set_yscale("log")
    ax.set_xscale("log", base=10 if x_key == "n" else 2)
    ax.grid(True, which="both", alpha=0.3)
    if unsupported:
        ax.text(0.02, 0.02, "not supported: " + ", ".join(sorted(set(unsupported))), transform=ax.transAxes,
                fontsize=7, va="bottom")


def chart_latency_workers(raw: dict[str, Any], out: Path) -> str | None:
    runs = [r for r in raw.get("latency_workers", {}).get("runs", [])]
    runs += [r for r in raw.get("matrix", {}).get("runs", []) if r["scenario"] in LATENCY_FAULTS]
    faults = [f for f in LATENCY_FAULTS if any(r["scenario"] == f for r in runs)]
    if not faults:
        return None
    cols = 3 if len(faults) > 2 else len(faults)
    rows = (len(faults) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, f in zip(axes.flat, faults, strict=False):
        _latency_panel(ax, [r for r in runs if r["scenario"] == f], "workers", LATENCY_FAULTS[f])
        ax.set_xlabel("workers")
        ax.set_ylabel("fault → run() raises (s)")
    for ax in list(axes.flat)[len(faults):]:
        ax.axis("off")
    _legend(fig, axes)
    fig.suptitle("How long until run() reports the fault? (median, min–max; ▲ = never, cut at the watchdog)")
    return _save(fig, out / "latency_vs_workers.png")


def chart_latency_payload(raw: dict[str, Any], out: Path) -> str | None:
    runs = raw.get("latency_payload", {}).get("runs", [])
    faults = [f for f in PAYLOAD_FAULTS if any(r["scenario"] == f for r in runs)]
    if not faults:
        return None
    fig, axes = plt.subplots(1, len(faults), figsize=(5.5 * len(faults), 4), squeeze=False)
    for ax, f in zip(axes.flat, faults, strict=False):
        _latency_panel(ax, [r for r in runs if r["scenario"] == f], "n", PAYLOAD_FAULTS[f])
        ax.set_xlabel("payload: ints per result")
        ax.set_ylabel("fault → run() raises (s)")
    _legend(fig, axes)
    fig.suptitle("Does a bigger result slow down noticing a fault? (4 workers)")
    return _save(fig, out / "latency_vs_payload.png")


def chart_memory(raw: dict[str, Any], out: Path, sweep: str, x_key: str, xlabel: str, title: str) -> str | None:
    runs = raw.get(sweep, {}).get("runs", [])
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    by_v: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_v[r["variant"]].append(r)
    top = max((r.get("peak_rss_mb") or 0) for r in runs) or 1
    footnotes = []
    for v in [v for v in VARIANTS if v in by_v]:
        pts = sorted((r for r in by_v[v] if r.get("peak_rss_mb")), key=lambda r: r[x_key])
        if pts:
            ax.plot([r[x_key] for r in pts], [r["peak_rss_mb"] for r in pts], marker="o", color=color(v), label=v)
        for r in by_v[v]:
            if r["status"] == "not_run":  # drawn as ✕ above the data; the reason goes under the chart
                ax.scatter([r[x_key]], [top * 1.5], marker="x", s=60, color=color(v))
                footnotes.append(f"✕ {v} at {r[x_key]:,}: not run ({r['message']})")
            elif r["status"] not in ("returned",):
                ax.scatter([r[x_key]], [top * 1.5], marker="^", s=60, color=color(v))
                footnotes.append(f"▲ {v} at {r[x_key]:,}: {r['status']}")
    if footnotes:
        fig.text(0.01, 0.01, "\n".join(footnotes), fontsize=6.5, va="bottom")
        fig.subplots_adjust(bottom=0.14 + 0.035 * len(footnotes))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("main process peak RSS (MiB, kernel high-water mark)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / f"{sweep}.png")


def chart_memory_trace(raw: dict[str, Any], out: Path) -> str | None:
    runs = [r for r in raw.get("memory_trace", {}).get("runs", []) if r.get("memory_trace")]
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharex=True)
    for r in sorted(runs, key=lambda r: list(VARIANTS).index(r["variant"]) if r["variant"] in VARIANTS else 99):
        t = [p[0] for p in r["memory_trace"]]
        axes[0].plot(t, [p[1] for p in r["memory_trace"]], color=color(r["variant"]), label=r["variant"])
        axes[1].plot(t, [p[2] for p in r["memory_trace"]], color=color(r["variant"]), label=r["variant"])
    axes[0].set_title("main process RSS", fontsize=10)
    axes[1].set_title("all worker (and Manager) processes, summed RSS", fontsize=10)
    for ax in axes:
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("MiB")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    items = runs[0].get("items")
    fig.suptitle(f"Memory over one run: {items} tasks of 1,000,000 ints, 4 workers (sampled every 50 ms)")
    return _save(fig, out / "memory_over_time.png")


def chart_overhead(raw: dict[str, Any], out: Path) -> str | None:
    runs = raw.get("overhead", {}).get("runs", [])
    base = next((r for r in runs if r["variant"] == BASELINE), None)
    if not runs or base is None:
        return None
    order = [BASELINE] + [v for v in VARIANTS if any(r["variant"] == v for r in runs)]
    rows = {r["variant"]: r for r in runs}
    fig, ax = plt.subplots(figsize=(7, 4))
    rel = [rows[v]["median_s"] / base["median_s"] for v in order]
    bars = ax.bar(order, rel, color=[color(v) for v in order])
    for b, v in zip(bars, order, strict=True):
        per_task = rows[v]["median_s"] / rows[v]["tasks"] * 1e6
        ax.annotate(f"{per_task:.0f} µs/task", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                    va="bottom", fontsize=8)
    ax.axhline(1.0, ls="--", color="black", lw=1)
    ax.set_yscale("log")
    ax.set_ylabel(f"time / {BASELINE} (median of {base['rounds']} rounds)")
    ax.set_title(f"Healthy path: {base['tasks']:,} tiny tasks, {base['workers']} workers, start-up included",
                 fontsize=10)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    return _save(fig, out / "overhead.png")


def _legend(fig, axes) -> None:
    labels: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                labels[lab] = h
    handles = list(labels.values())
    fig.legend(handles, list(labels), loc="lower center", ncol=min(4, len(handles)) or 1, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))


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
        if "stamp" in d:
            key = f"{d['stamp']['git_commit']}|{d['stamp']['date']}"
            groups[key].append(name)
            stamps[key] = d["stamp"]
    lines = []
    for key, names in groups.items():
        st = stamps[key]
        pk = ", ".join(f"{k} {v}" for k, v in st["packages"].items() if v)
        which = "" if len(groups) == 1 else f"Sweeps {', '.join(sorted(names))}: "
        lines.append(f"{which}measured {st['date']} by `python bench/run.py` ({st['mode']} mode, {st['reps']} "
                     f"repetition(s), {st['bench_seconds']:.0f} s) on {st['cpus']} × {st['cpu']}, {st['memory_gib']} "
                     f"GiB, {st['os']}; {st['implementation']} {st['python']}, start method {st['start_method']}; "
                     f"{pk}; commit `{st['git_commit'][:10]}`{' (dirty)' if st['git_dirty'] else ''}; "
                     f"OOM cgroup: {st['oom_cgroup']}.")
    return "\n\n".join(lines)


def memory_article_text(raw: dict[str, Any]) -> str:
    runs = {r["items"]: r for r in raw.get("memory_article", {}).get("runs", []) if r.get("peak_rss_mb")}
    if 100 not in runs or 10_000 not in runs:
        return ""
    a, b = runs[100]["peak_rss_mb"], runs[10_000]["peak_rss_mb"]
    return (f"Supervisor, the article's payload (1,000,000 ints per result): main process peak RSS "
            f"{a:.0f} MiB for 100 tasks, {b:.0f} MiB for 10,000 tasks ({(b - a) / a * 100:+.1f}%).\n")


def overhead_text(raw: dict[str, Any]) -> str:
    runs = {r["variant"]: r for r in raw.get("overhead", {}).get("runs", [])}
    base = runs.get(BASELINE)
    if not base:
        return ""
    parts = [f"`{v}` {r['median_s'] / base['median_s']:.2f}×" for v, r in runs.items() if v != BASELINE]
    return (f"Healthy-path time relative to a plain `ProcessPoolExecutor.submit` + `add_done_callback` loop "
            f"({base['tasks']:,} tiny tasks): " + ", ".join(parts) + ".\n")


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


def render(folder: Path, readme: Path | None) -> None:
    raw = load(folder)
    for old in [*folder.glob("*.png"), folder / "fault_matrix.md", folder / "README-section.md"]:
        if old.exists():
            old.unlink()
    charts = [c for c in (
        chart_latency_workers(raw, folder),
        chart_latency_payload(raw, folder),
        chart_memory(raw, folder, "memory_tasks", "items", "tasks in the run",
                     "Does the main process's memory grow with the number of tasks? (payload 10,000 ints)"),
        chart_memory(raw, folder, "memory_payload", "n", "payload: ints per result",
                     "Main process peak memory against result size (20 tasks)"),
        chart_memory_trace(raw, folder),
        chart_overhead(raw, folder),
    ) if c]
    stamp = stamp_text(raw)
    (folder / "fault_matrix.md").write_text(
        "# Fault matrix\n\nGenerated by `python bench/run.py` from `raw/matrix.json`; do not edit.\n\n"
        + matrix_markdown(raw, compact=False) + "\n" + stamp + "\n")
    section = (matrix_markdown(raw, compact=True) + "\n" + memory_article_text(raw) + overhead_text(raw) + "\n"
               + "\n".join(f"![{c}](results/{c})" for c in charts) + "\n\n" + stamp + "\n")
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
