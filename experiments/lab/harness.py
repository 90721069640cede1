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
# - "idle": none of its processes (the fault's own, e.g. a job spinning in a loop, left out) used or waited for
#   BUSY_BELOW of a core (``_demand_seconds``) and no event was logged (no task started or finished): everyone
#   waits for something that never comes.
# - "loop": a task that stamped a fault started more than LOOP_STARTS times: the design keeps re-running it
#   (Dask, a worker killed while sending), so it never ends however long one waits.
# Otherwise it is still computing or making progress: watched longer (OVERTIME), then "over_watchdog".
# The margins: a process moving or unpickling a large result uses (or waits for) close to a whole core, however
# loaded the machine (waiting counts), while an idle pool's housekeeping (threads polling, heartbeats) is a small
# fraction of one per process. Per process, not summed: an idle Dask cluster's nine processes each wait for their
# heartbeats' turn on a loaded machine, 0.14-0.19 core each and 0.5 together (CI, 3.13, beside two xdist workers),
# which a summed bound of 0.25 read as work ("over the watchdog" instead of HANGS). 3 s is longer than the
# longest task of any scenario (the run timeout's 2 s sleeps), so a run still working through its tasks logs an
# event in every window.
# A run that is busy at its watchdog is watched one window more at a time, up to OVERTIME s past the watchdog: on a
# loaded machine a run can still be finishing its healthy items when the watchdog comes, then fall idle for good
# (multiprocessing.Pool after a lost task); or it ends, and what it did is recorded as it is, with its latency.
# Still busy after OVERTIME: "over_watchdog". 10 s is three windows and more: room for a run the machine slowed (billiard
# noticing a death among 10^7-int results raised in 9.7 s in one full bench and met its 15 s watchdog in another).
EVIDENCE_WINDOW = 3.0
BUSY_BELOW = 0.5
LOOP_STARTS = 2
OVERTIME = 10.0
# Every session this harness started that may still have a process: the leak check scans them. A session is
# forgotten once none of its processes is left (``_reap``, ``forget_empty_groups``): its id is the runner's pid,
# which the kernel hands out again (pid_max is 32,768 here), and a stale id once made a test's leak check kill
# another xdist worker's run that had been given the same pid.
STARTED_GROUPS: set[int] = set()


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
    # At the watchdog: what the last EVIDENCE_WINDOW s showed ({"verdict": "idle" | "loop" | "busy", "demand_cores",
    # "events", "busiest", "fault_starts", "overtime", "states"}); the stack dump is in stderr. None when the run
    # ended before its watchdog.
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


def forget_empty_groups() -> None:
    """Drop from STARTED_GROUPS every session with no live process left (after a leak check killed them)."""
    for pgid in list(STARTED_GROUPS):
        if not _scan(pgid):
            STARTED_GROUPS.discard(pgid)


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


def run_scenario(variant: str, **scenario: Any) -> Outcome:
    """Run ``variant`` on one scenario in a fresh runner process and observe it from outside. ``scenario``: the
    fields of :class:`Watch` (a scenario's ``kwargs``, passed whole); an unknown one is a TypeError."""
    watch = Watch(variant=variant, **scenario)
    with tempfile.TemporaryDirectory(prefix="lab-", ignore_cleanup_errors=True) as tmp:
        with open(os.path.join(tmp, "stderr.txt"), "w+") as stderr_file:
            return _Observation(watch, tmp, stderr_file).run()


