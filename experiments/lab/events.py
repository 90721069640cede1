"""The lab's event log: one JSON line per event, appended by jobs, the items iterator and ``on_result``.

A job stamps the fault time with ``time.monotonic()`` (system-wide on Linux, so the harness can compare
it with its own clock) just before it misbehaves; healthy items stamp ``start`` with the worker's pid,
which is how the harness finds a busy worker to kill from outside. Its own module so that every writer
(:mod:`.jobs`, :mod:`.pipeline`, :mod:`.runner`) and the reader (:mod:`.harness`) depend on it and not on
each other.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def stamp(events: str | None, ev: str, item: Any, **extra: Any) -> None:
    """Append one event line; O_APPEND writes below PIPE_BUF are atomic, so workers never interleave."""
    if events is None:
        return
    line = json.dumps({"ev": ev, "item": item, "pid": os.getpid(), "t": time.monotonic(), **extra})
    fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_events(events: str) -> list[dict[str, Any]]:
    """Every event so far, in the order written; none when the file does not exist yet."""
    try:
        with open(events) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
