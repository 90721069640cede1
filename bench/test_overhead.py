"""Healthy-path cost: each variant against a plain ``ProcessPoolExecutor.submit`` + ``add_done_callback`` loop.

Also timed, as the reference the throughput sweep draws (bench/throughput.py): ``ProcessPoolExecutor.map``
with ``chunksize=256``, the fastest plain way to run many tiny tasks, knowing nothing of faults.

Run by ``bench/run.py`` (which reads the JSON back for its chart), or by hand:

    python -m pytest bench/test_overhead.py --benchmark-enable

``BENCH_TASKS`` sets the number of tiny tasks (default 10,000), ``BENCH_ROUNDS`` the rounds (default 3).
Each round includes starting the workers, as a real run does; per-task overhead is the round's time
divided by the task count. Every design first runs one unrecorded warm-up round (imports, page cache) on
a tenth of the tasks; a design whose warm-up, scaled to every task, took over ``SLOW_ROUND`` s is then
timed for one round only, and one over ``TENTH_ROUND`` s for one round of a tenth of the tasks (its record
says how many tasks it ran: read it per task, as the chart does).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time

import pytest

from variants import VARIANTS

TASKS = int(os.environ.get("BENCH_TASKS", "10000"))
WORKERS = 2  # the machine's core count: more workers only add contention on the healthy path
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# A design this slow per round is timed once: the article's design (12.2 s for 10,000 tasks, a8dcd0e), whose
# spread over rounds is small against its 6x difference from the baseline. Dask's spread over 3 rounds was
# under 10% too (34.3-37.3 s measured) when it was timed on every task.
SLOW_ROUND = 10.0
# The warm-up runs this fraction of the tasks: enough for imports and the page cache, and a tenth of the
# cost for the slow designs (a full warm-up was 40 s of Dask, 9 s of the article's design, per bench run).
WARMUP_FRACTION = 10
# A design this slow per round is timed on a tenth of the tasks, once: Dask, 55 s for 10,000 tasks in the full
# bench of ffc5682 (5.5 ms a task, its scheduler's per-task cost), a minute of the bench's 27. On 1,000 tasks
# it took 5.4 s (a8dcd0e): its start-up, ~1 s, is spread over a tenth of the tasks, so its per-task figure is
# up to ~20% high (5.4 against 5.5 ms measured: within its spread), against a 26x difference from the baseline.
TENTH_ROUND = 30.0


def _plan(go) -> tuple[int, int]:
    """Run the warm-up round (not recorded) on a tenth of the tasks; how many rounds to time, and on how many
    tasks."""
    tenth = max(1, TASKS // WARMUP_FRACTION)
    t = time.perf_counter()
    go(range(tenth))
    predicted = (time.perf_counter() - t) * WARMUP_FRACTION
    if predicted > TENTH_ROUND:
        return 1, tenth
    return (1 if predicted > SLOW_ROUND else ROUNDS), TASKS


def plain_executor(job, items, workers):
    """The baseline: no bookkeeping at all beyond what the executor does."""
    done = []
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        for item in items:
            ex.submit(job, item).add_done_callback(lambda f: done.append(f.result()))
    assert len(done) == len(items)


def reference_map(job, items, workers):
    """The throughput reference: chunked map, no per-task bookkeeping in the parent at all."""
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        assert sum(1 for _ in ex.map(job, items, chunksize=256)) == len(items)


def _variant_run(name):
    def go(items=range(TASKS)):
        calls = []
        VARIANTS[name].run(abs, items, workers=WORKERS, on_result=lambda i, r: calls.append(r))
        assert len(calls) == len(items)
    return go


@pytest.mark.timeout(600)
def test_baseline_plain_executor(benchmark):
    rounds, tasks = _plan(lambda items: plain_executor(abs, items, WORKERS))
    benchmark.extra_info.update(variant="plain_executor", tasks=tasks, workers=WORKERS)
    benchmark.pedantic(plain_executor, args=(abs, range(tasks), WORKERS), rounds=rounds, iterations=1)


@pytest.mark.timeout(600)
def test_reference_chunked_map(benchmark):
    rounds, tasks = _plan(lambda items: reference_map(abs, items, WORKERS))
    benchmark.extra_info.update(variant="reference_map", tasks=tasks, workers=WORKERS)
    benchmark.pedantic(reference_map, args=(abs, range(tasks), WORKERS), rounds=rounds, iterations=1)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", [n for n, v in VARIANTS.items() if v.available()[0]])
def test_variant(benchmark, name):
    go = _variant_run(name)
    rounds, tasks = _plan(go)
    benchmark.extra_info.update(variant=name, tasks=tasks, workers=WORKERS)
    benchmark.pedantic(go, args=(range(tasks),), rounds=rounds, iterations=1)