@dataclass(frozen=True, kw_only=True)
class Watch:
    """One scenario to observe: what the runner runs, which fault the harness injects from outside, how long it
    watches.

    ``fault_clock`` says when the fault happened: "event" (the first fault stamped by a job, the items
    iterator or on_result, or the harness's own kill), "deadline" (start + timeout), or "task_deadline"
    (the hang's stamp + task_timeout). ``items_spec`` adds to the items' description (see
    ``jobs.RaisingItems``: a special item at an index, a source that blocks). ``run_cgroup``
    (``{"limit_mb": .., "ballast_mb": ..}``) runs the whole run, runner included, in one memory cgroup, the
    runner holding ``ballast_mb`` of its own (see ``runner._enter_run_cgroup``). The watchdog gets the
    variant's ``START_ALLOWANCE``, unless ``stop_allowance`` is false its ``STOP_ALLOWANCE``, and with
    ``repeated_death`` its ``RETRY_ALLOWANCE`` (``limit``). ``kill_cue``: ``kill_worker_on_item`` waits until the
    run's event log also holds an event of that name (``"source_blocks"``: the items source has begun to block),
    so the kill lands in the setting the scenario is about, however the run's threads were scheduled.
    """

    variant: str
    job: dict[str, Any] | None = None
    items: int = 20
    items_raise_at: int | None = None
    items_spec: dict[str, Any] | None = None
    on_result: dict[str, Any] | None = None
    run_kwargs: dict[str, Any] | None = None
    resume_items: list[Any] | None = None
    run_cgroup: dict[str, int] | None = None
    watchdog: float = 30.0  # seconds; the variant's allowances come on top (``limit``)
    stop_allowance: bool = True
    repeated_death: bool = False
    fault_clock: str = "event"  # "event" | "deadline" | "task_deadline"
    kill_worker_on_item: Any = None  # SIGKILL the worker that stamps `start` for this item
    kill_cue: str | None = None  # ... once an event of this name is in the log too
    kill_runner_after_starts: int | None = None  # SIGKILL the runner once this many items started
    sigint_after_starts: int | None = None  # SIGINT the run's process group once this many items started
    orphan_watch: float = LEFTOVER_GRACE
    sample_memory: bool = False
    python: str | None = None  # the interpreter for the runner (default: this one)

    @property
    def limit(self) -> float:
        """The watchdog in seconds, the variant's allowances included."""
        return watchdog_for(self.variant, self.watchdog, stop_allowance=self.stop_allowance,
                            repeated_death=self.repeated_death)

    @property
    def injects(self) -> bool:
        """Does the harness inject a fault from outside (a kill or a SIGINT on cue)?"""
        return (self.kill_worker_on_item, self.kill_runner_after_starts, self.sigint_after_starts) != (None,) * 3

    def spec(self, events: str) -> dict[str, Any]:
        """The runner's whole input (one JSON argument)."""
        return {"variant": self.variant, "job": self.job or {}, "run_kwargs": self.run_kwargs or {},
                "items": {"count": self.items, "raise_at": self.items_raise_at, **(self.items_spec or {})},
                "on_result": self.on_result or {}, "events": events, "resume_items": self.resume_items,
                "run_cgroup": self.run_cgroup}


