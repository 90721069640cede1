"""Expected outcomes and the one check every experiment uses.

Each experiment file has ``EXPECTED = {variant: Expect(...)}`` with one row per registered variant
(``params(EXPECTED)`` refuses a table that misses one). A row states what really happens, good or
bad: "hung" is a passing outcome for a design that hangs. Rows may differ by Python version
(``by_version``): behaviour that differs is recorded per version, never averaged away.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from experiments.lab.harness import Outcome
from variants import VARIANTS

# Generous bounds for event-driven detection. Measured figures are in milliseconds (bench/run.py
# writes them to results/); 1.0 s leaves room for a loaded 2-core CI machine spawning replacement
# processes and for the harness's own 5 ms scan period, yet is 5x below the article's 5 s poll, so it
# still separates "noticed at once" from "noticed at the next poll".
PROMPT = 1.0
# The article's poll interval, the callback_monitor default.
POLL = 5.0
# Slack on top of a poll or a grace period: thread wake-up, SIGTERM delivery, process reaping.
SLACK = 1.5
# dask_distributed raises only after closing its LocalCluster: 1-2 s measured when every task can end,
# ~16 s when one hangs (client.close and cluster.close each wait up to their 10 s limit). 25 s bounds both.
DASK_STOP = 25.0
# pebble's pool-manager thread polls; its stop() waits before escalating SIGTERM to SIGKILL (~3 s measured).
PEBBLE_STOP = 3.0


@dataclass(frozen=True)
class Expect:
    status: str  # "raised" | "returned" | "hung" | "parent_killed"
    kind: str | None = None  # RunFailed.kind, or an exception type name for a non-RunFailed exception
    culprit: bool | str | None = None  # True: the faulty item is named; "any": some item is; False: none is
    exitcode: int | None = None
    detect_max: float | None = None  # fault -> run() came back, at most (seconds)
    detect_min: float | None = None  # ... at least (to show a detection that waits for something)
    left_running: bool | None = False  # processes of the run still alive after the runner exited
    exit_max: float | None = None  # run() came back -> runner exited, at most
    exit_min: float | None = None  # ... at least (a thread or a join keeps the process alive)
    why: str = ""


def by_version(**rows: Expect) -> dict[str, Expect]:
    """``by_version(py311=Expect(...), default=Expect(...))``: rows keyed by Python minor version."""
    return rows


def expected_for(table: dict[str, Any], variant: str) -> Expect:
    row = table[variant]
    if isinstance(row, dict):
        key = f"py3{sys.version_info.minor}"
        row = row.get(key, row["default"])
    return row


def params(table: dict[str, Any]) -> list[Any]:
    """One pytest param per registered variant; a missing row is an error, a missing package a skip."""
    missing = set(VARIANTS) - set(table)
    extra = set(table) - set(VARIANTS)
    if missing or extra:
        raise AssertionError(f"EXPECTED table rows do not match VARIANTS: missing {missing}, unknown {extra}")
    out = []
    for name, v in VARIANTS.items():
        ok, why = v.available()
        out.append(pytest.param(name, id=name, marks=() if ok else pytest.mark.skip(reason=why)))
    return out


def check(o: Outcome, e: Expect, *, fault_item: Any = None) -> None:
    """Assert the outcome matches the row; the failure message carries what a reader needs to debug."""
    record(o, e)
    r = o.result or {}
    diag = (f"\n{o.variant}: status={o.status} kind={o.kind} exc={r.get('exc_type')} item={o.item!r} "
            f"exitcode={o.exitcode} detect={o.detect_latency} exit={o.exit_latency} left={o.left_running}\n"
            f"message: {r.get('message')!r}\nstderr tail:\n{o.stderr[-2500:]}")
    assert o.status == e.status, "status" + diag
    if e.kind is not None:
        assert (o.kind or r.get("exc_type")) == e.kind, "kind" + diag
    if e.culprit == "any":
        assert o.item is not None, "no item named" + diag
    elif e.culprit is True:
        assert o.item == fault_item, f"culprit not named (expected item {fault_item!r})" + diag
    elif e.culprit is False:
        assert o.item is None, "a culprit was named by a design expected not to know it" + diag
    if e.exitcode is not None:
        assert o.exitcode == e.exitcode, "exit code" + diag
    if e.detect_max is not None:
        assert o.detect_latency is not None and o.detect_latency <= e.detect_max, "detection too late" + diag
    if e.detect_min is not None:
        assert o.detect_latency is not None and o.detect_latency >= e.detect_min, "detection too early" + diag
    if e.left_running is not None:
        assert bool(o.left_running) == e.left_running, "processes left running" + diag
    if e.exit_max is not None:
        assert o.exit_latency is not None and o.exit_latency <= e.exit_max, "runner lingered" + diag
    if e.exit_min is not None:
        assert o.lingered or (o.exit_latency is not None and o.exit_latency >= e.exit_min), \
            "runner exited sooner than expected" + diag


def record(o: Outcome, e: Expect) -> None:
    """Append the observation to $LAB_RECORD (JSON lines) when set: how the note's matrix is gathered."""
    path = os.environ.get("LAB_RECORD")
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    row = {"test": test, "python": sys.version.split()[0], "variant": o.variant, "status": o.status,
           "kind": o.kind, "item": o.item, "exitcode": o.exitcode, "detect": o.detect_latency,
           "stop": o.stop_latency, "exit": o.exit_latency, "left": o.left_running,
           "orphans_exit": o.orphans_exit_latency, "message": (o.result or {}).get("message"),
           "expected": e.status}
    with open(path, "a") as f:
        f.write(json.dumps(row, default=repr) + "\n")
