"""Shared by tests/ and experiments/: every test proves it left no process behind."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from experiments.lab import harness

# How long a test's processes get to exit on their own before they count as left behind. The margin:
# the lab's harness SIGKILLs and reaps every process of a run before it returns, so anything alive
# afterwards is a real leak; 2 s only absorbs the kernel delivering those kills on a loaded machine.
LEFTOVER_GRACE = 2.0


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
    """multiprocessing starts one resource_tracker per interpreter, on first use, for the interpreter's
    whole life (it exits when we do). A test that runs a variant in this process starts it; that is
    not a leak of the test, and killing it would only make the next test start another."""
    try:
        return p.ppid() == os.getpid() and "multiprocessing.resource_tracker" in " ".join(p.cmdline())
    except psutil.Error:
        return False


@pytest.fixture(autouse=True)
def no_process_left_behind():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE
    while (left := _ours(before)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        names = [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in left if p.is_running()]
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if names:
            pytest.fail(f"test left {len(names)} process(es) behind: {names}")
