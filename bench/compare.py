"""Do two bench runs say the same thing? Cell by cell, from their raw data alone.

    python -m bench.compare --git HEAD results     # the committed run against the one just made in results/
    python -m bench.compare OLD_DIR NEW_DIR        # two output folders of bench/run.py (each holds raw/)

Compared: every fault-matrix cell and every point of the latency charts (outcome, item named, detection median),
every design's healthy-path overhead ratio and every huge-data rate (MB/s, each design, direction and size). An
outcome or an item named that differs is a **flip**, unless it is a **race**: a cell whose runs ended differently
within one of the two bench runs ("mixed"), where the other run saw one of those outcomes (the design's outcome
depends on timing, and a run of two shows both or one of them). A figure outside the tolerance below is a
**drift**. All three are listed; the exit code is 1 when a cell flipped, 0 otherwise (a drift is information: a
figure can move with the load of the machine; a race is the design's, measured; an outcome that no run of the
other bench saw must not change).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402

# Two figures agree when they differ by at most REL_TOL of the larger, or by at most ABS_TOL: detection under
# 50 ms is a few scheduler ticks and thread wake-ups, where a 2x ratio (8 ms against 16 ms) is noise, not a
# regression; above it, a figure that moved by more than half of itself is worth a look.
REL_TOL = 0.5
ABS_TOL = 0.05
FILES = ("matrix", "latency_workers", "latency_payload", "overhead", "huge")
# The latency charts' points: the run that tells one point from another (workers, or ints per result).
POINTS = {"latency_workers": ("workers", "{:,} worker(s)"), "latency_payload": ("n", "{:,} ints per result")}


def agree(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= max(ABS_TOL, REL_TOL * max(abs(a), abs(b)))


def load_dir(folder: Path) -> dict[str, Any]:
    return {name: json.loads((folder / "raw" / f"{name}.json").read_text())
            for name in FILES if (folder / "raw" / f"{name}.json").exists()}


def load_git(rev: str, folder: str = "results") -> dict[str, Any]:
    out = {}
    for name in FILES:
        shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{folder}/raw/{name}.json"],
                               capture_output=True, text=True, timeout=60)
        if shown.returncode == 0:
            out[name] = json.loads(shown.stdout)
    return out


def _words(c: dict[str, Any]) -> str:
    """The cell's outcome and whether it named the item, without the count of re-runs of a looping design
    ("HANGS, re-running the fault's task (45+ starts)": the loop is the outcome, its count within the watchdog is not)."""
    outcome = re.sub(r" \(\d+\+ starts\)", "", c["outcome"])
    return outcome + ("" if c["culprit"] is None else ", item named" if c["culprit"] else ", no item")


def outcomes(c: dict[str, Any]) -> set[str]:
    """The outcomes a cell's runs ended with: each of a mixed cell's, else its one (without what follows a comma:
    "HANGS, re-running the fault's task" is a hang)."""
    m = re.match(r"mixed over \d+ runs: (.*)", c["outcome"])
    if m:
        return {re.sub(r" x\d+$", "", part) for part in m.group(1).split(", ")}
    return {c["outcome"].split(",")[0]}


def is_race(ca: dict[str, Any], cb: dict[str, Any]) -> bool:
    """One of the two cells is mixed and the other ended as one of its runs did (see the module's docstring)."""
    mixed = any(c["outcome"].startswith("mixed") for c in (ca, cb))
    return mixed and bool(outcomes(ca) & outcomes(cb))


def compare(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str], list[str], int]:
    """(flips, races, drifts, cells compared): one line of text per flipped, racing or drifted cell."""
    flips, races, drifts, compared = [], [], [], 0
    _, _, a = report.matrix_cells(old)
    _, _, b = report.matrix_cells(new)
    cells = [(f"{b.get(('_title', k[0]), k[0])} | `{k[1]}`", a[k], b[k]) for k in sorted(a) if k in b and k[0] != "_title"]
    pa, pb = _points(old), _points(new)
    cells += [(f"{pb[k][0]} | `{k[3]}`", pa[k][1], pb[k][1]) for k in sorted(pb, key=str) if k in pa]
    for where, ca, cb in cells:
        if any(c["outcome"].startswith(("not run", "not installed", "not supported")) for c in (ca, cb)):
            continue
        compared += 1
        if _words(ca) != _words(cb):
            (races if is_race(ca, cb) else flips).append(f"{where} | {_words(ca)} | {_words(cb)}")
            continue
        da, db = (None if c["detect"] is None else c["detect"][0] for c in (ca, cb))
        if not agree(da, db):
            drifts.append(f"{where} | detection {report.ms(da)} | {report.ms(db)}")
    ra, rb = (_ratios(x) for x in (old, new))
    for v in sorted(set(ra) & set(rb)):
        compared += 1
        if abs(ra[v] - rb[v]) > REL_TOL * max(ra[v], rb[v]):  # a ratio: no absolute floor
            drifts.append(f"healthy-path overhead | `{v}` | {ra[v]:.2f}× | {rb[v]:.2f}×")
    ha, hb = (_rates(x) for x in (old, new))
    for key in sorted(set(ha) & set(hb)):
        compared += 1
        if abs(ha[key] - hb[key]) > REL_TOL * max(ha[key], hb[key]):  # a rate: no absolute floor
            variant, direction, size = key
            drifts.append(f"huge data, {direction} {size >> 10:,} KiB | `{variant}` | {ha[key]:.0f} MB/s | "
                          f"{hb[key]:.0f} MB/s")
    return flips, races, drifts, compared