class _Observation:
    """One run watched from start to reaping, a TICK at a time: ``run`` starts the runner, then each look
    (``_track_processes``, ``_sample_memory``, ``_inject``, ``_at_deadline``) until one says the watch is over,
    then ``_reap`` and ``_outcome``. Times are ``time.monotonic()``; None where the event did not happen."""

    def __init__(self, w: Watch, tmp: str, stderr_file: IO[str]) -> None:
        self.w, self.tmp, self.stderr_file = w, tmp, stderr_file
        self.events = os.path.join(tmp, "events.jsonl")  # the run's event log (see .events)
        self.lines: list[str] = []  # the runner's stdout but its result line
        self.result_box: dict[str, Any] = {}
        self.fault_t: float | None = None  # the harness's own injection
        self.parent_killed_t: float | None = None
        self.exit_t: float | None = None  # the runner exited
        self.stop_t: float | None = None  # no process of the run left but the runner
        self.last_seen: float | None = None  # some process of the run seen alive
        self.orphans_gone_t: float | None = None
        self.hung = False
        self.left: list[str] | None = None
        self.peak_children = 0.0
        self.trace: list[tuple[float, float, float]] = []
        self.next_sample = 0.0
        self.injected = not w.injects
        self.deadline = 0.0  # moved by a window at a time while a run past its watchdog is busy (OVERTIME)
        self.window_start: tuple[float, dict[int, float]] | None = None  # (when, _demand_seconds then)
        self.evidence: dict[str, Any] | None = None

    def run(self) -> Outcome:
        self._start()
        try:
            while True:
                now = time.monotonic()
                if self._track_processes(now):
                    break
                self._sample_memory(now)
                if not self.injected and self.exit_t is None:
                    self._inject()
                if self._at_deadline(now):
                    break
                time.sleep(TICK)
        finally:
            self._reap()
        return self._outcome()

    def _start(self) -> None:
        # TMPDIR: whatever the run's processes put in the temporary folder (multiprocessing's pymp-* folders,
        # dask's scratch space) goes with the run's own folder, also when the harness had to SIGKILL them.
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1", TMPDIR=self.tmp)
        self.t0 = self.next_sample = time.monotonic()
        self.deadline = self.t0 + self.w.limit
        self.proc = subprocess.Popen([self.w.python or sys.executable, "-m", "experiments.lab.runner",
                                      json.dumps(self.w.spec(self.events))], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=self.stderr_file, text=True,
                                     start_new_session=True)
        self.pgid = self.proc.pid
        STARTED_GROUPS.add(self.pgid)
        self.group = GroupWatch(self.pgid, exclude=self.proc.pid)
        self.reader = threading.Thread(target=self._read_stdout, daemon=True, name="runner-stdout")
        self.reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(RESULT_TAG):
                self.result_box["t_seen"] = time.monotonic()
                self.result_box["result"] = json.loads(line[len(RESULT_TAG):])
            else:
                self.lines.append(line)

    def _track_processes(self, now: float) -> bool:
        """Who of the run is alive, whether the runner exited; True once the watch is over: every process gone
        after the runner, or some still there ``orphan_watch`` (at least LEFTOVER_GRACE) s after it (``left``)."""
        alive = self.group.any_alive()
        if alive:
            self.last_seen, self.stop_t = now, None
        elif self.stop_t is None and self.last_seen is not None:
            self.stop_t = now  # the run's processes just went from some to none
        if self.exit_t is None and self.proc.poll() is not None:
            self.exit_t = now
        if self.exit_t is None:
            return False
        if not alive:
            self.orphans_gone_t = now
            return True
        if now > self.exit_t + max(self.w.orphan_watch, LEFTOVER_GRACE):
            self.left = [describe(p) for p in self.group.members()] or None
            if self.left is None:  # the last of them went between the question and this scan
                self.orphans_gone_t = now
            return True
        return False

    def _sample_memory(self, now: float) -> None:
        if not self.w.sample_memory or now < self.next_sample or self.exit_t is not None:
            return
        self.next_sample = now + MEMORY_TICK
        try:
            sample = memory_profiler.memory_usage(proc=self.proc.pid, interval=0.001, multiprocess=True,
                                                  include_children=False)[0]
            self.peak_children = max(self.peak_children, sum(sample[1:]))
            self.trace.append((now - self.t0, sample[0], sum(sample[1:])))
        except (psutil.Error, IndexError):
            pass

    def _inject(self) -> None:
        """The fault from outside, once its cue is in the event log: at most once (``injected``)."""
        w, proc = self.w, self.proc
        events = read_events(self.events)
        starts = [e for e in events if e["ev"] == "start"]
        if w.kill_worker_on_item is not None:
            if w.kill_cue is not None and not any(e["ev"] == w.kill_cue for e in events):
                return
            for e in starts:
                if e["item"] == w.kill_worker_on_item:
                    t = time.monotonic()
                    try:
                        os.kill(e["pid"], signal.SIGKILL)  # the article's "kill from another shell"
                    except ProcessLookupError:
                        return
                    self.injected, self.fault_t = True, t
                    return
        elif w.kill_runner_after_starts is not None and len(starts) >= w.kill_runner_after_starts:
            self.injected = True
            self.fault_t = self.parent_killed_t = time.monotonic()
            proc.kill()  # the main process dies: OOM killer or kill -9 on the parent
        elif w.sigint_after_starts is not None and len(starts) >= w.sigint_after_starts:
            self.injected, self.fault_t = True, time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: SIGINT to the whole foreground group

    def _at_deadline(self, now: float) -> bool:
        """The watchdog: opens the evidence window EVIDENCE_WINDOW s before it; at it, a run with no result that
        is still busy gets one more window (up to OVERTIME); else the verdict, the leftovers and a stack dump.
        True once the watch is over."""
        if self.window_start is None and self.exit_t is None and now > self.deadline - EVIDENCE_WINDOW:
            self.window_start = (now, _demand_seconds(self.pgid))
        if now <= self.deadline:
            return False
        if self.exit_t is None:
            if "result" not in self.result_box and self.window_start is not None:
                cpu = _demand_seconds(self.pgid)
                self.evidence = hang_evidence(*self.window_start, cpu, read_events(self.events), now)
                self.evidence["overtime"] = round(now - self.t0 - self.w.limit, 2)
                self.evidence["states"] = _states(self.pgid)
                if self.evidence["verdict"] == "busy" and now - self.t0 < self.w.limit + OVERTIME:
                    # no evidence either way yet: watch one more window (see OVERTIME)
                    self.deadline, self.window_start = now + EVIDENCE_WINDOW, (now, cpu)
                    return False
            self.hung = "result" not in self.result_box
            self.left = [describe(p) for p in self.group.members()]
            self.proc.send_signal(signal.SIGUSR1)  # faulthandler: dump every thread's stack to stderr
            _await_stack_dump(self.proc, self.stderr_file)
        return True

    def _reap(self) -> None:
        """Kill every process of the run and wait (bounded) until each is gone."""
        kill_group(self.pgid)
        for p in group_members(self.pgid):  # what killpg missed (a process forked into the group as it ran)
            try:
                p.kill()
            except psutil.NoSuchProcess:  # it died between the listing and this kill (CI on 3.11 saw one)
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        # Until every killed process is really gone (bounded): one still dying could write into the run's
        # folder after it is removed (dask's scratch space) or keep its memory cgroup busy.
        deadline = time.monotonic() + REAP_LIMIT
        while (members := group_members(self.pgid)) and time.monotonic() < deadline:
            psutil.wait_procs(members, timeout=TICK)
        if not members:
            STARTED_GROUPS.discard(self.pgid)  # every process gone: the id may be any process's from now on
        self.reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        cgroup.remove_lab_cgroups()

    def _status(self, result: dict[str, Any] | None) -> str:
        if self.parent_killed_t is not None:
            return "parent_killed"
        if result is None and self.exit_t is not None:
            return "runner_died"
        if self.hung:
            return "hung" if self.evidence is None or self.evidence["verdict"] != "busy" else "over_watchdog"
        return (result or {}).get("outcome", "hung")

    def _fault_time(self, result: dict[str, Any] | None) -> float | None:
        run_kwargs = self.w.run_kwargs or {}
        if self.w.fault_clock == "deadline" and result is not None and run_kwargs.get("timeout"):
            # A variant whose timeout starts after its own start-up (dask's cluster) says so in its report.
            return ((result.get("report") or {}).get("clock_start") or result["t_start"]) + run_kwargs["timeout"]
        if (self.w.fault_clock == "task_deadline" and run_kwargs.get("task_timeout")
                and (first := _first_fault(self.events))):
            return first + run_kwargs["task_timeout"]
        return self.fault_t or _first_fault(self.events)

    def _outcome(self) -> Outcome:
        self.stderr_file.seek(0)
        result = self.result_box.get("result")
        fault_t = self._fault_time(result)
        stop_t = self.stop_t
        if self.left or self.hung or (self.exit_t is None and not self.parent_killed_t):
            stop_t = None  # the harness had to kill them: the run never stopped its processes by itself
        t_end, exit_t = (result or {}).get("t_end"), self.exit_t
        return Outcome(
            variant=self.w.variant, status=self._status(result), result=result, fault_t=fault_t,
            detect_latency=(t_end - fault_t) if (t_end and fault_t) else None,
            stop_latency=(stop_t - fault_t) if (stop_t and fault_t and stop_t > fault_t) else None,
            exit_latency=(exit_t - t_end) if (exit_t and t_end) else None,
            lingered=result is not None and exit_t is None,
            left_running=self.left or [],
            orphans_exit_latency=((self.orphans_gone_t - self.parent_killed_t)
                                  if (self.orphans_gone_t and self.parent_killed_t) else None),
            peak_children_mb=self.peak_children if self.w.sample_memory else None,
            memory_trace=self.trace, stdout="".join(self.lines), stderr=self.stderr_file.read(),
            events=read_events(self.events), wall=time.monotonic() - self.t0, runner_pid=self.proc.pid,
            runner_returncode=self.proc.returncode, hang_evidence=self.evidence,
        )


