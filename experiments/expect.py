"""Expected outcomes and the one check every experiment uses.

Each experiment file has ``EXPECTED = {variant: Expect(...)}`` with one row per registered variant
(``params(EXPECTED)`` refuses a table that misses one). A row states what really happens, good or
bad: "hung" is a passing outcome for a design that hangs. Rows may differ by Python version
(``by_version``): behaviour that differs is recorded per version, never averaged away.

Every :func:`check` also records what it saw (:func:`record`): under pytest, into the session's file
(``LAB_OBSERVATIONS``, set by the root conftest.py), which the suite prints at the end as one table per
test and parameters ("what each design did": a row per design, under a caption saying which variant of the
file's scenario it is), so ``pytest experiments/test_worker_oom.py`` shows the failure, not only a green dot.
``LAB_RECORD=path.jsonl`` additionally appends every observation to a file of your own that outlives the run
(the same JSON lines).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from experiments.lab.harness import Outcome
from experiments.lab.scenarios import CRASH_WORDS
from variants import VARIANTS

# Generous bounds for event-driven detection. Measured figures are in milliseconds (bench/run.py
# writes them to results/); 1.0 s leaves room for a loaded 2-core CI machine spawning replacement
# processes and for the harness's own 5 ms observation period (harness.TICK), yet is 5x below the
# article's 5 s poll, so it still separates "noticed at once" from "noticed at the next poll".
PROMPT = 1.0
# The article's poll interval, the callback_monitor default.
POLL = 5.0
# Slack on top of a poll or a grace period: thread wake-up, SIGTERM delivery, process reaping.
SLACK = 1.5
# The spawn start-up of 4 workers, where a design cannot be noticed to fail before its last worker is up (the
# plain executors spawn workers on demand, so a slow start delays the waves of tasks behind it): ~0.4 s on an
# idle 2-core machine, 2.1 s measured in CI on 3.12 beside the other xdist worker. 2 s: the rows that use it
# add it to what they would allow without a slow start.
SPAWN_UP = 2.0
# dask_distributed raises only after closing its LocalCluster: 1-2 s measured when every task can end,
# ~16 s when one hangs (client.close and cluster.close each wait up to their 10 s limit). 25 s bounds both.
DASK_STOP = 25.0
# A death that repeats: Dask re-runs the task until four workers died with it, then KilledWorker, then the close
# above. The restarts took 2.3-6.8 s measured, once more than 25 s under load (see harness.RETRY_ALLOWANCE,
# the watchdog's share of the same wait).
DASK_KILLED = DASK_STOP + 20.0
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
    # (markers, row): a known race inside the design's library. The markers are regular expressions, all of
    # which the run's stderr or the message of the exception it reported must match: a line the design writes
    # when it sees the race, the error it raised for it, or frames of the stack dump the harness takes of a hung
    # run (each marker in either). A run that matches is checked against that row instead; any other outcome
    # still has to match this row: the markers are the evidence, the row what the race causes.
    race: tuple[tuple[str, ...], Expect] | None = None


# A worker that dies after its task computed (while it sends the result, while it pickles it): the nanny restarts
# it and the scheduler re-runs the lost result, which kills the next worker the same way. A death after the task's
# completion reached the scheduler is not counted towards KilledWorker, so the loop goes on unreported: the row of
# such a fault is "hung", and its test checks the re-runs (at least DASK_RERUNS: each round is a worker restart
# by its nanny, ~1-2 s on 2 cores; a loop that stopped after the first rounds would show fewer).
DASK_RERUNS = 3
# ... unless, by chance, four of those deaths came while the scheduler still had the task as processing (its
# completion not yet in): then KilledWorker, after tens of re-runs (18 s and 51 s seen while sending a result,
# 19 s while pickling one, in CI on 3.12; 0 of 5 runs on an idle machine). Both are Dask's behaviour, neither is
# reported sooner: the race DASK_KILLED_WORKER, for the rows of the faults Dask re-runs.
DASK_GIVES_UP = Expect("raised", "worker_died", culprit="any",
                       why="four of the re-runs' deaths counted before their completion reached the scheduler; the "
                           "task KilledWorker names is whichever reached four deaths first, which can be an innocent "
                           "one that kept landing on the dying workers (item 5 for item 2, once, on a loaded machine)")


DASK_KILLED_WORKER = ((r"^worker_died: KilledWorker",), DASK_GIVES_UP)


# multiprocessing.Pool's terminate() can hang for good (https://github.com/python/cpython/issues/96995, open):
# it SIGTERMs the workers while its task-handler thread may still have to put the end-of-results sentinel on
# the result queue, whose lock a killed worker can hold for ever (SIGTERMed mid-put) or whose pipe no one reads
# any more. terminate() then joins that thread for ever. Every run of variants/pool.py ends in terminate()
# (``with Pool(...)``), so this can strike whatever the fault; seen once in CI (3.12, HTTP 500 in the
# pipeline). The evidence is the pair of frames in the hung run's stack dump.
POOL_TERMINATE_DEADLOCK = (
    (r'multiprocessing/queues\.py", line \d+ in put\n\s+File "[^"]*multiprocessing/pool\.py", line \d+ in _handle_tasks',
     r'in join\n\s+File "[^"]*multiprocessing/pool\.py", line \d+ in _terminate_pool'),
    Expect("hung", left_running=None,
           why="cpython#96995: terminate() killed the workers, then waits for ever on its task handler, which "
               "waits for ever to put its sentinel on the result queue"))
# Races that can strike any run of a design, because every run ends through the same library call.
DESIGN_RACES: dict[str, tuple[tuple[str, ...], Expect]] = {"pool": POOL_TERMINATE_DEADLOCK}


def race_row(o: Outcome, e: Expect) -> Expect:
    """The row a run is checked against: ``e``, or a known race's row when the run carries its evidence."""
    message = (o.result or {}).get("message") or ""
    for race in (e.race, DESIGN_RACES.get(o.variant)):
        if race is not None and all(re.search(marker, o.stderr, re.M) or re.search(marker, message, re.M)
                                    for marker in race[0]):
            return race[1]
    return e


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


