"""Shared by tests/, experiments/ and bench/: every test, and the session as a whole, proves it left nothing behind.

Session set-up (in the controlling process, before any xdist worker starts, so every process the suite
starts inherits it):

- ``LAB_SESSION``: an id in the environment of every process of the session, which is how the final
  check finds the session's processes even after they were re-parented to init or put in a session
  of their own.
- ``TMPDIR``: a private folder, so every temporary file or folder of the session (the lab's, pytest's,
  multiprocessing's, dask's) is in one place; what is still in it at the end was left behind.
- ``LAB_OBSERVATIONS``: the JSON-lines file :func:`experiments.expect.record` appends every observation
  to; the terminal summary prints them as tables (one per test and parameters, a row per design).

At the end (after xdist has stopped its workers) the session fails, listing what, if any process of the
session, any new lab memory cgroup or any temporary file is left; then it removes them.

``LAB_RECORD_SUITE=1 python -m pytest``: when the whole default suite passes, its wall time is written,
stamped, to results/raw/suite.json, from which bench/run.py puts the suite's duration into the README
(so the README's figure is a measurement, never typed). Any other run records nothing.

Workers: ``python -m pytest`` runs on ``DEFAULT_WORKERS`` (three) xdist workers unless ``-n`` says otherwise; ``-n 0`` and
``-p no:xdist`` run in one process.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from experiments.lab import cgroup, harness

# How long a test's processes get to exit on their own before they count as left behind. The margin:
# the lab's harness SIGKILLs and reaps every process of a run before it returns, so anything alive
# afterwards is a real leak; 2 s only absorbs the kernel delivering those kills on a loaded machine.
LEFTOVER_GRACE = 2.0
# Three at a time on 2 cores: the experiments mostly wait (sleeps, hangs, watchdogs). At two the suite used 38%
# of the CPUs and took 11.4-11.9 min with Dask; at three, 8.3 min (55%), every timing bound still met (they are
# set for a loaded machine: see experiments/expect.py).
DEFAULT_WORKERS = 3
# Where the session's own observations go (see experiments/expect.py) and what is not a leak in TMPDIR.
OBSERVATIONS = "observations.jsonl"
PYTEST_OWN_TMP = "pytest-of-"  # pytest's tmp_path folders: removed with the session's TMPDIR
# Dask's shared scratch root: every LocalCluster puts its workers' folders under it and removes them on
# close; the root and its two lock files are kept for the next cluster by design. A leak only when a
# worker's folder is left in it.
DASK_SCRATCH = "dask-scratch-space"
DASK_SCRATCH_KEPT = {"global.lock", "purge.lock"}
# Helper processes that live as long as the interpreter that started them, one per interpreter: not a
# test's leak (they exit with us), and killing one only makes the next test start another.
INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "billiard.semaphore_tracker")


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Default to DEFAULT_WORKERS xdist workers; runs before xdist's own hook turns ``-n`` into workers."""
    if not config.pluginmanager.hasplugin("xdist") or _is_xdist_worker(config):
        return
    explicit = (config.option.numprocesses is not None or config.getoption("tx", None)
                or config.getoption("dist", "no") != "no")
    if explicit or config.getoption("usepdb", False) or config.getoption("collectonly", False):
        return
    config.option.numprocesses = DEFAULT_WORKERS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """tests/ (checks of a few seconds at most) after experiments/ (runs of up to ~20 s): xdist's load
    scheduling hands tests out in this order, so both workers end on short tests and finish together instead
    of one waiting for the other's last long experiment. Otherwise the collection order is kept."""
    tests_dir = Path(__file__).resolve().parent / "tests"
    items.sort(key=lambda item: tests_dir in item.path.parents)  # stable: False (experiments/) first


def pytest_configure(config: pytest.Config) -> None:
    if _is_xdist_worker(config):
        return  # the controller set the session up; workers inherited its environment
    session_tmp = Path(tempfile.mkdtemp(prefix="lab-session-"))
    state = {"tmp": session_tmp, "cgroups_before": set(_lab_cgroups()), "observations": [], "left": [],
             "started": time.monotonic()}
    config.stash[STATE] = state
    os.environ["LAB_SESSION"] = uuid.uuid4().hex
    os.environ["TMPDIR"] = str(session_tmp)
    os.environ["LAB_OBSERVATIONS"] = str(session_tmp / OBSERVATIONS)
    tempfile.tempdir = None  # recomputed from TMPDIR on next use


STATE = pytest.StashKey[dict[str, Any]]()


def _lab_cgroups() -> list[str]:
    return [str(p) for p in cgroup.lab_cgroups()]


