"""A memory limit per worker: the kernel's memory cgroup where we may create one, else an address-space limit.

- cgroup (v1 ``memory.limit_in_bytes``, v2 ``memory.max``; swap off): one child of the supervisor's own
  memory cgroup per worker, created before the worker runs anything of the caller's and removed once it
  has exited. Crossing the limit gets *that worker* OOM-killed by the kernel (SIGKILL), whatever the
  rest of the machine is doing; the cgroup's peak usage is read before removal, for the message.
- address space (``RLIMIT_AS``, portable to any POSIX system): set in the worker on top of what it has
  mapped at start-up. Crossing it makes an allocation fail: the job sees ``MemoryError``, which is
  reported as that item's worker_error. It counts virtual memory, not resident memory: a looser guard.

The report's notes say which one was in force, and why the cgroup was not.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

PREFIX = "supervisor-"
# A SIGKILLed process leaves its cgroup within milliseconds; 1 s covers a loaded machine.
RELEASE_WAIT = 1.0
V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")


def _own_memory_cgroup() -> tuple[str, Path]:
    """("v1" | "v2", directory of this process's memory cgroup); raises OSError saying why not."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    for line in lines:
        hier, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(",") and (V1_ROOT / "memory.limit_in_bytes").exists():
            return "v1", V1_ROOT / path.lstrip("/")
    for line in lines:
        hier, controllers, path = line.split(":", 2)
        if hier == "0" and controllers == "" and (V2_ROOT / "cgroup.controllers").exists():
            return "v2", V2_ROOT / path.lstrip("/")
    raise OSError("no memory cgroup (v1 or v2) is mounted")


class MemoryLimit:
    """Creates and removes the per-worker cgroups of one run; ``mechanism`` says what is in force."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.made: dict[int, Path] = {}  # worker pid -> its cgroup directory
        self.count = 0
        try:
            self.version, self.parent = _own_memory_cgroup()
            probe = self._make("probe")  # can we create one and set its limit?
            probe.rmdir()
            self.mechanism = f"cgroup {self.version} memory limit per worker"
            self.cgroup = True
        except OSError as e:
            self.mechanism = (f"address-space limit (RLIMIT_AS) per worker: a memory cgroup could not be "
                              f"created here ({e})")
            self.cgroup = False

    def _make(self, tag: str) -> Path:
        d = self.parent / f"{PREFIX}{os.getpid()}-{tag}"
        d.mkdir()
        try:
            if self.version == "v1":
                (d / "memory.limit_in_bytes").write_text(str(self.limit))
                memsw = d / "memory.memsw.limit_in_bytes"
                if memsw.exists():  # no swap escape hatch: the limit means the OOM killer
                    memsw.write_text(str(self.limit))
            else:
                subtree = self.parent / "cgroup.subtree_control"
                if "memory" not in subtree.read_text().split():
                    subtree.write_text("+memory")
                (d / "memory.max").write_text(str(self.limit))
                swap = d / "memory.swap.max"
                if swap.exists():
                    swap.write_text("0")
        except OSError:
            d.rmdir()
            raise
        return d

    def confine(self, pid: int) -> None:
        """Move a just-started worker into a cgroup of its own (no-op with the address-space fallback)."""
        if not self.cgroup:
            return
        self.count += 1
        d = self._make(str(self.count))
        (d / "cgroup.procs").write_text(str(pid))
        self.made[pid] = d

    def peak_mib(self, pid: int) -> float | None:
        """The worker's peak memory in its cgroup (v1 max_usage_in_bytes, v2 memory.peak), if known."""
        d = self.made.get(pid)
        for name in ("memory.max_usage_in_bytes", "memory.peak"):
            try:
                return int((d / name).read_text().split()[0]) / 2**20  # type: ignore[operator]
            except (OSError, TypeError, ValueError, IndexError):
                continue
        return None

    def oom_killed(self, pid: int) -> bool:
        """Did the kernel OOM-kill a process in this worker's own cgroup?"""
        from ._oom import _cgroup_oom_kills

        return (_cgroup_oom_kills(self.made.get(pid)) or 0) > 0

    def release(self, pid: int) -> None:
        """Remove the worker's cgroup once it has exited. Processes still in it are what its job started
        and left (orphaned if the worker died by itself): SIGKILLed first."""
        d = self.made.get(pid)
        if d is None:
            return
        try:
            for left in (d / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(left), signal.SIGKILL)
                except OSError:
                    pass
            d.rmdir()
            del self.made[pid]
        except OSError:
            pass  # not empty yet (a process still exiting): release_all() tries again after the final reap

    def release_all(self) -> list[str]:
        """Remove every cgroup this run made, waiting up to RELEASE_WAIT for their last processes to go;
        returns the ones that could not be removed."""
        deadline = time.monotonic() + RELEASE_WAIT
        while True:
            for pid in list(self.made):
                self.release(pid)
            if not self.made or time.monotonic() > deadline:
                return [str(d) for d in self.made.values()]
            time.sleep(0.01)


def address_space_limit(limit: int) -> None:
    """In the worker: allow ``limit`` bytes of address space on top of what is mapped now."""
    import resource

    mapped = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    mapped = int(line.split()[1]) * 1024
    except OSError:
        pass
    resource.setrlimit(resource.RLIMIT_AS, (mapped + limit, mapped + limit))
