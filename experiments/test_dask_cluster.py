"""The scale-out path for real: ``dask_distributed`` against a scheduler and two workers started by Dask's own CLI.

Everything else runs Dask on an in-process LocalCluster. Here, as a user outgrowing one machine would,
``dask scheduler`` and two ``dask worker`` processes (each under its nanny) run on loopback, and
``run(..., address=...)`` connects to them: a healthy run, a worker raising, a worker SIGKILLed from
outside (its nanny restarts it), a run timeout; and the first thing a new user hits: the scheduler and the
workers unpickle the job, so they must be able to import its module.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from experiments.expect import DASK_STOP, PROMPT, Expect, check
from experiments.lab.harness import ROOT, run_scenario

DASK = Path(sys.executable).with_name("dask")  # the CLI installed with distributed, next to this interpreter
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                       reason="needs distributed (pip install -e '.[dev]')"),
    pytest.mark.skipif(not DASK.exists(), reason=f"needs Dask's command-line program at {DASK}"),
]
# Each test starts its own cluster (a new scheduler and two nannies with their workers): ~2 s on an idle
# 2-core machine, up to ~10 s loaded; stopping it takes up to STOP_LIMIT. 120 s bounds a whole test.
UP_LIMIT = 30.0  # seconds for the scheduler file to appear and both workers to register
STOP_LIMIT = 15.0  # seconds for a SIGTERMed process to exit before its whole group is SIGKILLed
RUN_WATCHDOG = 30.0  # a run on two warm workers takes ~1-3 s; the harness adds dask's start-up allowance

JOB_MODULE = "cluster_userjob"  # a module only the client can import unless PYTHONPATH says where it is


class Cluster:
    """``dask scheduler`` + two ``dask worker`` processes on 127.0.0.1, each in its own process group."""

    def __init__(self, tmp: Path, pythonpath: str | None, worker_pythonpath: str | None = "same") -> None:
        def env(path: str | None) -> dict[str, str]:
            e = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            return e if path is None else {**e, "PYTHONPATH": path}

        worker_env = env(pythonpath if worker_pythonpath == "same" else worker_pythonpath)
        self.procs: list[subprocess.Popen] = []
        self.log = tmp / "cluster.log"
        scheduler_file = tmp / "scheduler.json"
        self._start([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", scheduler_file], env(pythonpath), tmp)
        deadline = time.monotonic() + UP_LIMIT
        while not scheduler_file.exists():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError(f"dask scheduler did not come up in {UP_LIMIT} s: {self.log_tail()}")
            time.sleep(0.1)  # polling a file another process writes: no event to wait on
        deadline = time.monotonic() + UP_LIMIT
        while True:  # the file is written before its contents are complete
            try:
                self.address = json.loads(scheduler_file.read_text())["address"]
                break
            except (ValueError, KeyError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for _ in range(2):
            self._start([DASK, "worker", self.address, "--nthreads", "1", "--host", "127.0.0.1",
                         "--no-dashboard", "--memory-limit", "1GiB", "--local-directory", tmp / "dask-scratch"],
                        worker_env, tmp)
        from distributed import Client

        with Client(self.address, timeout="10s") as c:
            c.wait_for_workers(2, timeout=UP_LIMIT)

    def _start(self, argv: list, env: dict[str, str], cwd: Path) -> None:
        with open(self.log, "a") as log:
            self.procs.append(subprocess.Popen([str(a) for a in argv], env=env, cwd=cwd, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))

    def worker_pids(self) -> set[int]:
        """The worker processes (the nannies' children), which run the tasks."""
        return {c.pid for p in self.procs[1:] for c in psutil.Process(p.pid).children(recursive=True)
                if "resource_tracker" not in " ".join(c.cmdline())}

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout="10s") as c:
            c.wait_for_workers(n, timeout=UP_LIMIT)

    def log_tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def stop(self) -> list[str]:
        """SIGTERM every group (workers first: a scheduler that goes first makes them wait to reconnect),
        SIGKILL what is still there after STOP_LIMIT; returns what had to be SIGKILLed."""
        killed = []
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(STOP_LIMIT)
            except subprocess.TimeoutExpired:
                killed.append(" ".join(p.args[1:3]))
            group = [q for q in psutil.process_iter() if _pgid(q.pid) == p.pid]
            for q in group:
                q.kill()
            psutil.wait_procs(group, timeout=STOP_LIMIT)
            if p.poll() is None:
                p.wait(STOP_LIMIT)
        return killed


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, pythonpath=str(ROOT))  # the lab's jobs live in this repository
    yield c
    assert not c.stop(), "the cluster did not stop on SIGTERM: " + c.log_tail()


def _run(cluster: Cluster, **scenario) -> object:
    scenario["run_kwargs"] = {"workers": 2, "address": cluster.address, **scenario.get("run_kwargs", {})}
    return run_scenario("dask_distributed", watchdog=RUN_WATCHDOG, **scenario)