def _session_processes() -> list[psutil.Process]:
    """Every live process carrying this session's LAB_SESSION, but this one and its own resource_tracker."""
    me, sid = os.getpid(), os.environ.get("LAB_SESSION")
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid == me or _own_tracker(p) or p.status() == psutil.STATUS_ZOMBIE:
                continue
            if p.environ().get("LAB_SESSION") == sid:
                found.append(p)
        except psutil.Error:
            pass  # gone, or not ours to read
    return found


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After xdist stopped its workers: list what the session left behind, fail if anything, then clean up."""
    config = session.config
    if _is_xdist_worker(config) or STATE not in config.stash:
        return
    state = config.stash[STATE]
    tmp: Path = state["tmp"]
    left: list[str] = []
    deadline = time.monotonic() + LEFTOVER_GRACE
    while (procs := _session_processes()) and time.monotonic() < deadline:
        psutil.wait_procs(procs, timeout=0.1)
    for p in procs:
        try:
            left.append(f"process {p.pid} {' '.join(p.cmdline())[:100]}")
            p.kill()
        except psutil.Error:
            pass
    new_cgroups = sorted(set(_lab_cgroups()) - state["cgroups_before"])
    left += [f"memory cgroup {c}" for c in new_cgroups]
    if new_cgroups:
        cgroup.remove_lab_cgroups()
    _release_own_mp_temp_dir()
    left += [f"temporary {'folder' if p.is_dir() else 'file'} {p.name} (in the session's TMPDIR)"
             for p in sorted(tmp.iterdir()) if p.name != OBSERVATIONS and not p.name.startswith(PYTEST_OWN_TMP)
             and not (p.name == DASK_SCRATCH and {c.name for c in p.iterdir()} <= DASK_SCRATCH_KEPT)]
    state["observations"] = _read_observations(tmp / OBSERVATIONS)
    shutil.rmtree(tmp, ignore_errors=True)
    state["left"] = left
    if left and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if os.environ.get("LAB_RECORD_SUITE") and session.exitstatus == 0:
        _record_suite_duration(config, time.monotonic() - state["started"])


def _record_suite_duration(config: pytest.Config, seconds: float) -> None:
    """Only the README's own command counts: no paths, no -k/-m selection."""
    if config.args_source != pytest.Config.ArgsSource.TESTPATHS or config.option.keyword or config.option.markexpr:
        return
    from bench.run import RESULTS, machine_stamp

    stats = config.pluginmanager.get_plugin("terminalreporter").stats
    record = {"stamp": machine_stamp(), "seconds": round(seconds, 1), "passed": len(stats.get("passed", [])),
              "skipped": len(stats.get("skipped", [])), "workers": getattr(config.option, "numprocesses", 0) or 0}
    (RESULTS / "raw").mkdir(parents=True, exist_ok=True)
    (RESULTS / "raw" / "suite.json").write_text(json.dumps(record, indent=1))


def _read_observations(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if STATE not in config.stash:
        return
    state = config.stash[STATE]
    from experiments import expect

    if state["observations"]:
        terminalreporter.section("what each design did")
        for line in expect.observation_tables(state["observations"]):
            terminalreporter.write_line(line)
    if state["left"]:
        terminalreporter.section("LEFT BEHIND by the session (now removed)", red=True)
        for line in state["left"]:
            terminalreporter.write_line(line, red=True)


def _ours(before: set[int]) -> list[psutil.Process]:
    """Our descendants, plus every process in a group the lab's harness started (orphans included)."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True) if p.pid not in before and not _own_tracker(p)}
    for pgid in harness.STARTED_GROUPS:
        found.update({p.pid: p for p in harness.group_members(pgid)})
    alive = []
    for p in found.values():
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _own_tracker(p: psutil.Process) -> bool:
    """multiprocessing (and billiard, its fork) start one tracker process per interpreter, on first use,
    for the interpreter's whole life (see INTERPRETER_HELPERS). A test that runs a variant in this process
    starts it; that is not a leak of the test."""
    try:
        cmd = " ".join(p.cmdline())
        return p.ppid() == os.getpid() and any(h in cmd for h in INTERPRETER_HELPERS)
    except psutil.Error:
        return False


def _release_own_mp_temp_dir() -> None:
    """multiprocessing removes this interpreter's own pymp-* folder only at exit; remove it now (through
    its own finalizer, which also forgets it), so the session's TMPDIR can go before we exit."""
    from multiprocessing import util

    for finalizer in list(util._finalizer_registry.values()):
        if getattr(finalizer, "_callback", None) is getattr(util, "_remove_temp_dir", object()):
            finalizer()


@pytest.fixture(autouse=True)
def no_process_left_behind():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE
    while (left := _ours(before)) and time.monotonic() < deadline:
        psutil.wait_procs(left, timeout=0.05)
    if left:
        names = [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in left if p.is_running()]
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(left, timeout=harness.REAP_LIMIT)
        harness.forget_empty_groups()  # their session ids may be handed to other runs from now on
        if names:
            pytest.fail(f"test left {len(names)} process(es) behind: {names}")
