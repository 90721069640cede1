"""Start the runner under a watchdog, inject faults from outside, measure, and reap the whole tree.

    harness (this process)                 runner (fresh process, own session)         workers
    ----------------------                 -----------------------------------         -------
    Popen(runner, start_new_session) ----> VARIANTS[v].run(job, items, ...) ---------> job(item)
    every TICK: is a process of the group  |                                           | stamp start/fault
      alive? (stop latency,                 |                                           v
       leftovers, orphans)                 |                                    events file (JSON lines)
    read events: SIGKILL the worker busy   |                                           ^
      on item k / the runner itself  ------+-------------------------------------------+
    watchdog: no exit by `watchdog` s -> SIGUSR1 (stack dump), then SIGKILL the group: "hung" when the
      last EVIDENCE_WINDOW s show it (idle, or re-running the fault's task), else "over_watchdog"
    RESULT line <------------------------- prints one JSON line, then exits naturally

Every run is in its own session, so the harness can find every process of the run, including workers
orphaned when the runner dies and workers in process groups of their own (the supervisor gives each worker
one, for the processes its job starts), and kill them all at the end. A "group" below is that session: its id
is the runner's pid. Nothing outlives
:func:`run_scenario`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import memory_profiler
import psutil

from . import cgroup
from .events import read_events
from .runner import RESULT_TAG

ROOT = Path(__file__).resolve().parents[2]
# Seconds between an observer's looks at its run (who is alive, the runner's exit, the fault's cue): the
# resolution of stop latency.
TICK = 0.005
MEMORY_TICK = 0.05  # seconds between memory samples, when sampling is asked for
# A process of the run still alive this long after the runner exited counts as left running. The
# margin: multiprocessing's resource_tracker exits on EOF of its pipe within milliseconds; 1 s is
# two orders of magnitude above that, and far below "left running for good". A scenario about the
# parent's death watches longer (orphan_watch).
LEFTOVER_GRACE = 1.0
# Extra watchdog seconds for a variant's own start-up and recovery. The watchdog is for "never comes
# back", not for "slow".
# Start-up: Dask's LocalCluster imports distributed in the main process and in every nanny and worker (2 s
# on an idle 2-core machine, up to 8 s when the other core is busy; 10 s bounds that). The other designs
# start their workers as the plain executors do, within the scenarios' own watchdogs.
START_ALLOWANCE = {"dask_distributed": 10.0}
# Recovery and stop, once a fault is noticed: after a worker is killed we measured Dask's progress stalling
# for ~15 s before it carries on. billiard's terminate() waits up to 5 s for queued tasks and each worker
# sleeps 1 s on its way out (~7 s measured); mpire's terminate() starts a process per queue to drain it (up
# to 5.6 s seen in CI with the other core busy; MPIRE_STOP in experiments/test_peer_libraries.py). A
# scenario in which nothing can be noticed (a hang with no limit at all) passes stop_allowance=False: no
# design takes that path there.
STOP_ALLOWANCE = {"dask_distributed": 15.0, "billiard_pool": 8.0, "mpire_pool": 8.0}
# A death that repeats (the job kills every worker it runs on): Dask re-runs the task on a fresh worker until
# allowed-failures (3) + 1 workers died with it, each a nanny restart (a spawn and an import of distributed).
# 2.3-6.8 s measured on an idle or lightly loaded machine; once, on 3.12 while the other xdist worker ran its
# own processes, more than 25 s. A scenario with such a death passes repeated_death=True.
RETRY_ALLOWANCE = {"dask_distributed": 30.0}
# After SIGUSR1 to a hung runner: its stack dump is complete once stderr stops growing for DUMP_QUIET. The
# dump is one burst of writes from a signal handler (a few ms); 50 ms of quiet is 10x that. DUMP_LIMIT bounds
# the wait where stderr never goes quiet (workers printing in a loop) or never grows (the runner is stopped).
DUMP_QUIET = 0.05
DUMP_LIMIT = 0.5
# SIGKILL is delivered at once; a process leaves the process table when its memory is torn down, which for
# a worker holding gigabytes takes a fraction of a second. 5 s bounds that wait on a loaded machine.
REAP_LIMIT = 5.0
# A run still going at its watchdog is called hung only on evidence, read over the last EVIDENCE_WINDOW s before it:
# - "idle": its processes (the fault's own, e.g. a job spinning in a loop, left out) used under BUSY_BELOW of a core
#   together and no event was logged (no task started or finished): everyone waits for something that never comes.
# - "loop": a task that stamped a fault started more than LOOP_STARTS times: the design keeps re-running it
#   (Dask, a worker killed while sending), so it never ends however long one waits.
# Otherwise it is still computing or making progress: watched longer (OVERTIME), then "over_watchdog".
# The margins: an idle pool's housekeeping (threads polling, heartbeats) stays under 0.1 of a core here, Dask's
# scheduler, nannies and workers included (measured: see tests/test_lab.py, the hang evidence tests); a process
# moving or unpickling a large result uses close to a whole core. 2 s is four of billiard's and mpire's 0.5 s
# polls, so a design's own timer cannot pass for progress by firing once.
# A run that is busy at its watchdog is watched one window more at a time, up to OVERTIME s past the watchdog: on a
# loaded machine a run can still be finishing its healthy items when the watchdog comes, then fall idle for good
# (multiprocessing.Pool after a lost task); or it ends, and what it did is recorded as it is, with its latency.
# Still busy after OVERTIME: "over_watchdog". 10 s is five windows: room for a run the machine slowed (billiard
# noticing a death among 10^7-int results raised in 9.7 s in one full bench and met its 15 s watchdog in another).
EVIDENCE_WINDOW = 2.0
BUSY_BELOW = 0.25
LOOP_STARTS = 2
OVERTIME = 10.0
STARTED_GROUPS: set[int] = set()  # every session this harness started: the leak check scans them


@dataclass
class Outcome:
    """What the harness saw. Latencies in seconds; None where the event never happened."""

    variant: str
    status: str  # "returned" | "raised" | "hung" (no result before the watchdog, and evidence: hang_evidence) |
    #              "over_watchdog" (no result before the watchdog, but still busy or progressing) |
    #              "parent_killed" (by the harness) | "runner_died" (the runner ended by itself with no result)
    result: dict[str, Any] | None
    fault_t: float | None
    detect_latency: float | None  # fault -> run() returned or raised
    stop_latency: float | None  # fault -> no process of the run but the runner alive
    exit_latency: float | None  # run() came back -> runner process exited (lingering threads, joins)
    lingered: bool  # run() came back but the runner did not exit before the watchdog
    left_running: list[str]  # processes of the run alive LEFTOVER_GRACE (or orphan_watch) s after the runner
    #                          exited, or when the watchdog fired
    orphans_exit_latency: float | None  # runner killed: time from its death until all its processes were gone
    peak_children_mb: float | None
    memory_trace: list[tuple[float, float, float]]  # (t since start, runner MiB, children MiB)
    stdout: str
    stderr: str
    events: list[dict[str, Any]] = field(default_factory=list)
    wall: float = 0.0
    runner_pid: int | None = None
    runner_returncode: int | None = None  # the runner process's own exit status (-9: SIGKILLed)
    # At the watchdog: what the last EVIDENCE_WINDOW s showed ({"verdict": "idle" | "loop" | "busy", "cpu_cores",
    # "events", "busiest", "fault_starts"}); None when the run ended before its watchdog.
    hang_evidence: dict[str, Any] | None = None

    @property
    def kind(self) -> str | None:
        return (self.result or {}).get("kind")

    @property
    def item(self) -> Any:
        return (self.result or {}).get("item")

    @property
    def exitcode(self) -> int | None:
        return (self.result or {}).get("exitcode")

    def label(self) -> str:
        """One word for the fault matrix."""
        if self.status == "raised":
            return f"raised {self.result.get('kind') or self.result.get('exc_type')}"
        return self.status

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["stdout"] = self.stdout[-4000:]
        d["stderr"] = self.stderr[-4000:]
        return d


def _scan(pgid: int) -> list[int]:
    """The live (not zombie) pids of session ``pgid``: one pass over the process table."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _live_in(int(name), pgid):
            out.append(int(name))
    return out


