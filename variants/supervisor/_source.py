"""The supervisor's item reader: ``items`` is read on a thread of its own, a bounded distance ahead.

A caller's ``items`` may block (a paginated API, a database cursor): read on the supervisor's loop, a
worker that dies meanwhile would be noticed only when the generator next yields. Here the loop never
calls ``next(items)``: this thread does, keeps at most ``capacity`` items read ahead, and writes one byte
to a pipe the loop waits on whenever it has something new to say (an item after none, the end, an error).

Each item read is numbered in read order, and the loop moves one item at a time from here to the report
(record, then drop from here): a ``KeyboardInterrupt`` lands between any two bytecodes of the loop, and wherever it
lands, an item is in the report, or here, or both, never in neither. ``report.remaining()`` skips the
ones in both by their number (see ``stop``).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ..contract import _Rest

# How long run() waits for this thread when it ends, unless it is inside the caller's next(items) (Python
# cannot interrupt that: it then exits when that call returns, and run() does not wait). Otherwise it is
# waiting for room and exits as soon as it is told to stop: 0.5 s only bounds a machine that is stalled.
JOIN_LIMIT = 0.5


class Source:
    def __init__(self, items: Iterable[Any], capacity: int) -> None:
        self.iterator = iter(items)  # TypeError for a non-iterable raises here, in the caller's thread
        self.capacity = capacity
        self.buffer: deque[tuple[int, Any]] = deque()  # (number, item) read ahead, not yet taken by the loop
        self.read = 0  # items read so far: the next one's number
        self.cond = threading.Condition()
        self.next_lock = threading.Lock()  # held around next(): see contract._Rest
        self.exhausted = False
        self.error: BaseException | None = None  # what next(items) raised: re-raised by the loop, unchanged
        self.stopped = False
        self.in_next = False  # the thread is inside next(items) now
        self.wake_r = self.wake_w = -1  # the wake-up pipe, made by start(): nothing here to close on a failure
        # Held around a write to the pipe and its close: a wake-up after close() (the thread was inside
        # next(items) when run() ended) must not write into a descriptor number reused meanwhile.
        self.wake_lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True, name="supervisor-items")

    def start(self) -> None:
        self.wake_r, self.wake_w = os.pipe()  # OSError (no file descriptor left) leaves nothing open
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        self.thread.start()

    def _read(self) -> None:
        while True:
            with self.cond:
                while len(self.buffer) >= self.capacity and not self.stopped:
                    self.cond.wait()  # hand_over(), set_capacity() and stop() notify; no limit needed: one always comes
                if self.stopped:
                    return
                room = self.capacity - len(self.buffer)
            # The room is filled in one run, the lock taken once for it (per item, the locks cost more than
            # next() itself on tiny items). Held until each item is in the buffer: _Rest never sees one
            # half-taken. Only this thread appends (deque.append is atomic) and stop() is checked per item.
            end = ""
            with self.next_lock:
                for _ in range(room):
                    if self.stopped:
                        return
                    if len(self.buffer) >= self.capacity:
                        break  # set_capacity() lowered it meanwhile: the bound holds at every item
                    self.in_next = True
                    try:
                        item = next(self.iterator)
                    except StopIteration:
                        end = "exhausted"
                        break
                    except BaseException as e:  # noqa: BLE001  (the caller's error, handed to the loop as is)
                        item, end = e, "error"
                        break
                    finally:
                        self.in_next = False
                    self.buffer.append((self.read, item))
                    self.read += 1
                    if len(self.buffer) <= 1:  # it was empty: the loop may be waiting for it
                        self._wake()
            if end:
                with self.cond:
                    if end == "exhausted":
                        self.exhausted = True
                    else:
                        self.error = item
                self._wake()
                return

    def _wake(self) -> None:
        with self.wake_lock:
            if self.wake_w < 0:
                return  # closed at stop: the loop is gone
            try:
                os.write(self.wake_w, b"x")
            except OSError:  # BlockingIOError: the pipe is full of unread wake-ups, the loop is already awake
                pass

    def hand_over(self, n: int, record: Callable[[Any], int]) -> list[int]:
        """Move up to ``n`` items read ahead to the report, oldest first; their positions there.

        One item at a time, ``record(item)`` before it leaves the buffer, so an interruption anywhere
        leaves it in one place or both (``stop`` tells ``remaining()`` which). No lock around it: only
        this thread removes items, at the left, and a deque's append and popleft are atomic; the lock is
        for the notify only (``_made_room``), which the reading thread's wait for room needs.
        """
        out: list[int] = []
        buffer = self.buffer
        while len(out) < n and buffer:
            number, item = buffer[0]
            pos = record(item)
            buffer.popleft()
            if pos != number:
                raise AssertionError(f"item {number} of the source recorded at {pos}")  # bookkeeping bug
            out.append(pos)
        if out:
            self._made_room()
        return out

    def _made_room(self) -> None:
        with self.cond:
            self.cond.notify()

    def clear_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def set_capacity(self, capacity: int) -> None:
        with self.cond:
            if capacity != self.capacity:
                self.capacity = capacity
                self.cond.notify()

    @property
    def idle_and_done(self) -> bool:
        """Nothing read ahead and nothing more will come."""
        return not self.buffer and (self.exhausted or self.error is not None)

    def stop(self, recorded: Callable[[int], bool]) -> _Rest:
        """Stop reading; what was read ahead and the rest of the iterator stay reachable (``report.remaining``).

        ``recorded(number)`` says whether the report already holds that item: a Ctrl-C between the loop's
        record and drop leaves it in both, and ``remaining()`` must yield it once.
        """
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        # Inside next(items) it cannot be stopped: it exits when that call returns. Never started (run()
        # failed before reading, e.g. a worker could not be spawned): nothing to wait for.
        if not self.in_next and self.thread.is_alive():
            self.thread.join(JOIN_LIMIT)
        self.close()
        return _Rest(self.iterator, self.buffer, self.next_lock, recorded)

    def close(self) -> None:
        """Close the wake-up pipe, if start() made it."""
        with self.wake_lock:
            fds, self.wake_r, self.wake_w = (self.wake_r, self.wake_w), -1, -1
            for fd in fds:
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
