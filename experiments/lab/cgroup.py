"""Real kernel OOM kills through a memory cgroup (v1 or v2), or a clear reason why not.

A job calls :func:`enter_limited_cgroup` inside its worker: it creates ``lab-oom-<pid>``, a child of
the worker's memory cgroup with a small limit, moves itself in and allocates; the kernel's OOM killer
then sends it SIGKILL, exactly as in production. Only memory charged after the move counts, so the limit
is small. A worker that enters again (a job that does it on every task) stays in its own cgroup: lab
cgroups never nest. :func:`remove_lab_cgroups` removes those whose owner is gone, nested trees included.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

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


def _outside_lab(path: str) -> str:
    """``/a/b/lab-oom-7/lab-oom-7`` -> ``/a/b``: where a lab cgroup is created, even from inside one."""
    parts = path.rstrip("/").split("/")
    while parts and parts[-1].startswith(PREFIX):
        parts.pop()
    return "/".join(parts) or "/"


def parent_dir() -> tuple[str, Path]:
    """The memory cgroup lab cgroups are created in, as ("v1"|"v2", directory): this process's own, or the
    one above the lab cgroup it is in. Raises Unavailable."""
    why = []
    path = _own_path(lambda h, c: "memory" in c.split(","))
    path = None if path is None else _outside_lab(path)
    if path is not None and (V1_ROOT / "memory.limit_in_bytes").exists():
        d = V1_ROOT / path.lstrip("/")
        if os.access(d, os.W_OK):
            return "v1", d
        why.append(f"cgroup v1 memory directory {d} is not writable")
    path = _own_path(lambda h, c: h == "0" and c == "")
    path = None if path is None else _outside_lab(path)
    if path is not None and (V2_ROOT / "cgroup.controllers").exists():
        d = V2_ROOT / path.lstrip("/")
        if "memory" in (d / "cgroup.controllers").read_text().split() and os.access(d, os.W_OK):
            return "v2", d
        why.append(f"cgroup v2 directory {d} has no writable memory controller")
    raise Unavailable("; ".join(why) or "no memory cgroup (v1 or v2) is mounted")


CONTROLLERS = {
    "v1": "cgroup v1 memory controller (memory.limit_in_bytes, memory.memsw.limit_in_bytes when present)",
    "v2": "cgroup v2 memory controller (memory.max, memory.swap.max = 0)",
}


def availability() -> tuple[bool, str]:
    """(True, which cgroup version and controller the OOM experiments use) or (False, why not).

    The text names no path: it goes into the bench's stamp, where the host's own cgroup path means
    nothing to a reader."""
    try:
        version, _ = parent_dir()
    except Unavailable as e:
        return False, str(e)
    return True, CONTROLLERS[version]


def enter_limited_cgroup(limit_bytes: int) -> Path:
    """Move this process into its own memory cgroup limited to ``limit_bytes``. A process already in its
    lab cgroup stays there (the limit set on entry holds): entering on every task never nests."""
    version, parent = parent_dir()
    child = parent / f"{PREFIX}{os.getpid()}"
    own = _own_path(lambda h, c: "memory" in c.split(",")) if version == "v1" else _own_path(
        lambda h, c: h == "0" and c == "")
    if own is not None and own.rstrip("/").endswith("/" + child.name):
        return child
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


def lab_cgroups() -> list[Path]:
    """Every lab cgroup under the parent, nested ones included (deepest first)."""
    try:
        _, parent = parent_dir()
    except Unavailable:
        return []
    found: list[Path] = []

    def walk(d: Path, inside: bool) -> None:
        # Inside a lab cgroup every directory is the lab's (a whole run's cgroup holds the supervisor's
        # per-worker ones): all of them, deepest first.
        for child in d.glob("*" if inside else PREFIX + "*"):
            if child.is_dir():
                walk(child, True)
                found.append(child)

    walk(parent, False)
    return found


def _owner_alive(d: Path) -> bool:
    """The pid in ``lab-oom-<pid>`` still runs: between its mkdir and its move in, the cgroup is empty but
    in use (another test's worker, in parallel), so it must not be removed. A zombie is not running (and
    is no longer in any cgroup)."""
    try:
        return psutil.Process(int(d.name[len(PREFIX):])).status() != psutil.STATUS_ZOMBIE
    except (ValueError, psutil.Error):
        return False


def remove_lab_cgroups() -> int:
    """Remove every lab cgroup whose owner is gone and that holds no process, nested trees deepest first.
    Returns how many were removed."""
    removed = 0
    for d in lab_cgroups():
        # a nested directory (the supervisor's, inside a whole run's cgroup) is in use while its lab owner lives
        if any(_owner_alive(a) for a in (d, *d.parents) if a.name.startswith(PREFIX)):
            continue
        try:
            d.rmdir()  # cgroupfs: rmdir of a cgroup with no process works despite its control files
            removed += 1
        except OSError:
            pass  # a process is still in it (being killed); the next cleanup gets it
    return removed