def _live_in(pid: int, pgid: int) -> bool:
    """Is ``pid`` a live (not zombie) process of session ``pgid``? Plain /proc reads, no psutil object."""
    try:
        if os.getsid(pid) != pgid:
            return False
        with open(f"/proc/{pid}/stat", "rb") as f:  # "pid (comm) S ...": the state follows the last ")"
            return f.read().rpartition(b")")[2].split(None, 1)[0] != b"Z"
    except (OSError, IndexError):  # gone meanwhile (ProcessLookupError, FileNotFoundError)
        return False


def group_members(pgid: int, exclude: int | None = None) -> list[psutil.Process]:
    """Every live process of group ``pgid`` now, but ``exclude``."""
    out = []
    for pid in _scan(pgid):
        if pid == exclude:
            continue
        try:
            out.append(psutil.Process(pid))
        except psutil.Error:
            pass
    return out


class GroupWatch:
    """Is a process of group ``pgid`` (but ``exclude``, the runner) alive? Asked by the observer every TICK.

    A scan lists /proc and calls getsid on every process: ~0.5 ms here; with psutil objects for the members (before
    135f757) 0.74 ms, and the observer then took 12% of a core (profiled), while the bench observes up to 10 runs at
    once. A member known from the last scan that is still alive and in the group answers "yes" exactly, for one
    getsid and one read; only when every known member is gone is there a scan, which also finds members started
    since (and then answers "yes" if there are any).
    """

    def __init__(self, pgid: int, exclude: int) -> None:
        self.pgid, self.exclude = pgid, exclude
        self.known: list[int] = []

    def any_alive(self) -> bool:
        if any(_live_in(pid, self.pgid) for pid in self.known):
            return True
        self.known = [pid for pid in _scan(self.pgid) if pid != self.exclude]
        return bool(self.known)

    def members(self) -> list[psutil.Process]:
        """Every live process of the group now (a fresh scan), but ``exclude``: to name what was left."""
        return group_members(self.pgid, exclude=self.exclude)


