"""What a bench run did, said at its end: files written, duration, what was skipped and why, what changed.

Pure functions of the run's records (``by_sweep``, as bench/run.py writes them to raw/*.json) and of a committed
run's raw files, so a test can hand it a small made-up set. "What changed" compares outcome cells only (a run's
status and kind, a throughput point's finished or not), never timings: timings move run to run, an outcome
moving is news.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

# Statuses of a run record that was not measured (bench/run.py's run_one): the message says why.
NOT_MEASURED = ("not_installed", "not_run")
EXAMPLES = 5  # changed cells listed by name; the rest are counted


def outcome_cells(data: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    """One raw file's outcomes, keyed by what defines a run: a fault or memory run's status (and kind), a
    throughput point's "finished" or the reason it has no figure. A file without outcomes (the overhead
    timings) has no cells."""
    cells: dict[tuple[Any, ...], str] = {}
    for r in data.get("runs") or []:
        if not isinstance(r, dict):
            continue
        if "direction" in r and "size" in r:  # a huge-data point
            cells[("huge", r.get("variant"), r["direction"], r["size"])] = r.get("status") or "no figure"
        elif "contender" in r and "seconds" in r:  # a throughput point
            key = ("throughput", r["contender"], r.get("workers"), r.get("seconds"))
            cells[key] = "finished" if r.get("total") is not None and not r.get("error") else _reason(r)
        elif "status" in r and "scenario" in r:
            key = (r.get("sweep"), r["scenario"], r.get("variant"), r.get("workers"), r.get("n"), r.get("items"),
                   r.get("rep"))
            cells[key] = f"{r['status']} {r.get('kind') or ''}".strip()
    return cells


def _reason(r: dict[str, Any]) -> str:
    error = r.get("error") or r.get("status") or "no figure"
    return error.split(":")[0]  # "not run: ~77 s predicted ..." -> "not run"


def skipped(by_sweep: dict[str, Any], plan_skips: list[str] = ()) -> list[str]:
    """What was not measured, and why, counted: records that say so, throughput points without a figure (not run
    for their predicted time, past the time limit, the design not installed), and the plan's own skips."""
    why: Counter[str] = Counter(plan_skips)
    for sweep, data in by_sweep.items():
        runs = data.get("runs") if isinstance(data, dict) else data
        for r in runs or []:
            if r.get("status") in NOT_MEASURED:
                who = r.get("variant") or r.get("contender")
                why[f"{sweep}: {who} {r['status']}: {r.get('message') or ''}".rstrip(": ")] += 1
            elif sweep == "throughput" and r.get("total") is None and "contender" in r:
                why[f"throughput: {r['contender']}: {r.get('error') or r.get('message') or 'no figure'}"] += 1
    return [f"{n} x {what}" if n > 1 else what for what, n in sorted(why.items())]


def changes(new: dict[str, dict[str, Any]], old: dict[str, dict[str, Any] | None] | None) -> list[str]:
    """Outcome cells of ``new`` (raw file name -> content) against ``old`` (the committed files; None for a file
    not committed; ``old`` None: there is no committed run to compare with)."""
    if old is None:
        return ["no committed run to compare (--out is not the repository's results/)"]
    lines: list[str] = []
    for name in sorted(new):
        cells = outcome_cells(new[name])
        if not cells:
            continue
        if old.get(name) is None:
            lines.append(f"{name}: not in the committed run ({len(cells)} outcome cells, all new)")
            continue
        before = outcome_cells(old[name])
        both = cells.keys() & before.keys()
        changed = sorted((k for k in both if cells[k] != before[k]), key=repr)
        line = f"{name}: {len(changed)} of {len(both)} outcome cells changed"
        extra = [f"{n} only in this run" for n in [len(cells.keys() - before.keys())] if n] + \
                [f"{n} only in the committed run" for n in [len(before.keys() - cells.keys())] if n]
        lines.append(line + (f" ({', '.join(extra)})" if extra else ""))
        lines += [f"  {' '.join(str(x) for x in k if x is not None)}: {before[k]} -> {cells[k]}"
                  for k in changed[:EXAMPLES]]
        if len(changed) > EXAMPLES:
            lines.append(f"  ... and {len(changed) - EXAMPLES} more")
    return lines or ["no outcome cells to compare"]


def committed_raw(root: Path, out: Path, names: list[str]) -> dict[str, dict[str, Any] | None] | None:
    """The raw files of the committed run (``git show HEAD:results/raw/<name>``) when ``out`` is the repository's
    results/; None otherwise (nothing committed to compare with)."""
    if out.resolve() != (root / "results").resolve():
        return None
    old: dict[str, dict[str, Any] | None] = {}
    for name in names:
        proc = subprocess.run(["git", "show", f"HEAD:results/raw/{name}"], cwd=root, capture_output=True, text=True,
                              timeout=30)
        old[name] = json.loads(proc.stdout) if proc.returncode == 0 else None
    return old


def summary(*, files: list[Path], seconds: float, sweep_seconds: dict[str, float], by_sweep: dict[str, Any],
            plan_skips: list[str], new_raw: dict[str, dict[str, Any]],
            old_raw: dict[str, dict[str, Any] | None] | None) -> list[str]:
    """The closing lines of a bench run."""
    runs = sum(len(d.get("runs") or []) if isinstance(d, dict) else len(d) for d in by_sweep.values())
    lines = [f"bench: done in {seconds:.0f} s ({seconds / 60:.1f} min), {runs} records in {len(by_sweep)} sweeps"]
    if sweep_seconds:  # as stamped: a sweep's time is the sum of its runs' durations, and runs can overlap
        lines.append("  run time by sweep: " + ", ".join(f"{s} {t:.0f} s" for s, t in sweep_seconds.items()))
    lines.append(f"files written ({len(files)}):")
    lines += [f"  {f}" for f in files]
    skips = skipped(by_sweep, plan_skips)
    lines.append(f"skipped ({len(skips)}):" if skips else "skipped: nothing")
    lines += [f"  {s}" for s in skips]
    lines.append("against the committed run:")
    lines += [f"  {c}" for c in changes(new_raw, old_raw)]
    return lines
