"""Serialization faults, in the style of CPython's test_concurrent_futures/test_deadlock.py: effect-at-phase.

Each injector is an ``int`` subclass (so jobs compare it with ``at`` and the event log writes it as a
number) that misbehaves when pickled or unpickled. Used as an *item* (pickled by the parent, unpickled by
the worker) or returned as a *result* (pickled by the worker, unpickled by the parent). Each stamps the
fault time into the events file just before it misbehaves, from whichever process it is in.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from .events import stamp


class _Injector(int):
    events: str | None = None

    def __new__(cls, value: int, events: str | None = None) -> _Injector:
        self = super().__new__(cls, value)
        self.events = events
        return self


class ErrorAtPickle(_Injector):
    """Raise when pickled."""

    def __reduce__(self) -> Any:
        stamp(self.events, "fault", int(self), where="pickle")
        raise TypeError(f"ErrorAtPickle({int(self)}) refuses to be pickled")


def _error_at_unpickle(value: int, events: str | None) -> Any:
    stamp(events, "fault", value, where="unpickle")
    raise ValueError(f"ErrorAtUnpickle({value}) refuses to be unpickled")


class ErrorAtUnpickle(_Injector):
    """Pickle fine; raise when unpickled."""

    def __reduce__(self) -> Any:
        return _error_at_unpickle, (int(self), self.events)


def _crash_at_unpickle(value: int, events: str | None) -> Any:
    stamp(events, "fault", value, where="unpickle")
    os.kill(os.getpid(), signal.SIGKILL)


class CrashAtUnpickle(_Injector):
    """Pickle fine; the process that unpickles it is SIGKILLed."""

    def __reduce__(self) -> Any:
        return _crash_at_unpickle, (int(self), self.events)


class CrashAtPickle(_Injector):
    """The process that pickles it is SIGKILLed."""

    def __reduce__(self) -> Any:
        stamp(self.events, "fault", int(self), where="pickle")
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable: SIGKILL cannot be caught")


class UnpicklableError(Exception):
    """An exception that cannot be pickled: it holds a lock (as many exceptions from I/O libraries do)."""

    def __init__(self, item: int) -> None:
        super().__init__(f"job failed on item {item} with an exception holding a lock")
        self.lock = threading.Lock()

    def __reduce__(self) -> Any:
        return UnpicklableError, (self.lock,)  # pickling the lock raises TypeError


INJECTORS = {cls.__name__: cls for cls in (ErrorAtPickle, ErrorAtUnpickle, CrashAtUnpickle, CrashAtPickle)}


def make(name: str, value: int, events: str | None) -> _Injector:
    return INJECTORS[name](value, events)
