"""The one contract every variant keeps, so experiments, benchmarks and outside checks can call any of them.

    def run(job, items, *, workers=4, on_result=None, timeout=None, task_timeout=None) -> RunReport

- ``job``: a picklable module-level callable; each worker calls ``job(item)``.
- ``items``: any iterable, possibly a lazy generator of millions of items, possibly one that raises
  (that is how an experiment injects "an exception in the main process").
- ``on_result(item, result)``: called in the main process for every task that succeeded (the
  article's callback: "save to the database").
- ``timeout``: limit in seconds for the whole run. ``None``: no limit.
- ``task_timeout``: limit in seconds for one task, counted from when it starts in a worker. A variant
  that cannot enforce it raises ``NotImplementedError`` naming itself; it never ignores it.

It returns a :class:`RunReport` when every task succeeded and every callback returned, and raises
:class:`RunFailed` when it detects a fault, after it has stopped its workers. An exception raised by
``items`` or by the caller's own code propagates unchanged, after cleanup. A variant that cannot
detect a fault does what it really does (it hangs); the lab's harness observes and records that.
"""

from __future__ import annotations

import contextlib
import enum
import math
import pickle
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

#: The five ways a run can fail, as ``RunFailed.kind``.
KINDS = ("worker_error", "worker_died", "callback_error", "timeout", "task_timeout")


class Fate(enum.StrEnum):
    DONE = "done"  # the worker returned and on_result returned
    FAILED = "failed"  # the item is the culprit of a fault (see ItemFate.kind)
    NEVER_RUN = "never_run"  # pulled from items but never finished: safe to resubmit


