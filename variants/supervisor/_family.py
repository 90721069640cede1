"""A worker's own child processes: what its job started (``subprocess.run`` of a tool, a helper process).

Stopping a worker does not stop them: SIGTERM and SIGKILL go to one process, and its children are then
reparented and live on, holding their memory, files and connections (a ``curl`` that hangs keeps hanging
after its task timed out). So before a worker is stopped, its descendants are listed from ``/proc`` (parent
pid links), each with its start time so that a pid reused later is never signalled, and they get the
worker's signals with it.

Limit: a worker that dies by itself (SIGKILL, segfault) orphans its children before anyone can list them.
With ``memory_limit`` they are still in the worker's memory cgroup, and ``_limits`` ends them from there.
"""

from __future__ import annotations

import os
import signal

# (pid, start time in clock ticks since boot): one process, never a later one reusing its pid
Member = tuple[int, int]


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) from /proc/<pid>/stat, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()  # after "(comm)", which may hold spaces and parentheses
    return int(fields[1]), int(fields[19])


def descendants(*pids: int) -> list[Member]:
    """Every process below the given ones now (children, their children, ...), each with its start time.
    One pass over /proc, however many pids. None listed if /proc cannot be read (not Linux, or no file
    descriptor left: the stop that calls this must still reach its workers' SIGKILL)."""
    children: dict[int, list[Member]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(st[0], []).append((int(name), st[1]))
    out: list[Member] = []
    todo = list(pids)
    while todo:
        for member in children.get(todo.pop(), []):
            out.append(member)
            todo.append(member[0])
    return out


def signal_all(members: list[Member], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to each member that is still the same process (same start time)."""
    for pid, start in members:
        st = _stat(pid)
        if st is not None and st[1] == start:
            try:
                os.kill(pid, sig)
            except OSError:  # gone meanwhile
                pass
