"""How close each timed measurement of a suite run came to its row's bound: the flakes waiting to happen.

    LAB_RECORD=/tmp/obs.jsonl pytest experiments/
    python -m experiments.margins /tmp/obs.jsonl [--top 20]

Prints the measurements nearest their limit first, as the share of the bound used (detect 2.4 s against
detect_max 3.0 s is 80%; for a lower bound, the bound's share of the measurement). A loaded 2-core CI machine
has measured up to about twice the latencies of an idle one, so a row above 50% here is one to look at.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

# Which measurement each bound limits.
MEASURED = {"detect_min": "detect", "detect_max": "detect", "exit_min": "exit", "exit_max": "exit"}


def margins(rows: list[dict[str, Any]]) -> list[tuple[float, str, str, float, float]]:
    """(share of the bound used, test, bound name, measured, bound), nearest the limit first."""
    out = []
    for r in rows:
        for name, bound in (r.get("bounds") or {}).items():
            value = r.get(MEASURED[name])
            if value is None or not bound:
                continue
            used = value / bound if name.endswith("_max") else bound / value if value else float("inf")
            out.append((used, r["test"], name, value, bound))
    return sorted(out, reverse=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", help="the JSON lines file LAB_RECORD pointed at")
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args(argv)
    with open(args.record) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for used, test, name, value, bound in margins(rows)[:args.top]:
        print(f"{used:6.0%}  {name:<10} {value:7.2f} s of {bound:6.2f} s  {test}")


if __name__ == "__main__":
    main()