@dataclass(slots=True)  # one per unfinished item: slots keep a run with many items in flight small
class ItemFate:
    item: Any
    fate: Fate
    kind: str | None = None
    message: str | None = None
    exitcode: int | None = None
    attempts: int = 0  # times the item was started in a worker (> 1 after retries)
    traceback: str | None = None  # the worker's own traceback, for a worker_error


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as text: chained as ``__cause__`` of a RunFailed.

    Printed under the RunFailed by Python's usual "The above exception was the direct cause" display, so
    an uncaught failure shows the file and line of the job that raised (as ``concurrent.futures`` does).
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb.rstrip()}\n"""'


class RunReport:
    """What a run did: counts of what is done, and the fate of every item that is not.

    Finished items are counted, not kept: a report holds one :class:`ItemFate` per item pulled from
    ``items`` and not done (failed, or never finished), so it costs memory in proportion to what is
    unfinished, never to what is done. ``fates`` is ``None`` for variants that do not track items.
    """

    def __init__(self, variant: str, completed: int = 0, elapsed: float = 0.0,
                 fates: list[ItemFate] | None = None, notes: list[str] | None = None,
                 clock_start: float | None = None) -> None:
        self.variant = variant
        self.completed = completed  # tasks whose on_result returned (or that succeeded, with no on_result)
        self.elapsed = elapsed  # seconds from the start of run() to its return or raise
        self.notes: list[str] = list(notes or [])  # what the variant did on the way (retries, respawns)
        self.clock_start = clock_start  # monotonic time the run's timeout started counting, if not run()'s start
        # position in pull order -> fate, for unfinished items only (a DONE fate given here is dropped)
        self._open: dict[int, ItemFate] | None = None if fates is None else {}
        self._pulled = 0
        self._rest: _Rest | None = None
        for f in fates or ():
            self._open[self.track(f.item)] = f  # type: ignore[index]
            if f.fate is Fate.DONE:
                self.done(self._pulled - 1)

    # -- bookkeeping, for the variants that track items ------------------------------------------
    def track(self, item: Any) -> int:
        """Record an item just pulled from ``items``; returns its position in pull order."""
        pos = self._pulled
        # The fate first, the count second: interrupted in between (Ctrl-C), the item is still held here.
        self._open[pos] = ItemFate(item, Fate.NEVER_RUN)  # type: ignore[index]
        self._pulled = pos + 1
        return pos

    def holds(self, pos: int) -> bool:
        """Whether the item at position ``pos`` was recorded here (done since, or still open)."""
        return pos < self._pulled or (self._open is not None and pos in self._open)

    def fate(self, pos: int) -> ItemFate:
        return self._open[pos]  # type: ignore[index]

    def done(self, pos: int) -> None:
        """The item at ``pos`` is done: forget it (the caller counts it in ``completed``)."""
        del self._open[pos]  # type: ignore[arg-type]

    def set_rest(self, rest: _Rest) -> None:
        """Where the items never pulled are: what :meth:`remaining` yields after the unfinished ones."""
        self._rest = rest

    # -- what a caller reads ---------------------------------------------------------------------
    @property
    def tracked(self) -> bool:
        return self._open is not None

    @property
    def fates(self) -> list[ItemFate] | None:
        """The fate of every unfinished item, in pull order; ``None`` when the variant does not track items."""
        return None if self._open is None else list(self._open.values())

    @property
    def pulled(self) -> int:
        """How many items were taken from ``items`` (done or not)."""
        return self._pulled

    @property
    def unfinished_count(self) -> int:
        """How many pulled items are not done (failed, or not finished yet): ``len(unfinished())``, without the list."""
        self._require_fates()
        return len(self._open)  # type: ignore[arg-type]

    def unfinished(self) -> list[Any]:
        """The items pulled from ``items`` and not done (failed or never finished), in pull order.

        Not all that is left after an abort: the items never pulled are still in ``items``. To finish
        the job, resubmit :meth:`remaining`.
        """
        self._require_fates()
        return [f.item for f in self._open.values()]  # type: ignore[union-attr]

    def remaining(self) -> Iterator[Any]:
        """Exactly what is left to finish the job: the unfinished items, then the items never pulled.

        Lazy: the never-pulled items come from the same ``items`` iterator, one at a time, when you ask
        (so a source of millions, or a paginated API, is not read ahead). Read it once: it continues
        the caller's iterator. Reachable from every exception that leaves ``run()`` as ``e.report``.
        """
        self._require_fates()
        yield from self.unfinished()
        if self._rest is not None:
            yield from self._rest.drain()

    def count(self, fate: Fate) -> int:
        if self._open is None:
            return 0
        if fate is Fate.DONE:
            return self.completed
        return sum(f.fate is fate for f in self._open.values())

    def _require_fates(self) -> None:
        if self._open is None:
            raise ValueError(f"{self.variant} does not track item fates; it cannot say what to resume")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"variant": self.variant, "completed": self.completed,
                             "elapsed": self.elapsed, "notes": list(self.notes), "clock_start": self.clock_start}
        if self._open is not None:
            d["fates"] = {str(f): self.count(f) for f in Fate}
            d["pulled"] = self._pulled
            d["failed"] = [{"item": repr(f.item), "kind": f.kind, "exitcode": f.exitcode}
                           for f in self._open.values() if f.fate is Fate.FAILED]
        return d

    def __getstate__(self) -> dict[str, Any]:  # a report crosses processes without the live iterator
        state = dict(self.__dict__)
        state["_rest"] = None
        return state

    def __repr__(self) -> str:
        return (f"RunReport({self.variant!r}, completed={self.completed}, elapsed={self.elapsed:.3f}, "
                f"unfinished={None if self._open is None else len(self._open)})")


class _Rest:
    """The part of ``items`` a run never pulled: items read ahead but not taken, then the iterator itself.

    ``lock`` is the one the run's reading thread holds around ``next()``: taking it before continuing the
    iterator means we never call ``next()`` while that thread is inside it (a generator refuses that).
    With ``recorded``, ``read_ahead`` holds (number, item) pairs and an item the report already holds
    (``recorded(number)``) is skipped: the run was interrupted after recording it and before dropping it.
    """

    def __init__(self, iterator: Iterator[Any], read_ahead: deque[Any] | None = None, lock: Any = None,
                 recorded: Callable[[int], bool] | None = None) -> None:
        self.iterator = iterator
        self.read_ahead = read_ahead if read_ahead is not None else deque()
        self.lock = lock
        self.recorded = recorded

    def drain(self) -> Iterator[Any]:
        while True:
            with self.lock if self.lock is not None else contextlib.nullcontext():
                if self.read_ahead:
                    item = self.read_ahead.popleft()
                    if self.recorded is not None:
                        number, item = item
                        if self.recorded(number):
                            continue
                else:
                    item = next(self.iterator, _END)
            if item is _END:
                return
            yield item


_END = object()


def attach_report(error: BaseException, report: RunReport) -> None:
    """Make the report reachable from an exception that is not a RunFailed (the items' own, Ctrl-C)."""
    if getattr(error, "report", None) is None:
        try:
            error.report = report  # type: ignore[attr-defined]
        except (AttributeError, TypeError):  # an exception type with __slots__: nothing to attach to
            pass


class RunFailed(Exception):
    """A fault was detected and the workers were stopped. ``str()`` is the human message."""

    def __init__(self, message: str, *, kind: str, item: Any = None, exitcode: int | None = None,
                 report: RunReport | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown RunFailed kind {kind!r}; expected one of {KINDS}")
        super().__init__(message)
        self.kind = kind
        self.item = item
        self.exitcode = exitcode
        self.report = report

    def __reduce__(self):  # keep kind/item/exitcode when a RunFailed crosses a process boundary
        return (_rebuild_run_failed, (str(self), self.kind, self.item, self.exitcode, self.report))


def _rebuild_run_failed(message, kind, item, exitcode, report):
    return RunFailed(message, kind=kind, item=item, exitcode=exitcode, report=report)


def check_arguments(variant: str, job: Callable[[Any], Any], items: Iterable[Any], workers: int,
                    on_result: Callable[[Any, Any], Any] | None, timeout: float | None,
                    task_timeout: float | None) -> None:
    """Reject bad input with a clear error before any process starts (bad input must never hang)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"{variant}: workers must be an int >= 1, got {workers!r}")
    for name, value in (("timeout", timeout), ("task_timeout", task_timeout)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or value <= 0:
            raise ValueError(f"{variant}: {name} must be None or a finite number of seconds > 0, "
                             f"got {value!r}")
    if not callable(job):
        raise TypeError(f"{variant}: job must be callable, got {job!r}")
    if on_result is not None and not callable(on_result):
        raise TypeError(f"{variant}: on_result must be callable or None, got {on_result!r}")
    if not isinstance(items, Iterable):
        raise TypeError(f"{variant}: items must be iterable, got {type(items).__name__}")
    try:
        # Workers receive the job by pickle; a lambda or a closure would otherwise fail inside a
        # feeder thread, and some designs never notice that (the task just never completes).
        pickle.dumps(job)
    except Exception as e:
        raise TypeError(f"{variant}: job must be picklable (a module-level function or class "
                        f"instance), {job!r} is not: {e}") from e


def unsupported(variant: str, option: str, value: Any, why: str) -> None:
    """An option the design has no equivalent for, when given (not None): NotImplementedError naming the
    design and the option, instead of silently ignoring it."""
    if value is not None:
        raise NotImplementedError(f"{variant} cannot enforce {option}: {why}")


def no_task_timeout(variant: str, task_timeout: float | None) -> None:
    """For designs without per-task limits: say so instead of silently ignoring the argument."""
    unsupported(variant, "task_timeout", task_timeout, "its design has no per-task limit")


class Clock:
    """``time.monotonic()`` since the start of a run: the same clock the lab stamps faults with."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start
