"""Healthy-path cost: each variant against a plain ``ProcessPoolExecutor.submit`` + ``add_done_callback`` loop.

Also timed, as the reference the throughput sweep draws (bench/throughput.py): ``ProcessPoolExecutor.map``
with ``chunksize=256``, the fastest plain way to run many tiny tasks, knowing nothing of faults.

Run by ``bench/run.py`` (which reads the JSON back for its chart), or by hand:

    python -m pytest bench/test_overhead.py --benchmark-enable

``BENCH_TASKS`` sets the number of tiny tasks (default 10,000), ``BENCH_ROUNDS`` the rounds (default 3).
Each round includes starting the workers, as a real run does; per-task overhead is the round's time
divided by the task count. Every design first runs one unrecorded warm-up round (imports, page cache) on
a tenth of the tasks; a design whose warm-up, scaled to every task, took over ``SLOW_ROUND`` s is then
timed for one round only.
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
# A design this slow per round (dask: ~37 s for 10,000 tasks) is timed once: its spread over 3 rounds was
# under 10% (34.3-37.3 s measured) against a 50x difference from the baseline, so two more rounds would
# change no conclusion and cost over a minute each. The article's design is timed once too: its round ends at
# a 5 s poll of its monitor (9.3 s measured for 10,000 tasks), so even its tenth-size warm-up takes ~5 s.
SLOW_ROUND = 10.0
# The warm-up runs this fraction of the tasks: enough for imports and the page cache, and a tenth of the
# cost for the slow designs (a full warm-up was 40 s of Dask, 9 s of the article's design, per bench run).
WARMUP_FRACTION = 10


def _rounds(go) -> int:
    """Run the warm-up round (not recorded) on a tenth of the tasks; how many rounds to time."""
    warm = range(max(1, TASKS // WARMUP_FRACTION))
    t = time.perf_counter()
    go(warm)
    return 1 if (time.perf_counter() - t) * WARMUP_FRACTION > SLOW_ROUND else ROUNDS


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
    benchmark.extra_info.update(variant="plain_executor", tasks=TASKS, workers=WORKERS)
    rounds = _rounds(lambda items: plain_executor(abs, items, WORKERS))
    benchmark.pedantic(plain_executor, args=(abs, range(TASKS), WORKERS), rounds=rounds, iterations=1)


@pytest.mark.timeout(600)
def test_reference_chunked_map(benchmark):
    benchmark.extra_info.update(variant="reference_map", tasks=TASKS, workers=WORKERS)
    rounds = _rounds(lambda items: reference_map(abs, items, WORKERS))
    benchmark.pedantic(reference_map, args=(abs, range(TASKS), WORKERS), rounds=rounds, iterations=1)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", [n for n, v in VARIANTS.items() if v.available()[0]])
def test_variant(benchmark, name):
    benchmark.extra_info.update(variant=name, tasks=TASKS, workers=WORKERS)
    go = _variant_run(name)
    benchmark.pedantic(go, rounds=_rounds(go), iterations=1)
