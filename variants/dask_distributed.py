"""The scale-out path: a killed worker is restarted and its task re-run; a repeatable death ends as KilledWorker.

``distributed.LocalCluster`` (worker processes under a nanny, one thread each, a per-worker memory limit),
or a real cluster when ``address=`` (or ``$DASK_SCHEDULER_ADDRESS``) is given: the same ``run()`` pointed
at a scheduler instead of a local one. ``Client.submit`` with bounded in-flight submission (the loop in
``variants._bounded``); the whole-run timeout is the waiting API's timeout. Dask has no per-task
timeout: ``task_timeout`` raises NotImplementedError. Start method: spawn (distributed's default).

    main process                     scheduler (in-process here)        nanny processes -> worker processes
    bounded loop: client.submit ---> assigns tasks ------------------->  job(item)
      distributed.wait(FIRST_COMPLETED, deadline)                        worker dies: nanny restarts it,
      <- result / exception / KilledWorker <- task re-run elsewhere, up to
                                              distributed.scheduler.allowed-failures (3) times
    fault: cancel futures, close the client and the local cluster

Compared with: ``variants.supervisor`` (one machine) — this is for users who outgrow one machine.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from ._bounded import Classified, DeadlinePassed, drive
from .contract import RunReport, check_arguments, no_task_timeout

NAME = "dask_distributed"
CLOSE_LIMIT = 10  # seconds for the cluster to close; every wait has a limit
CONNECT_LIMIT = "10s"


def classify(e: BaseException) -> Classified:
    from distributed import KilledWorker

    if isinstance(e, KilledWorker):
        return "worker_died", None, True  # the task itself was on every worker that died
    return "worker_error", None, True


def run(job: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 4,
        on_result: Callable[[Any, Any], Any] | None = None, timeout: float | None = None,
        task_timeout: float | None = None, max_in_flight: int | None = None, address: str | None = None,
        memory_limit: str = "2GiB") -> RunReport:
    """``address``: a running scheduler (``tcp://host:8786``); default ``$DASK_SCHEDULER_ADDRESS``, else a
    LocalCluster of ``workers`` processes with ``memory_limit`` each (the nanny restarts a worker past it).

    On a real cluster the scheduler and every worker unpickle ``job``, so each must import its module
    (installed, or on ``PYTHONPATH``): see experiments/test_dask_cluster.py for what happens otherwise."""
    check_arguments(NAME, job, items, workers, on_result, timeout, task_timeout)
    no_task_timeout(NAME, task_timeout)
    import distributed
    from distributed import Client, LocalCluster

    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    started = time.monotonic()
    cluster = None
    if address is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        client = Client(address, timeout=CONNECT_LIMIT)
    submitted: list[Any] = []

    def submit(item: Any) -> Any:
        f = client.submit(job, item, pure=False)
        submitted.append(f)
        return f

    def wait(fs: list[Any], timeout: float | None) -> tuple[set[Any], set[Any]]:
        try:
            done, not_done = distributed.wait(fs, timeout=timeout, return_when="FIRST_COMPLETED")
        except (TimeoutError, distributed.TimeoutError):
            return set(), set(fs)
        return done, not_done

    def get(f: Any, remaining: float | None) -> Any:
        # A finished task's result still has to come over the network (and dask serializes a list
        # element by element): fetch it within the run's deadline, not after it.
        if remaining is not None and remaining <= 0:
            raise DeadlinePassed()
        try:
            return f.result(timeout=remaining)
        except (TimeoutError, distributed.TimeoutError) as e:
            if f.status == "finished":
                raise DeadlinePassed() from e
            raise

    def close() -> None:
        client.close(timeout=CLOSE_LIMIT)
        if cluster is not None:
            cluster.close(timeout=CLOSE_LIMIT)

    def stop() -> None:
        client.cancel([f for f in submitted if not f.done()])
        close()

    # `timeout` counts from here, once the cluster is up: LocalCluster's start-up (seconds, see the
    # report's notes) is not held against the run, so the matrix compares fault handling, not start-up.
    up = time.monotonic() - started
    report = drive(NAME, submit, items, on_result, timeout, max_in_flight or 2 * workers, classify, stop, close,
                   wait=wait, get=get)
    report.notes.append(f"cluster start-up took {up:.2f} s (not counted in timeout)")
    return report
