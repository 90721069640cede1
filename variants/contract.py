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

import enum
import math
import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: The five ways a run can fail, as ``RunFailed.kind``.
KINDS = ("worker_error", "worker_died", "callback_error", "timeout", "task_timeout")


class Fate(enum.StrEnum):
    DONE = "done"  # the worker returned and on_result returned
    FAILED = "failed"  # the item is the culprit of a fault (see ItemFate.kind)
    NEVER_RUN = "never_run"  # pulled from items but never finished: safe to resubmit


@dataclass(slots=True)  # one per item pulled: slots keep a run of millions of items small
class ItemFate:
    item: Any
    fate: Fate
    kind: str | None = None
    message: str | None = None
    exitcode: int | None = None
    attempts: int = 0  # times the item was sent to a worker (> 1 after retries)


@dataclass
class RunReport:
    """What a run did. ``fates`` is ``None`` for variants that do not track each item."""

    variant: str
    completed: int = 0  # tasks whose on_result returned (or that succeeded, with no on_result)
    elapsed: float = 0.0  # seconds from the start of run() to its return or raise
    fates: list[ItemFate] | None = None
    notes: list[str] = field(default_factory=list)  # what the variant did on the way (retries, respawns)
    clock_start: float | None = None  # monotonic time the run's timeout started counting, if not run()'s start

    def unfinished(self) -> list[Any]:
        """The items to resubmit to finish the job: every item not DONE, in submission order."""
        if self.fates is None:
            raise ValueError(f"{self.variant} does not track item fates; it cannot say what to resume")
        return [f.item for f in self.fates if f.fate is not Fate.DONE]

    def count(self, fate: Fate) -> int:
        return 0 if self.fates is None else sum(f.fate is fate for f in self.fates)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"variant": self.variant, "completed": self.completed,
                             "elapsed": self.elapsed, "notes": list(self.notes), "clock_start": self.clock_start}
        if self.fates is not None:
            d["fates"] = {str(f): self.count(f) for f in Fate}
            d["failed"] = [{"item": repr(f.item), "kind": f.kind, "exitcode": f.exitcode}
                           for f in self.fates if f.fate is Fate.FAILED]
        return d


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


def no_task_timeout(variant: str, task_timeout: float | None) -> None:
    """For designs without per-task limits: say so instead of silently ignoring the argument."""
    if task_timeout is not None:
        raise NotImplementedError(f"{variant} cannot enforce task_timeout: its design has no per-task limit")


class Clock:
    """``time.monotonic()`` since the start of a run: the same clock the lab stamps faults with."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start