def check(o: Outcome, e: Expect, *, fault_item: Any = None, label: str | None = None, scenario: str | None = None,
          database: dict[str, Any] | None = None) -> None:
    """Assert the outcome matches the row; the failure message carries what a reader needs to debug.

    The keywords only go into the end-of-run tables (:func:`record`): ``label``, what sets this run apart from
    the test's other runs of the same design (each of them needs one); ``scenario``, the table's caption where
    the test's name and parameters do not say it; ``database``, what a run that saves its results found in its
    database (see :func:`database_words`)."""
    e = race_row(o, e)
    record(o, e, fault_item=fault_item, label=label, scenario=scenario, database=database)
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


def record(o: Outcome, e: Expect, *, fault_item: Any = None, label: str | None = None, scenario: str | None = None,
           database: dict[str, Any] | None = None) -> None:
    """Append the observation as one JSON line to the session's file and to $LAB_RECORD, where set."""
    paths = [p for p in (os.environ.get("LAB_OBSERVATIONS"), os.environ.get("LAB_RECORD")) if p]
    if not paths:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    module = sys.modules.get(test.split("::")[0].removesuffix(".py").replace("/", "."))
    row = {"test": test, "fault": first_sentence(module.__doc__ or "") if module else "",
           "python": sys.version.split()[0], "variant": o.variant, "status": o.status,
           "kind": o.kind or (o.result or {}).get("exc_type"), "item": o.item, "fault_item": fault_item,
           "exitcode": o.exitcode, "detect": o.detect_latency, "stop": o.stop_latency, "exit": o.exit_latency,
           "left": o.left_running, "orphans_exit": o.orphans_exit_latency,
           "message": ((o.result or {}).get("message") or "")[:300], "expected": e.status,
           "nothing_left": (o.result or {}).get("remaining") == [],
           # how many items the report lists as left (None: the design keeps no per-item account)
           "items_left": None if (o.result or {}).get("remaining") is None else len(o.result["remaining"]),
           # more than one start of the fault's item: the design re-ran it (recovery, not a missed fault)
           "fault_starts": None if fault_item is None else sum(
               ev["ev"] == "start" and ev.get("item") == fault_item for ev in o.events),
           # the row's time bounds, to see how close each measurement came to its limit (experiments/margins.py)
           "bounds": {k: getattr(e, k) for k in ("detect_min", "detect_max", "exit_min", "exit_max")
                      if getattr(e, k) is not None},
           "label": label, "scenario": scenario, "database": database}
    for path in paths:
        with open(path, "a") as f:  # one write per line, O_APPEND: xdist workers never interleave
            f.write(json.dumps(row, default=repr) + "\n")


def first_sentence(doc: str) -> str:
    """A docstring's first sentence, whole even where it runs over two lines (a table's heading)."""
    paragraph = " ".join(line.strip() for line in doc.strip().split("\n\n")[0].splitlines())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[:end + 1]


@dataclass
class ObservationTable:
    """One experiment's runs, a row per design (and per ``label``, where a test runs a design more than once)."""

    heading: str  # the experiment file's first docstring line and path: shared by the file's tables
    caption: str  # which variant of the scenario: unique to this table
    test: str  # the pytest id without the design, to find the test
    rows: list[dict[str, Any]]


