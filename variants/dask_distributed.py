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
from .contract import RunFailed, RunReport, _Rest, check_arguments, no_task_timeout, unsupported

NAME = "dask_distributed"
CLOSE_LIMIT = 10  # seconds for the cluster to close; every wait has a limit
CONNECT_LIMIT = "10s"
# The LocalCluster's per-worker limit when the caller sets none (the one this variant always used). The
# nanny acts on the worker's process memory (RSS), checked every distributed.worker.memory.monitor-interval
# (100 ms): new tasks pause at 0.8 of the limit, the worker is restarted at 0.95
# (distributed.worker.memory.pause / .terminate).
DEFAULT_MEMORY_LIMIT = "2GiB"
PLUGIN_NAME = "variants.dask_distributed.initializer"  # the WorkerPlugin that runs ``initializer``


def classify(e: BaseException) -> Classified:
    from distributed import KilledWorker

    if isinstance(e, KilledWorker):
        return "worker_died", None, True  # the task itself was on every worker that died
    return "worker_error", None, True


def run(job: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 4,
        on_result: Callable[[Any, Any], Any] | None = None, timeout: float | None = None,
        task_timeout: float | None = None, max_in_flight: int | None = None, address: str | None = None,
        memory_limit: int | str | None = None, initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (), max_tasks_per_worker: int | None = None) -> RunReport:
    """``address``: a running scheduler (``tcp://host:8786``); default ``$DASK_SCHEDULER_ADDRESS``, else a
    LocalCluster of ``workers`` processes.

    - ``memory_limit``: bytes (or a Dask size string) per LocalCluster worker; ``None``:
      ``DEFAULT_MEMORY_LIMIT``. Enforced by the worker's nanny, which polls the worker's RSS every 100 ms
      and restarts it past 0.95 of the limit; its task is re-run elsewhere, and a task that kills
      ``distributed.scheduler.allowed-failures`` + 1 (4) workers fails with KilledWorker. A real cluster's
      workers have their own limit (``dask worker --memory-limit``): ``memory_limit`` with ``address``
      raises NotImplementedError.
    - ``initializer(*initargs)``: a ``WorkerPlugin`` whose ``setup`` calls it on every worker, restarted
      ones included. ``setup`` runs on the worker's event-loop thread, not on the thread that runs tasks:
      a resource bound to its creating thread (a sqlite3 connection) cannot be used by the job. One that
      raises fails ``register_plugin`` (raised here as worker_error, with its traceback as cause).
    - ``max_tasks_per_worker``: Dask recycles workers by age (``distributed.worker.lifetime.duration``),
      never by task count. NotImplementedError.

    On a real cluster the scheduler and every worker unpickle ``job``, so each must import its module
    (installed, or on ``PYTHONPATH``): see experiments/test_dask_cluster.py for what happens otherwise."""
    check_arguments(NAME, job, items, workers, on_result, timeout, task_timeout)
    no_task_timeout(NAME, task_timeout)
    unsupported(NAME, "max_tasks_per_worker", max_tasks_per_worker,
                "Dask retires workers by age (distributed.worker.lifetime.duration), never after N tasks")
    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if memory_limit is not None and address is not None:
        raise NotImplementedError(f"{NAME} cannot set memory_limit on a running cluster: its workers have their "
                                  "own (dask worker --memory-limit)")
    import distributed
    from distributed import Client, LocalCluster

    started = time.monotonic()
    cluster = None
    if address is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               memory_limit=DEFAULT_MEMORY_LIMIT if memory_limit is None else memory_limit,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        client = Client(address, timeout=CONNECT_LIMIT)
    submitted: list[Any] = []
    plugin = None if initializer is None else _initializer_plugin(initializer, initargs)

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
        if plugin is not None and cluster is None:  # a real cluster keeps plugins for its future workers
            try:
                client.unregister_worker_plugin(PLUGIN_NAME)
            except Exception:  # noqa: BLE001  (best effort: closing must go on)
                pass
        client.close(timeout=CLOSE_LIMIT)
        if cluster is not None:
            cluster.close(timeout=CLOSE_LIMIT)

    def stop() -> None:
        client.cancel([f for f in submitted if not f.done()])
        close()

    if plugin is not None:
        try:
            client.register_plugin(plugin, name=PLUGIN_NAME)  # runs setup() on every worker now, and on later ones
        except Exception as e:
            close()
            report = RunReport(NAME, fates=[])
            report.set_rest(_Rest(iter(items)))  # nothing was pulled: what is left is every item
            raise RunFailed(f"worker_error: the initializer raised in a worker (WorkerPlugin.setup): "
                            f"{type(e).__name__}: {e}", kind="worker_error", report=report) from e

    # `timeout` counts from here, once the cluster is up: LocalCluster's start-up (seconds, see the
    # report's notes) is not held against the run, so the matrix compares fault handling, not start-up.
    up = time.monotonic() - started
    report = drive(NAME, submit, items, on_result, timeout, max_in_flight or 2 * workers, classify, stop, close,
                   wait=wait, get=get)
    report.notes.append(f"cluster start-up took {up:.2f} s (not counted in timeout)")
    return report


def _initializer_plugin(initializer: Callable[..., Any], initargs: tuple[Any, ...]) -> Any:
    """A WorkerPlugin calling ``initializer(*initargs)`` in ``setup`` (defined here: distributed is optional)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class RunInitializer(WorkerPlugin):
        def setup(self, worker: Any) -> None:
            initializer(*initargs)

    return RunInitializer()