def _points(raw: dict[str, Any]) -> dict[tuple[Any, ...], tuple[str, dict[str, Any]]]:
    """The latency charts' points by (sweep, fault, x, design): where the point is, in words, and its runs
    summarised as a matrix cell is (``report.cell``)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for sweep, (x_key, _) in POINTS.items():
        for r in raw.get(sweep, {}).get("runs", []):
            groups.setdefault((sweep, r["scenario"], r[x_key], r["variant"]), []).append(r)
    return {k: (f"{rs[0].get('title', k[1])}, {POINTS[k[0]][1].format(k[2])}", report.cell(rs))
            for k, rs in groups.items()}


def _rates(raw: dict[str, Any]) -> dict[tuple[str, str, int], float]:
    """The huge-data sweep's rates once running, by (design, direction, size)."""
    return {(r["variant"], r["direction"], r["size"]): r["mb_s"] for r in raw.get("huge", {}).get("runs", [])
            if r.get("variant") and r.get("mb_s")}


def _ratios(raw: dict[str, Any]) -> dict[str, float]:
    """Each design's time per task relative to the overhead sweep's baseline, as the README quotes it."""
    rows = {r["variant"]: r for r in raw.get("overhead", {}).get("runs", [])}
    base = rows.get(report.BASELINE)
    if base is None:
        return {}
    return {v: report.seconds_per_task(r) / report.seconds_per_task(base) for v, r in rows.items() if v != report.BASELINE}


def stamp_line(raw: dict[str, Any]) -> str:
    st = (raw.get("matrix") or {}).get("stamp") or {}
    return f"commit {str(st.get('git_commit'))[:10]}{' (dirty)' if st.get('git_dirty') else ''}, {st.get('date')}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="the earlier run's output folder, or with --git a revision")
    ap.add_argument("new", help="the later run's output folder")
    ap.add_argument("--git", action="store_true", help="OLD is a git revision: its committed results/raw/")
    args = ap.parse_args(argv)
    old = load_git(args.old) if args.git else load_dir(Path(args.old))
    new = load_dir(Path(args.new))
    if "matrix" not in old or "matrix" not in new:
        print("both runs need raw/matrix.json", file=sys.stderr)
        return 2
    flips, races, drifts, compared = compare(old, new)
    print(f"old: {stamp_line(old)}\nnew: {stamp_line(new)}\n")
    print(f"{compared} cells compared: {len(flips)} flipped (outcome or item named), {len(races)} racing (mixed in "
          f"one run, one of those outcomes in the other), {len(drifts)} drifted (a figure moved by more than "
          f"{REL_TOL:.0%} of itself and more than {ABS_TOL * 1000:.0f} ms)\n")
    for title, rows in (("Flipped", flips), ("Racing", races), ("Drifted", drifts)):
        if rows:
            print(f"{title}:\n\n| fault | design | old | new |\n|---|---|---|---|")
            print("\n".join(f"| {r} |" for r in rows) + "\n")
    return 1 if flips else 0


if __name__ == "__main__":
    raise SystemExit(main())
