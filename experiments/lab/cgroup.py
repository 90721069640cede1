"""Real kernel OOM kills through a memory cgroup (v1 or v2), or a clear reason why not.

A job calls :func:`enter_limited_cgroup` inside its worker: it creates a child of the worker's own
memory cgroup with a small limit, moves itself in and allocates; the kernel's OOM killer then sends it
SIGKILL, exactly as in production. Only memory charged after the move counts, so the limit is small.
"""

from __future__ import annotations

import os
from pathlib import Path

PREFIX = "lab-oom-"
V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")


class Unavailable(RuntimeError):
    """No writable memory cgroup here; ``str()`` says why."""


def _own_path(controller_line_match) -> str | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hier, controllers, path = line.split(":", 2)
        if controller_line_match(hier, controllers):
            return path
    return None


def parent_dir() -> tuple[str, Path]:
    """The memory cgroup this process is in, as ("v1"|"v2", directory); raises Unavailable."""
    why = []
    path = _own_path(lambda h, c: "memory" in c.split(","))
    if path is not None and (V1_ROOT / "memory.limit_in_bytes").exists():
        d = V1_ROOT / path.lstrip("/")
        if os.access(d, os.W_OK):
            return "v1", d
        why.append(f"cgroup v1 memory directory {d} is not writable")
    path = _own_path(lambda h, c: h == "0" and c == "")
    if path is not None and (V2_ROOT / "cgroup.controllers").exists():
        d = V2_ROOT / path.lstrip("/")
        if "memory" in (d / "cgroup.controllers").read_text().split() and os.access(d, os.W_OK):
            return "v2", d
        why.append(f"cgroup v2 directory {d} has no writable memory controller")
    raise Unavailable("; ".join(why) or "no memory cgroup (v1 or v2) is mounted")


def availability() -> tuple[bool, str]:
    try:
        version, d = parent_dir()
    except Unavailable as e:
        return False, str(e)
    return True, f"cgroup {version} at {d}"


def enter_limited_cgroup(limit_bytes: int) -> Path:
    version, parent = parent_dir()
    child = parent / f"{PREFIX}{os.getpid()}"
    child.mkdir(exist_ok=True)
    if version == "v1":
        (child / "memory.limit_in_bytes").write_text(str(limit_bytes))
        memsw = child / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # no swap escape hatch: hitting the limit means the OOM killer
            memsw.write_text(str(limit_bytes))
    else:
        subtree = parent / "cgroup.subtree_control"
        if "memory" not in subtree.read_text().split():
            subtree.write_text("+memory")
        (child / "memory.max").write_text(str(limit_bytes))
        (child / "memory.swap.max").write_text("0")
    (child / "cgroup.procs").write_text(str(os.getpid()))
    return child


def oom_kills(directory: Path) -> int:
    """The cgroup's OOM-kill counter (v1 memory.oom_control, v2 memory.events)."""
    for name in ("memory.oom_control", "memory.events"):
        f = directory / name
        if f.exists():
            for line in f.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return 0


def remove_lab_cgroups() -> int:
    """Remove the lab's empty child cgroups (their OOM-killed owner is gone). Returns how many."""
    try:
        _, parent = parent_dir()
    except Unavailable:
        return 0
    removed = 0
    for d in parent.glob(PREFIX + "*"):
        try:
            d.rmdir()  # cgroupfs: rmdir of a cgroup with no process works despite its control files
            removed += 1
        except OSError:
            pass  # still has a live process; the next cleanup gets it
    return removed
