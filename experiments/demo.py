"""Run the article's pipeline with the supervisor against a local API, hit a fault, resume, print what happened.

    python -m experiments.demo            # 40 items; item 7 answers HTTP 500, item 13 never answers,
                                          # item 21 is too large to parse in a 128 MiB worker (real OOM kill)
    python -m experiments.demo --items 200 --workers 2

Everything is real: an HTTP server on 127.0.0.1, worker processes that fetch and parse, a SQLite file
written by ``on_result`` in the main process. The first run uses ``on_error="continue"``: failures are
recorded and the rest goes on; a second run retries exactly ``report.unfinished()`` against a healthy API.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from experiments.lab import cgroup, pipeline
from variants import Fate, RunFailed
from variants.supervisor import run


def main(argv: list[str] | None = None) -> int:
    try:
        return _demo(argv)
    finally:
        # Every worker parsed inside a lab memory cgroup of its own (see FetchAndParse); the workers are
        # gone by now, their cgroups must go too: nothing outlives the demo.
        cgroup.remove_lab_cgroups()


def _demo(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--db", default=None, help="SQLite file (default: a temporary one)")
    args = ap.parse_args(argv)
    oom, why = cgroup.availability()
    faults = {7: "500", 13: "never"} | ({21: "huge"} if oom else {})
    if not oom:
        print(f"(no memory cgroup here, so no OOM-kill fault: {why})")
    with tempfile.TemporaryDirectory() as tmp:
        db_path = args.db or str(Path(tmp) / "results.db")
        db = pipeline.open_db(db_path)
        limit = pipeline.HUGE_LIMIT_MB if oom else None  # every worker parses inside a 128 MiB memory cgroup

        def save(item, result):
            pipeline.save(db, item, result)

        with pipeline.ApiServer(faults) as api:
            job = pipeline.FetchAndParse(base_url=api.url, limit_mb=limit)
            print(f"API on {api.url}; faults: " + ", ".join(f"item {i}: {m}" for i, m in faults.items()))
            print(f"run 1: {args.items} items, {args.workers} workers, task_timeout=2 s, on_error='continue'")
            t = time.monotonic()
            try:
                report = run(job, range(args.items), workers=args.workers, on_result=save, task_timeout=2.0,
                             on_error="continue")
            except RunFailed as e:
                report = e.report
                print(f"  RunFailed after {time.monotonic() - t:.2f} s: {e}")
            for f in report.fates:
                if f.fate is Fate.FAILED:
                    print(f"  item {f.item}: {f.kind}: {f.message}")
            for note in report.notes:
                print(f"  note: {note}")
            print(f"  done {report.count(Fate.DONE)}, failed {report.count(Fate.FAILED)}, "
                  f"never run {report.count(Fate.NEVER_RUN)}; rows in the database: {len(pipeline.rows(db_path))}")
        todo = report.unfinished()
        with pipeline.ApiServer() as api:
            job = pipeline.FetchAndParse(base_url=api.url, limit_mb=limit)
            print(f"run 2: the API is healthy again; resuming exactly the {len(todo)} unfinished item(s): {todo}")
            report2 = run(job, todo, workers=args.workers, on_result=save, task_timeout=2.0)
            print(f"  done {report2.count(Fate.DONE)} in {report2.elapsed:.2f} s")
        saved = pipeline.rows(db_path)
        ok = saved == list(range(args.items))
        print(f"database: {len(saved)} rows, {len(set(saved))} distinct items, integrity {pipeline.integrity(db_path)}: "
              + ("every item exactly once" if ok else "MISMATCH"))
        db.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