def observation_table_list(rows: list[dict[str, Any]]) -> list[ObservationTable]:
    """The observations grouped into tables: one per test and parameters but the design, in file order."""
    by_test: dict[str, list[dict[str, Any]]] = {}
    for r in rows:  # test_x[KillSelfAt-pool] -> test_x[KillSelfAt]: one table per fault, a row per design
        name, _, params = r["test"].partition("[")
        rest = [p for p in params.rstrip("]").split("-") if p and p != r["variant"]]
        by_test.setdefault(name + (f"[{'-'.join(rest)}]" if rest else ""), []).append(r)
    order = {v: i for i, v in enumerate(VARIANTS)}
    tables = []
    for test in sorted(by_test):
        runs = sorted(by_test[test], key=lambda r: order.get(r["variant"], len(order)))
        path = test.split("::")[0]
        heading = f"{runs[0].get('fault') or path} [{path}]"
        tables.append(ObservationTable(heading, _caption(test, runs), test, runs))
    return tables


def _caption(test: str, runs: list[dict[str, Any]]) -> str:
    """The test's own ``scenario`` words, else its name in words and its parameters (crash kinds in words)."""
    given = next((r["scenario"] for r in runs if r.get("scenario")), None)
    if given:
        return given
    name, _, params = test.split("::")[-1].partition("[")
    words = name.removeprefix("test_").replace("_", " ")
    params_words = [CRASH_WORDS.get(p, p) for p in params.rstrip("]").split("-") if p]
    return words + (f": {', '.join(params_words)}" if params_words else "")


def outcome_words(r: dict[str, Any]) -> str:
    """What the run did, in words, whole: the table never cuts it (a figure without its unit misleads)."""
    outcome = {"hung": "HANGS (watchdog)", "over_watchdog": "over the watchdog, still working",
               "parent_killed": "parent killed", "runner_died": "main process died",
               "returned": "recovered: task re-ran" if (r.get("fault_starts") or 0) > 1
               else "returned, every item done" if r.get("nothing_left")
               else f"returned, {r['items_left']} item(s) left" if r.get("items_left")
               else "returned"}.get(
        r["status"], f"{r['status']} {r.get('kind') or ''}".strip())
    if r["status"] == "parent_killed":
        outcome += (f", orphans gone in {_ms(r['orphans_exit'])}" if r.get("orphans_exit") is not None
                    else ", orphans survive")
    return outcome


def design_words(r: dict[str, Any]) -> str:
    """The design, and the run's label where the test gave one (two runs of one design in one table)."""
    return r["variant"] + (f", {r['label']}" if r.get("label") else "")


def database_words(db: dict[str, Any]) -> str:
    """``{"rows": 11, "of": 12, "twice": 0, "agrees": "yes"}``: rows saved of the items run, rows saved more
    than once, and whether the rows match what the design says it finished."""
    return f"{db['rows']}/{db['of']} rows, {db['twice']} saved twice, report agrees: {db['agrees']}"


def observation_tables(rows: list[dict[str, Any]]) -> list[str]:
    """The tables as lines: per experiment file a heading, then per table its caption and a row per design.
    Columns are as wide as their widest cell; "latency" is left out of a table where no run has one, and
    "database" is added where a run checked its database."""
    out: list[str] = []
    heading = None
    for table in observation_table_list(rows):
        if table.heading != heading:
            heading = table.heading
            out += ["", heading]
        out += ["", f"{table.caption}  ({table.test.split('::')[-1].partition('[')[0]})"]
        out += _table_lines(table.rows)
    return out


def _table_lines(runs: list[dict[str, Any]]) -> list[str]:
    cells: list[dict[str, str]] = []
    for r in runs:
        named = "n/a" if r.get("fault_item") is None else ("yes" if r.get("item") == r["fault_item"] else "no")
        cells.append({"design": design_words(r), "outcome": outcome_words(r), "latency": _ms(r.get("detect")),
                      "item named": named, "exit code": "" if r.get("exitcode") is None else str(r["exitcode"]),
                      "left": str(len(r.get("left") or []) or "-"),
                      "database": database_words(r["database"]) if r.get("database") else "-"})
    columns = ["design", "outcome", "latency", "item named", "exit code", "left", "database"]
    if all(r.get("detect") is None for r in runs):
        columns.remove("latency")
    if not any(r.get("database") for r in runs):
        columns.remove("database")
    right = {"latency", "exit code"}
    width = {c: max(len(c), *(len(row[c]) for row in cells)) for c in columns}

    def line(values: dict[str, str]) -> str:
        return "  " + "  ".join(values[c].rjust(width[c]) if c in right else values[c].ljust(width[c])
                                for c in columns).rstrip()

    return [line({c: c for c in columns}), *(line(row) for row in cells)]


def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"
