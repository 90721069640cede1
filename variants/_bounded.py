"""Bounded submission over ``concurrent.futures`` futures: the loop a careful user writes around a pool library.

Not a design of its own. The peers (pebble, loky) decide what a fault looks like; ``classify`` maps
their exceptions onto ``RunFailed`` honestly (culprit and exit code only where the library says), and
this loop adds only what any caller can write: lazy intake (at most ``max_in_flight`` futures), each
result dropped once ``on_result`` returned, a whole-run deadline, and the fate of each unfinished item
(a finished one is counted, not kept), with what is left reachable from any exception.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable, Iterable
from typing import Any

from .contract import Clock, Fate, RunFailed, RunReport, _Rest, attach_report

# (kind, exit code or None, whether the failed future's own item is the culprit) for a worker-side exception
Classified = tuple[str, int | None, bool]


class DeadlinePassed(Exception):
    """Raised by a ``get`` that gave up fetching a finished task's result because the run's deadline passed."""


def drive(name: str, submit: Callable[[Any], cf.Future], items: Iterable[Any],
          on_result: Callable[[Any, Any], Any] | None, timeout: float | None, max_in_flight: int,
          classify: Callable[[BaseException], Classified], stop: Callable[[], None],
          close: Callable[[], None], wait: Callable[..., Any] | None = None,
          get: Callable[[Any, float | None], Any] | None = None) -> RunReport:
    """Run every item; on the first fault call ``stop()`` (kill the workers) and raise ``RunFailed``.

    ``wait(futures, timeout) -> (done, not_done)`` defaults to ``concurrent.futures.wait`` (first completed);
    ``get(future, remaining)`` to ``future.result()`` (a finished local future has its result in memory).
    """
    get = get or (lambda f, remaining: f.result())
    wait = wait or (lambda fs, timeout: cf.wait(fs, timeout=timeout, return_when=cf.FIRST_COMPLETED))
    clock = Clock()  # the whole-run timeout counts from here: after the pool (or cluster) is up
    report = RunReport(name, fates=[], clock_start=clock.start)
    pending: dict[Any, int] = {}  # future -> the item's position in the report (pull order)
    it = iter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < max_in_flight:
                try:
                    item = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pos = report.track(item)  # before submit(): an item the pool refuses stays in remaining()
                try:
                    future = submit(item)
                except Exception as e:
                    # A pool that broke between two results refuses the next item (loky's submit() raises the
                    # TerminatedWorkerError that broke it): the same fault, seen here first. The refused item
                    # never ran, so it is never the culprit. Anything else (a closed pool) goes up as it is.
                    kind, exitcode, _ = classify(e)
                    if kind != "worker_died":
                        raise
                    raise RunFailed(f"{kind}: {type(e).__name__}: {e}", kind=kind, exitcode=exitcode,
                                    report=report) from e
                pending[future] = pos
            if not pending:
                break
            remaining = None if timeout is None else clock.start + timeout - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise RunFailed(f"timeout: the run exceeded its timeout of {timeout} s", kind="timeout",
                                report=report)
            done, _ = wait(list(pending), remaining)
            for f in done:
                pos = pending.pop(f)
                fate = report.fate(pos)
                try:
                    result = get(f, None if timeout is None else clock.start + timeout - time.monotonic())
                except DeadlinePassed as e:
                    raise RunFailed(f"timeout: the run exceeded its timeout of {timeout} s while fetching a "
                                    "result", kind="timeout", report=report) from e
                except Exception as e:
                    kind, exitcode, culprit = classify(e)
                    if culprit:
                        fate.fate, fate.kind, fate.message, fate.exitcode = Fate.FAILED, kind, str(e), exitcode
                    raise RunFailed(f"{kind}: {type(e).__name__}: {e}" + (f" (item {fate.item!r})" if culprit else ""),
                                    kind=kind, item=fate.item if culprit else None, exitcode=exitcode,
                                    report=report) from e
                try:
                    if on_result is not None:
                        on_result(fate.item, result)
                except Exception as e:
                    fate.fate, fate.kind, fate.message = Fate.FAILED, "callback_error", str(e)
                    raise RunFailed(f"callback_error: on_result raised {type(e).__name__}: {e} (item {fate.item!r})",
                                    kind="callback_error", item=fate.item, report=report) from e
                del result
                report.done(pos)  # counted, not kept: the report grows with what is unfinished only
                report.completed += 1
    except BaseException as e:
        attach_report(e, report)  # the items' own error and Ctrl-C carry the report too
        stop()
        raise
    else:
        close()
    finally:
        report.set_rest(_Rest(it))  # remaining(): the unfinished items, then the ones never pulled
        report.elapsed = clock.elapsed()
    return report
