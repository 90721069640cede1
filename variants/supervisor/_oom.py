"""Was it the kernel OOM killer? The best evidence this machine offers about one SIGKILLed worker.

SIGKILL is what the OOM killer sends, and also what ``kill -9`` sends. In order of trust:

1. the kernel log (``/dev/kmsg``, readable as root or with CAP_SYSLOG): the OOM killer writes
   "oom-kill:...,pid=N," before its SIGKILL and "Killed process N" just after; a record naming the
   worker's pid since the run started is proof, and one naming only other pids is proof it was not;
2. the worker's own memory cgroup, as it was when the worker started (cgroup v2
   ``memory.events.local``, this cgroup alone, or on kernels without it ``memory.events``, which counts
   its sub-cgroups too; v1 ``memory.oom_control``, this cgroup alone): its ``oom_kill`` counter rose
   during the worker's life;
3. the machine-wide ``/proc/vmstat`` counter, the fallback, said as such: it rises for any process.

The counters are raised before the OOM killer's SIGKILL is sent, so they are up to date when we see the
worker's death; the log line after it may lag, so when a counter says "an OOM kill happened" and the log
does not name the worker yet, we wait for the log up to ``LOG_SETTLE`` seconds (an event on the fd,
not a poll). A plain ``kill -9`` with no OOM anywhere costs no wait.
"""

from __future__ import annotations

import os
import re
import select
from dataclasses import dataclass
from pathlib import Path

LOG_SETTLE = 0.2  # the "Killed process" line follows the SIGKILL by microseconds; 0.2 s covers a loaded machine
KILLED = re.compile(r"(?:Killed process |oom-kill:.*?[,:]pid=)(\d+)")


def _vmstat_oom_kills() -> int | None:
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _memory_cgroup(pid: int) -> Path | None:
    """The directory of the memory cgroup ``pid`` is in (v1 memory controller, else v2), if mounted."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    v1 = v2 = None
    for line in lines:
        hier, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            v1 = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
        elif hier == "0" and controllers == "":
            v2 = Path("/sys/fs/cgroup") / path.lstrip("/")
    for d in (v1, v2):
        if d is not None and ((d / "memory.oom_control").exists() or (d / "memory.events").exists()):
            return d
    return None


def _cgroup_oom_kills(d: Path | None) -> int | None:
    if d is None:
        return None
    # v2's memory.events counts OOM kills in every sub-cgroup too (a process the job put in a cgroup of its
    # own): .local, where the kernel has it (5.2+), counts this cgroup's own.
    for name in ("memory.events.local", "memory.events", "memory.oom_control"):
        try:
            for line in (d / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            continue
    return None


@dataclass
class Baseline:
    """What the counters said when a worker started."""

    cgroup: Path | None
    cgroup_kills: int | None
    machine_kills: int | None


class Witness:
    """Reads the kernel's OOM evidence for the workers of one run; ``close()`` when the run ends."""

    def __init__(self) -> None:
        self.log_fd: int | None = None
        self.killed: dict[int, str] = {}  # pid -> the kernel log line naming it, since the run started
        try:
            fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(fd, 0, os.SEEK_END)  # only records written from now on
            self.log_fd = fd
        except OSError:
            pass  # no kernel log for us: the counters below are the evidence

    def baseline(self, pid: int) -> Baseline:
        d = _memory_cgroup(pid)
        return Baseline(d, _cgroup_oom_kills(d), _vmstat_oom_kills())

    def _read_log(self) -> None:
        if self.log_fd is None:
            return
        while True:
            try:
                record = os.read(self.log_fd, 8192).decode(errors="replace")
            except BlockingIOError:
                return
            except BrokenPipeError:
                continue  # records were overwritten before we read them: go on with the next ones
            except OSError:
                return
            if not record:
                return
            m = KILLED.search(record)
            if m:
                self.killed.setdefault(int(m.group(1)), record.split(";", 1)[-1].strip())

    def verdict(self, pid: int, before: Baseline) -> str:
        """One sentence: did the OOM killer kill ``pid``, and on what evidence."""
        machine = _vmstat_oom_kills()
        machine_rose = machine is not None and before.machine_kills is not None and machine > before.machine_kills
        if self.log_fd is not None:
            self._read_log()
            if pid not in self.killed and machine_rose:
                r, _, _ = select.select([self.log_fd], [], [], LOG_SETTLE)  # its log line may still be coming
                if r:
                    self._read_log()
            if pid in self.killed:
                return f"the kernel OOM killer did it (kernel log: {self.killed[pid][:160]})"
            others = sorted(p for p in self.killed if p != pid)
            if others:
                return (f"not the OOM killer: the kernel log names OOM kills of other pids ({others[:5]}), "
                        "not this worker; something else sent SIGKILL (kill -9?)")
            return "not the OOM killer: the kernel log records no OOM kill; something else sent SIGKILL (kill -9?)"
        now = _cgroup_oom_kills(before.cgroup)
        if now is not None and before.cgroup_kills is not None and now > before.cgroup_kills:
            return (f"the kernel OOM killer did it: its memory cgroup {before.cgroup} recorded an OOM kill "
                    f"(oom_kill {before.cgroup_kills} -> {now})")
        if machine_rose:
            return (f"possibly the kernel OOM killer: an OOM kill was recorded on this machine meanwhile "
                    f"(/proc/vmstat oom_kill {before.machine_kills} -> {machine}), but that counter is "
                    "machine-wide and the worker's own cgroup recorded none")
        return "the kernel recorded no OOM kill meanwhile: something else sent SIGKILL (kill -9?)"

    def close(self) -> None:
        if self.log_fd is not None:
            os.close(self.log_fd)
            self.log_fd = None