def _demand_seconds(pgid: int) -> dict[int, float]:
    """Seconds each live process of session ``pgid`` has run on a CPU or waited in a run queue for one, all its
    threads together (/proc/PID/task/*/schedstat), by pid. The wait counts: on a loaded machine a run that is
    starting or computing gets a fraction of a core and waits for the rest; CPU time alone read it as idle."""
    out = {}
    for pid in _scan(pgid):
        total = 0.0
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:  # gone meanwhile
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    on_cpu, waited = f.read().split()[:2]
            except (OSError, ValueError):  # the thread ended meanwhile
                continue
            total += (int(on_cpu) + int(waited)) / 1e9
        out[pid] = total
    return out


def _states(pgid: int) -> dict[str, int]:
    """How many processes of session ``pgid`` are in each scheduler state now ("sleeping", "running", "disk-sleep",
    "stopped": the supervisor's group keepers): with the demand and the stack dump, what the run was doing when cut."""
    states: dict[str, int] = {}
    for pid in _scan(pgid):
        try:
            status = psutil.Process(pid).status()
        except psutil.Error:  # gone meanwhile
            continue
        states[status] = states.get(status, 0) + 1
    return states


def hang_evidence(since: float, before: dict[int, float], after: dict[int, float], events: list[dict[str, Any]],
                  now: float) -> dict[str, Any]:
    """What the run's processes did between ``since`` and ``now`` (seconds of CPU used or waited for, per pid, at
    each end: ``_demand_seconds``; the run's events): the verdict "loop", "idle" or "busy" (see EVIDENCE_WINDOW) and
    the figures behind it (``demand_cores``: all processes together; ``busiest``: the three that wanted most). The
    processes that stamped a fault are left out: a job spinning in its hang is the fault, not the design working."""
    window = max(now - since, TICK)
    fault_pids = {e["pid"] for e in events if e["ev"] == "fault"}
    fault_items = {repr(e["item"]) for e in events if e["ev"] == "fault"}
    used = {pid: cpu - before.get(pid, 0.0) for pid, cpu in after.items() if pid not in fault_pids}
    cores = sum(used.values()) / window
    most = max(used.values(), default=0.0) / window
    recent = sum(e["t"] >= since for e in events)
    starts = max((sum(e["ev"] == "start" and repr(e["item"]) == item for e in events) for item in fault_items),
                 default=0)
    verdict = "loop" if starts > LOOP_STARTS else "idle" if most < BUSY_BELOW and not recent else "busy"
    busiest = sorted(used.items(), key=lambda kv: -kv[1])[:3]
    return {"verdict": verdict, "window": round(window, 2), "demand_cores": round(cores, 3), "events": recent,
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