def describe(p: psutil.Process) -> str:
    """A short name for a leftover process: what a reader needs to recognise it."""
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return f"{p.pid} (gone)"
    for key, name in (("resource_tracker", "resource_tracker"), ("forkserver", "forkserver"),
                      ("loky", "loky worker"), ("distributed", "dask process"), ("pebble", "pebble worker")):
        if key in cmd:
            return f"{p.pid} {name}"
    if "spawn_main" in cmd:
        return f"{p.pid} worker/manager (spawn)"
    return f"{p.pid} {cmd[:80]}"


def kill_group(pgid: int) -> None:
    """SIGKILL every process of session ``pgid``: its first process group at once, then the members of other
    groups of the session (the supervisor's workers and what their jobs started)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in _scan(pgid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:  # gone meanwhile
            pass


def watchdog_for(variant: str, watchdog: float, *, stop_allowance: bool = True, repeated_death: bool = False) -> float:
    """The scenario's ``watchdog`` plus what ``variant`` is allowed on top (see the allowances above)."""
    return (watchdog + START_ALLOWANCE.get(variant, 0.0) + (STOP_ALLOWANCE.get(variant, 0.0) if stop_allowance else 0.0)
            + (RETRY_ALLOWANCE.get(variant, 0.0) if repeated_death else 0.0))


def run_scenario(variant: str, *, job: dict[str, Any] | None = None, items: int = 20,
                 items_raise_at: int | None = None, on_result: dict[str, Any] | None = None,
                 run_kwargs: dict[str, Any] | None = None, resume_items: list[Any] | None = None,
                 watchdog: float = 30.0, fault_clock: str = "event",
                 kill_worker_on_item: Any = None, kill_cue: str | None = None,
                 kill_runner_after_starts: int | None = None,
                 sigint_after_starts: int | None = None, orphan_watch: float = LEFTOVER_GRACE,
                 sample_memory: bool = False, python: str | None = None,
                 items_spec: dict[str, Any] | None = None, run_cgroup: dict[str, int] | None = None,
                 stop_allowance: bool = True, repeated_death: bool = False) -> Outcome:
    """Run ``variant`` on one scenario in a fresh runner process and observe it from outside.

    ``fault_clock`` says when the fault happened: "event" (the first fault stamped by a job, the items
    iterator or on_result, or the harness's own kill), "deadline" (start + timeout), or "task_deadline"
    (the hang's stamp + task_timeout). ``items_spec`` adds to the items' description (see
    ``jobs.RaisingItems``: a special item at an index, a source that blocks). ``run_cgroup``
    (``{"limit_mb": .., "ballast_mb": ..}``) runs the whole run, runner included, in one memory cgroup, the
    runner holding ``ballast_mb`` of its own (see ``runner._enter_run_cgroup``). The watchdog gets the
    variant's ``START_ALLOWANCE``, unless ``stop_allowance`` is false its ``STOP_ALLOWANCE``, and with
    ``repeated_death`` its ``RETRY_ALLOWANCE``. ``kill_cue``: ``kill_worker_on_item`` waits until the run's event
    log also holds an event of that name (``"source_blocks"``: the items source has begun to block), so the
    kill lands in the setting the scenario is about, however the run's threads were scheduled.
    """
    run_kwargs = dict(run_kwargs or {})
    watchdog = watchdog_for(variant, watchdog, stop_allowance=stop_allowance, repeated_death=repeated_death)
    with tempfile.TemporaryDirectory(prefix="lab-", ignore_cleanup_errors=True) as tmp:
        events = os.path.join(tmp, "events.jsonl")
        items_all = {"count": items, "raise_at": items_raise_at, **(items_spec or {})}
        spec = {"variant": variant, "job": job or {}, "items": items_all,
                "on_result": on_result or {}, "run_kwargs": run_kwargs, "events": events,
                "resume_items": resume_items, "run_cgroup": run_cgroup}
        stderr_path = os.path.join(tmp, "stderr.txt")
        with open(stderr_path, "w+") as stderr_file:
            return _observe(Watch(
                variant=variant, spec=spec, tmp=tmp, events=events, stderr_file=stderr_file, run_kwargs=run_kwargs,
                watchdog=watchdog, fault_clock=fault_clock, kill_worker_on_item=kill_worker_on_item, kill_cue=kill_cue,
                kill_runner_after_starts=kill_runner_after_starts, sigint_after_starts=sigint_after_starts,
                orphan_watch=orphan_watch, sample_memory=sample_memory, python=python or sys.executable))


