"""Run one variant on one scenario in this fresh process and print one JSON result line.

    python -m experiments.lab.runner '<scenario json>'

The scenario says which variant, which job (see ``jobs.make_job``), how many items (and whether the
iterator raises), what ``on_result`` does (count, print ``len(result)`` as the article's callback,
raise at an item) and the keyword arguments for ``run()``. The result line starts with ``RESULT_TAG``
and carries: outcome, the exception's type/kind/item/exitcode/message, the report, monotonic stamps,
this process's peak RSS (kernel high-water mark) and the threads and children still alive when
``run()`` came back. Then the process exits *naturally*, so whatever the variant left behind (a
non-daemon thread, an executor's atexit join) shows up as the time this process takes to exit, which
the harness measures. ``SIGUSR1`` dumps every thread's stack (the harness asks before killing a hang).
"""

from __future__ import annotations

import faulthandler
import json
import os
import resource
import signal
import sys
import threading
import time
from typing import Any

RESULT_TAG = "LAB-RESULT "


def _jsonable(x: Any) -> Any:
    try:
        json.dumps(x)
        return x
    except TypeError:
        return repr(x)


def peak_rss_mb() -> float:
    """This process's own peak RSS (MiB): the kernel's high-water mark of its memory map.

    Not ``getrusage().ru_maxrss``: Linux carries that over from the process that forked us (the kernel
    keeps the larger of the old and new maps' marks across exec), so every run would report at least the
    harness's own size. ``VmHWM`` belongs to the map created at exec.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cmdline(p: Any) -> list[str]:
    try:
        return p.cmdline()
    except Exception:  # it exited meanwhile
        return []


def _enter_run_cgroup(spec: dict[str, Any] | None) -> bytearray | None:
    """The whole run in one memory cgroup: this process, before it starts any worker (workers inherit it),
    holding ``ballast_mb`` of resident memory of its own (a parent holding a large data set)."""
    if not spec:
        return None
    from experiments.lab import cgroup

    cgroup.enter_limited_cgroup(spec["limit_mb"] << 20)
    return bytearray(b"\x01") * (spec.get("ballast_mb", 0) << 20)  # written, so resident: charged to the cgroup


def main(spec: dict[str, Any]) -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Ctrl-C raises KeyboardInterrupt, as in a terminal, even when we were started by something that ignores
    # SIGINT (a shell's background job, nohup, some CI runners): that disposition is inherited across exec,
    # and Python installs its handler only when SIGINT is at its default. Measured: without this line, a
    # bench started with `nohup ... &` recorded every design as finishing normally through Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ballast = _enter_run_cgroup(spec.get("run_cgroup"))  # noqa: F841  (held, resident, until the runner exits)
    import psutil

    from experiments.lab import jobs
    from variants import VARIANTS

    events = spec.get("events")
    variant = VARIANTS[spec["variant"]]
    job = jobs.make_job({**spec.get("job", {}), "events": events})
    items_spec = spec.get("items", {})
    extra = {k: items_spec[k] for k in ("special_at", "special", "slow_from", "slow_seconds", "payload_bytes")
             if k in items_spec}
    items = jobs.RaisingItems(items_spec.get("count", 100), items_spec.get("raise_at"), events, **extra)
    cb = spec.get("on_result", {})
    calls: dict[Any, int] = {}
    results: set[int] = set()  # distinct int results (a job returning its pid: which workers ran)
    callback_fault: dict[str, float] = {}
    db = None
    if cb.get("db"):
        from experiments.lab import pipeline

        db = pipeline.open_db(cb["db"])  # the article's callback saves each result to a database

    def on_result(item: Any, result: Any) -> None:
        if cb.get("raise_at") is not None and (cb["raise_at"] == jobs.EVERY or item == cb["raise_at"]):
            callback_fault["t"] = time.monotonic()
            jobs.stamp(events, "fault", item, where="on_result")
            print(piyo)  # noqa: F821  (the article's undefined name, on purpose, before its print(len))
        if cb.get("print_len"):
            print(len(result), flush=True)  # the article's callback prints len(result)
        if db is not None:
            pipeline.save(db, item, result)
        key = int(item) if isinstance(item, int) else item  # not the item: a Payload carries megabytes
        calls[key] = calls.get(key, 0) + 1
        if isinstance(result, int):
            results.add(result)

    out: dict[str, Any] = {"variant": spec["variant"], "pid": os.getpid(), "python": sys.version.split()[0]}
    kwargs = dict(spec.get("run_kwargs", {}))
    if "initializer" in kwargs:  # named in the JSON spec: a function of the lab's jobs module
        kwargs["initializer"] = jobs.INITIALIZERS[kwargs["initializer"]]
        kwargs["initargs"] = tuple(kwargs.get("initargs", ()))
    if spec.get("resume_items") is not None:
        items = spec["resume_items"]
    # The design's module is imported before the clock starts: its first import (tens of ms for one that
    # pulls in multiprocessing's machinery) is the interpreter's, not the run's. Timed inside, it put every
    # timeout's fault time (t_start + timeout, for a design whose report has no clock_start) that much early.
    variant.load()
    out["t_start"] = time.monotonic()
    try:
        report = variant.run(job, items, on_result=on_result, **kwargs)
        out["t_end"] = time.monotonic()
        out["outcome"] = "returned"
    except BaseException as e:  # noqa: BLE001  (the lab records whatever comes out, KeyboardInterrupt included)
        out["t_end"] = time.monotonic()
        out["outcome"] = "raised"
        out["exc_type"] = type(e).__name__
        out["message"] = str(e)
        out["kind"] = getattr(e, "kind", None)
        out["item"] = _jsonable(getattr(e, "item", None))
        out["exitcode"] = getattr(e, "exitcode", None)
        report = getattr(e, "report", None)
    out["report"] = report.to_dict() if report is not None else None
    if report is not None and report.fates is not None:
        # What is left, as a caller resumes it (report.remaining()): the unfinished items, then the ones never
        # pulled; from a slow source, the unfinished ones only (draining it would time the source, not the variant).
        left = report.unfinished() if items_spec.get("slow_from") is not None else report.remaining()
        out["remaining"] = []
        try:
            for i in left:
                out["remaining"].append(_jsonable(i))
        except Exception as e:  # the rest of the source raises its own error when read (as it would for a caller)
            out["remaining_error"] = f"{type(e).__name__}: {e}"
        # A report keeps only what is unfinished; what is done is what on_result saw (it counts itself last).
        out["done_items"] = sorted(calls) if len(calls) <= 2000 else None
    out["callback_calls"] = len(calls)
    out["callback_items"] = sorted(calls) if len(calls) <= 2000 else None
    out["results"] = sorted(results)[:100]
    out["callback_repeats"] = sum(n > 1 for n in calls.values())
    out["t_callback_fault"] = callback_fault.get("t")
    out["peak_rss_mb"] = peak_rss_mb()
    out["threads_alive"] = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    # multiprocessing's resource_tracker belongs to this interpreter (one per process, exits with it),
    # not to the variant: listed apart so "children alive" means what the variant left running.
    kids = psutil.Process().children(recursive=True)
    tracker = [p.pid for p in kids if "resource_tracker" in " ".join(_cmdline(p))]
    out["children_alive"] = [p.pid for p in kids if p.pid not in tracker]
    out["tracker_alive"] = tracker
    print(RESULT_TAG + json.dumps(out, default=repr), flush=True)
    # Natural exit: non-daemon threads and atexit handlers of the variant run now, and the harness times it.


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