@pytest.mark.timeout(120)
def test_healthy_run_on_a_real_cluster(cluster):
    o = _run(cluster, job={"type": "Workload", "n": 1000}, items=20)
    check(o, Expect("returned"))
    assert o.result["report"]["completed"] == 20


@pytest.mark.timeout(120)
def test_worker_raises_on_a_real_cluster(cluster):
    o = _run(cluster, job={"type": "RaiseAt", "at": 3, "n": 1000, "delay": 0.2}, items=12)
    check(o, Expect("raised", "worker_error", culprit=True, detect_max=DASK_STOP), fault_item=3)
    assert "hoge" in o.result["message"]


@pytest.mark.timeout(120)
def test_worker_sigkilled_is_restarted_by_its_nanny(cluster):
    before = cluster.worker_pids()
    o = _run(cluster, job={"type": "Workload", "n": 1000, "delay": 0.5}, items=8, kill_worker_on_item=2)
    check(o, Expect("returned", why="the nanny restarts the killed worker; the scheduler re-runs its task "
                                    "elsewhere; run() returns normally and nothing reports the fault"))
    starts = [e for e in o.events if e["ev"] == "start" and e["item"] == 2]
    assert len(starts) == 2 and starts[0]["pid"] != starts[1]["pid"], starts  # killed once, re-run elsewhere
    assert o.result["report"]["completed"] == 8
    cluster.wait_for_workers(2)
    after = cluster.worker_pids()
    assert starts[0]["pid"] in before and starts[0]["pid"] not in after, (before, after)
    assert len(after) == 2, "the nanny replaced the killed worker"


@pytest.mark.timeout(120)
def test_run_timeout_on_a_real_cluster(cluster):
    o = _run(cluster, job={"type": "SleepAt", "at": "every", "seconds": 2.0, "n": 1000}, items=10,
             run_kwargs={"timeout": 3.0}, fault_clock="deadline")
    check(o, Expect("raised", "timeout", detect_max=PROMPT,
                    why="the wait's own timeout; closing a client (not a cluster) is quick"))
    cluster.wait_for_workers(2)  # the cluster outlives the run: the cancelled tasks end on their own


def _user_job_module(tmp: Path) -> Path:
    src = tmp / "user_code"
    src.mkdir()
    (src / f"{JOB_MODULE}.py").write_text("def double(x):\n    return 2 * x\n")
    return src


@pytest.mark.timeout(120)
def test_a_job_module_the_scheduler_cannot_import_fails_every_task(tmp_path, monkeypatch):
    """As a new user finds out: the scheduler unpickles the task graph, so it must import the job's module."""
    from variants.contract import RunFailed
    from variants.dask_distributed import run

    src = _user_job_module(tmp_path)
    monkeypatch.syspath_prepend(str(src))  # the client can import it, as a user's own script can
    job = importlib.import_module(JOB_MODULE).double
    c = Cluster(tmp_path, pythonpath=None)
    try:
        with pytest.raises(RunFailed) as caught:
            run(job, range(4), address=c.address, timeout=RUN_WATCHDOG)
    finally:
        assert not c.stop(), c.log_tail()
    assert caught.value.kind == "worker_error"
    assert "Error during deserialization of the task graph" in str(caught.value)


@pytest.mark.timeout(120)
def test_a_job_module_only_the_workers_cannot_import_hangs_until_the_timeout(tmp_path, monkeypatch):
    """Worse: the scheduler can import it, the workers cannot. Each worker logs ModuleNotFoundError and the
    task never ends: no error reaches the client, only the run's timeout does (without one: forever)."""
    from variants.contract import RunFailed
    from variants.dask_distributed import run

    src = _user_job_module(tmp_path)
    monkeypatch.syspath_prepend(str(src))
    job = importlib.import_module(JOB_MODULE).double
    c = Cluster(tmp_path, pythonpath=str(src), worker_pythonpath=None)
    try:
        with pytest.raises(RunFailed) as caught:
            run(job, range(4), address=c.address, timeout=5.0)
    finally:
        assert not c.stop(), c.log_tail()
    assert caught.value.kind == "timeout"
    assert f"No module named '{JOB_MODULE}'" in c.log_tail() or f"No module named '{JOB_MODULE}'" in c.log.read_text()


@pytest.mark.timeout(120)
def test_with_pythonpath_on_every_process_the_same_job_runs(tmp_path, monkeypatch):
    from variants.dask_distributed import run

    src = _user_job_module(tmp_path)
    monkeypatch.syspath_prepend(str(src))
    job = importlib.import_module(JOB_MODULE).double
    c = Cluster(tmp_path, pythonpath=str(src))
    try:
        report = run(job, range(4), address=c.address, timeout=RUN_WATCHDOG)
    finally:
        assert not c.stop(), c.log_tail()
    assert report.completed == 4