@dataclass(frozen=True, kw_only=True)
class Watch:
    """One observation to make: what to start, which fault to inject from outside, how long to watch."""

    variant: str
    spec: dict[str, Any]  # the runner's whole input (one JSON argument)
    tmp: str  # the run's own folder, removed after it: the run's TMPDIR too (see _observe)
    events: str  # the run's event log (see .events)
    stderr_file: IO[str]  # the runner's stderr, read back into Outcome.stderr
    run_kwargs: dict[str, Any]
    watchdog: float  # seconds, start-up allowance included
    fault_clock: str  # "event" | "deadline" | "task_deadline" (see run_scenario)
    kill_worker_on_item: Any = None  # SIGKILL the worker that stamps `start` for this item
    kill_cue: str | None = None  # ... once an event of this name is in the log too (see run_scenario)
    kill_runner_after_starts: int | None = None  # SIGKILL the runner once this many items started
    sigint_after_starts: int | None = None  # SIGINT the run's process group once this many items started
    orphan_watch: float = LEFTOVER_GRACE
    sample_memory: bool = False
    python: str = sys.executable


def _observe(w: Watch) -> Outcome:
    variant, events, stderr_file, run_kwargs = w.variant, w.events, w.stderr_file, w.run_kwargs
    # TMPDIR: whatever the run's processes put in the temporary folder (multiprocessing's pymp-* folders,
    # dask's scratch space) goes with the run's own folder, also when the harness had to SIGKILL them.
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1", TMPDIR=w.tmp)
    t0 = time.monotonic()
    proc = subprocess.Popen([w.python, "-m", "experiments.lab.runner", json.dumps(w.spec)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=stderr_file, text=True, start_new_session=True)
    pgid = proc.pid
    STARTED_GROUPS.add(pgid)
    group = GroupWatch(pgid, exclude=proc.pid)
    lines: list[str] = []
    result_box: dict[str, Any] = {}

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(RESULT_TAG):
                result_box["t_seen"] = time.monotonic()
                result_box["result"] = json.loads(line[len(RESULT_TAG):])
            else:
                lines.append(line)

    reader = threading.Thread(target=read_stdout, daemon=True, name="runner-stdout")
    reader.start()
    harness_fault_t: float | None = None
    parent_killed_t: float | None = None
    exit_t: float | None = None
    stop_t: float | None = None
    last_seen: float | None = None
    hung = False
    left: list[str] | None = None
    orphans_gone_t: float | None = None
    peak_children = 0.0
    trace: list[tuple[float, float, float]] = []
    next_sample = t0
    acted = False
    deadline = t0 + w.watchdog  # moved by a window at a time while a run past its watchdog is busy (OVERTIME)
    window_start: tuple[float, dict[int, float]] | None = None  # (when, CPU seconds per pid): the evidence window
    evidence: dict[str, Any] | None = None
    try:
        while True:
            now = time.monotonic()
            alive = group.any_alive()
            if alive:
                last_seen, stop_t = now, None
            elif stop_t is None and last_seen is not None:
                stop_t = now  # the run's processes just went from some to none
            if exit_t is None and proc.poll() is not None:
                exit_t = now
            if exit_t is not None:
                if not alive:
                    orphans_gone_t = now
                    break
                if now > exit_t + max(w.orphan_watch, LEFTOVER_GRACE):
                    left = [describe(p) for p in group.members()] or None
                    if left is None:  # the last of them went between the question and this scan
                        orphans_gone_t = now
                    break
            if w.sample_memory and now >= next_sample and exit_t is None:
                next_sample = now + MEMORY_TICK
                try:
                    sample = memory_profiler.memory_usage(proc=proc.pid, interval=0.001, multiprocess=True,
                                                          include_children=False)[0]
                    peak_children = max(peak_children, sum(sample[1:]))
                    trace.append((now - t0, sample[0], sum(sample[1:])))
                except (psutil.Error, IndexError):
                    pass
            if not acted and exit_t is None:
                acted, harness_fault_t, parent_killed_t = _act(proc, w)
            if window_start is None and exit_t is None and now > deadline - EVIDENCE_WINDOW:
                window_start = (now, _cpu_seconds(pgid))
            if now > deadline:
                if exit_t is None:
                    if "result" not in result_box and window_start is not None:
                        cpu = _cpu_seconds(pgid)
                        evidence = hang_evidence(*window_start, cpu, read_events(events), now)
                        evidence["overtime"] = round(now - t0 - w.watchdog, 2)
                        if evidence["verdict"] == "busy" and now - t0 < w.watchdog + OVERTIME:
                            # no evidence either way yet: watch one more window (see OVERTIME)
                            deadline, window_start = now + EVIDENCE_WINDOW, (now, cpu)
                            time.sleep(TICK)
                            continue
                    hung = "result" not in result_box
                    left = [describe(p) for p in group.members()]
                    proc.send_signal(signal.SIGUSR1)  # faulthandler: dump every thread's stack to stderr
                    _await_stack_dump(proc, stderr_file)
                break
            time.sleep(TICK)
    finally:
        kill_group(pgid)
        for p in group_members(pgid):  # what killpg missed (a process forked into the group as it ran)
            try:
                p.kill()
            except psutil.NoSuchProcess:  # it died between the listing and this kill (CI on 3.11 saw one)
                pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        # Until every killed process is really gone (bounded): one still dying could write into the run's
        # folder after it is removed (dask's scratch space) or keep its memory cgroup busy.
        deadline = time.monotonic() + REAP_LIMIT
        while (members := group_members(pgid)) and time.monotonic() < deadline:
            psutil.wait_procs(members, timeout=TICK)
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
        cgroup.remove_lab_cgroups()
    stderr_file.seek(0)
    result = result_box.get("result")
    ev = read_events(events)
    if w.fault_clock == "deadline" and result is not None and run_kwargs.get("timeout"):
        # A variant whose timeout starts after its own start-up (dask's cluster) says so in its report.
        fault_t = ((result.get("report") or {}).get("clock_start") or result["t_start"]) + run_kwargs["timeout"]
    elif w.fault_clock == "task_deadline" and run_kwargs.get("task_timeout") and (first := _first_fault(events)):
        fault_t = first + run_kwargs["task_timeout"]
    else:
        fault_t = harness_fault_t or _first_fault(events)
    if parent_killed_t is not None:
        status = "parent_killed"
    elif result is None and exit_t is not None:
        status = "runner_died"
    elif hung:
        status = "hung" if evidence is None or evidence["verdict"] != "busy" else "over_watchdog"
    else:
        status = (result or {}).get("outcome", "hung")
    if left or hung or (exit_t is None and not parent_killed_t):
        stop_t = None  # the harness had to kill them: the run never stopped its processes by itself
    t_end = (result or {}).get("t_end")
    return Outcome(
        variant=variant, status=status, result=result, fault_t=fault_t,
        detect_latency=(t_end - fault_t) if (t_end and fault_t) else None,
        stop_latency=(stop_t - fault_t) if (stop_t and fault_t and stop_t > fault_t) else None,
        exit_latency=(exit_t - t_end) if (exit_t and t_end) else None,
        lingered=result is not None and exit_t is None,
        left_running=left or [],
        orphans_exit_latency=(orphans_gone_t - parent_killed_t) if (orphans_gone_t and parent_killed_t) else None,
        peak_children_mb=peak_children if w.sample_memory else None,
        memory_trace=trace, stdout="".join(lines), stderr=stderr_file.read(), events=ev,
        wall=time.monotonic() - t0, runner_pid=proc.pid, runner_returncode=proc.returncode, hang_evidence=evidence,
    )


def _cpu_seconds(pgid: int) -> dict[int, float]:
    """CPU seconds (user + system) so far of every live process of session ``pgid``, by pid."""
    out = {}
    for pid in _scan(pgid):
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:  # gone meanwhile
            pass
    return out


def hang_evidence(since: float, before: dict[int, float], after: dict[int, float], events: list[dict[str, Any]],
                  now: float) -> dict[str, Any]:
    """What the run's processes did between ``since`` and ``now`` (CPU seconds per pid at each end, the run's
    events): the verdict "loop", "idle" or "busy" (see EVIDENCE_WINDOW) and the figures behind it. The processes
    that stamped a fault are left out of the CPU: a job spinning in its hang is the fault, not the design working."""
    window = max(now - since, TICK)
    fault_pids = {e["pid"] for e in events if e["ev"] == "fault"}
    fault_items = {repr(e["item"]) for e in events if e["ev"] == "fault"}
    used = {pid: cpu - before.get(pid, 0.0) for pid, cpu in after.items() if pid not in fault_pids}
    cores = sum(used.values()) / window
    recent = sum(e["t"] >= since for e in events)
    starts = max((sum(e["ev"] == "start" and repr(e["item"]) == item for e in events) for item in fault_items),
                 default=0)
    verdict = "loop" if starts > LOOP_STARTS else "idle" if cores < BUSY_BELOW and not recent else "busy"
    busiest = sorted(used.items(), key=lambda kv: -kv[1])[:3]
    return {"verdict": verdict, "window": round(window, 2), "cpu_cores": round(cores, 3), "events": recent,
            "fault_starts": starts, "busiest": [[pid, round(cpu / window, 3)] for pid, cpu in busiest]}


def _await_stack_dump(proc: subprocess.Popen, stderr_file: IO[str]) -> None:
    """Until the runner's stderr has grown, then stayed still for DUMP_QUIET (the dump is written), at most
    DUMP_LIMIT: faulthandler writes every thread's stack from its C signal handler, in one burst."""
    fd = stderr_file.fileno()
    size, changed = os.fstat(fd).st_size, None
    deadline = time.monotonic() + DUMP_LIMIT
    while (now := time.monotonic()) < deadline and proc.poll() is None:
        if (new := os.fstat(fd).st_size) != size:
            size, changed = new, now
        elif changed is not None and now - changed >= DUMP_QUIET:
            return
        time.sleep(TICK)


def _first_fault(events: str) -> float | None:
    ts = [e["t"] for e in read_events(events) if e["ev"] == "fault"]
    return min(ts) if ts else None


def _act(proc: subprocess.Popen, w: Watch) -> tuple[bool, float | None, float | None]:
    """Inject a fault from outside once its cue appears. Returns (acted, fault_t, parent_killed_t)."""
    kill_worker_on_item, kill_runner_after_starts, sigint_after_starts = (
        w.kill_worker_on_item, w.kill_runner_after_starts, w.sigint_after_starts)
    if kill_worker_on_item is None and kill_runner_after_starts is None and sigint_after_starts is None:
        return True, None, None
    events = read_events(w.events)
    starts = [e for e in events if e["ev"] == "start"]
    if kill_worker_on_item is not None:
        if w.kill_cue is not None and not any(e["ev"] == w.kill_cue for e in events):
            return False, None, None
        for e in starts:
            if e["item"] == kill_worker_on_item:
                t = time.monotonic()
                try:
                    os.kill(e["pid"], signal.SIGKILL)  # the article's "kill from another shell"
                except ProcessLookupError:
                    return False, None, None
                return True, t, None
        return False, None, None
    if kill_runner_after_starts is not None and len(starts) >= kill_runner_after_starts:
        t = time.monotonic()
        proc.kill()  # the main process dies: OOM killer or kill -9 on the parent
        return True, t, t
    if sigint_after_starts is not None and len(starts) >= sigint_after_starts:
        t = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: SIGINT to the whole foreground group
        return True, t, None
    return False, None, None
