"""The main process's end of a worker's pipe, used without ever blocking the loop: reading (one read per wake-up,
whole messages out) and writing (``Outgoing``: as much as the pipe takes, the rest when it has room).

``Connection.recv`` reads a whole message once its first bytes are there: a worker stopped (SIGSTOP, a debugger,
a frozen container) or hung half-way through sending a large result would hold the supervisor's one thread in
that read, and no other fault, deadline or worker would be seen until it resumed. Here each wake-up that says the
pipe is readable does one ``os.read`` (which does not block then; into a large frame, up to BODY_READS while the
pipe has data) and keeps what is incomplete for the next.

The frames are ``multiprocessing.connection``'s own (a 4-byte big-endian length, or -1 and an 8-byte length),
so the worker writes with the plain ``Connection.send``/``send_bytes`` (or a frame's header and parts, with
``_worker.write_frame``), and the main process writes its batches the same way. A message is one pickled frame; a list of
answers whose results were too large to ride in it (an ``int`` stands at their place: their length) is followed by
one raw frame per such result, in order (``_worker._Outbox``). A large frame is read straight into a buffer of its
own size, so a result costs the main process its pickled size once, plus the unpickled result. That buffer is
kept for the next large frame (``_worker.fit``): fresh pages cost a page fault each, and faulting in every result's
pages took 3/4 of the main process's CPU at 8 MiB results (130-165 ms per 100 MB received, 35-48 ms reusing it).

The main process's end is non-blocking (``_core`` sets it): a batch of large items goes out as the worker reads
it, while the loop watches the other workers; a worker stopped or hung half-way through reading one holds only
its own bytes back, and is stopped by task_timeout like any worker that holds tasks and runs none.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections import deque
from typing import Any

from . import _worker

CHUNK = 256 << 10  # one read: a pipe's worth of small messages (the kernel's socket buffer is ~208 KiB)
# Reads of a large frame per wake-up of the loop, while the worker refills the pipe: a wake-up (the wait, the loop's
# pass) costs more than a read. Measured at 8 MiB results: 32-42 ms of the main process's CPU per 100 MB at 16,
# 44-47 at 1.
BODY_READS = 16
# The largest frame whose buffer a worker's inbox keeps for the next one (``_buffer``): the parent then holds at most
# workers x SPARE_MAX beyond the frames being read, a constant of the run, however large its results. Up to it,
# reuse pays: faulting in a fresh buffer's pages was 3/4 of the parent's CPU at 8 MiB results, whose frames (the
# pickled bytes, a few bytes over 8 MiB) came back at 790-900 MB/s with an 8 MiB cap against 2,300-2,700 with this
# one (bench/huge.py, 2 workers). Above it a kept buffer per worker is that much more memory for every result (4 x
# 19 MiB with the 10^7-int results of the memory sweep), so a larger frame gets a buffer of its own, freed with its
# message.
SPARE_MAX = 16 << 20
WRITE_PARTS = 64  # at most this many buffers per writev (the kernel takes up to IOV_MAX, 1,024 on Linux)


class Inbox:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()  # bytes read, not yet a whole frame
        self.body: bytearray | memoryview | None = None  # a large frame being filled in place
        self.spare: bytearray | None = None  # the buffer of the last large frame that completed its message
        self.filled = 0
        self.header: list[Any] | None = None  # a list of answers waiting for its results' frames
        self.missing: list[int] = []  # places in ``header`` whose frame has not come yet

    def read(self) -> list[Any]:
        """One read from the pipe; the whole messages it completed (none if a message is still incomplete).
        Raises EOFError at the end of the pipe, OSError if reading fails, and whatever unpickling a corrupt
        message raises: the caller treats all of them as a broken pipe."""
        if self.body is not None:
            self._fill()
            if self.filled < len(self.body):
                return []
            frame, self.body = self.body, None
            return self._take([frame])
        chunk = os.read(self.fd, CHUNK)
        if not chunk:
            raise EOFError("the pipe closed" + (" in the middle of a message" if self.buf or self.header else ""))
        self.buf += chunk
        return self._take(self._frames())

    def _fill(self) -> None:
        """Read into the large frame: what the pipe holds now, up to BODY_READS reads while the worker refills it
        (one wake-up of the loop per pipe's worth cost more than the copy). The first read has data or EOF."""
        assert self.body is not None
        view = memoryview(self.body)
        for i in range(BODY_READS):
            try:
                n = os.readv(self.fd, [view[self.filled:]])
            except BlockingIOError:
                if i == 0:
                    raise
                return  # empty for now: the loop waits for more
            if n == 0:
                raise EOFError("the pipe closed in the middle of a message")
            self.filled += n
            if self.filled == len(self.body):
                return

    def _frames(self) -> list[bytes | bytearray | memoryview]:
        buf, out = self.buf, []
        while len(buf) >= 4:
            (size,), start = struct.unpack_from("!i", buf), 4
            if size == -1:
                if len(buf) < 12:
                    break
                (size,), start = struct.unpack_from("!Q", buf, 4), 12
            end = start + size
            if len(buf) >= end:
                out.append(bytes(buf[start:end]))
                del buf[:end]
                continue
            if size > CHUNK:  # large: read the rest of it into a buffer of its own, not through ``buf``
                self.body = self._buffer(size)
                self.filled = len(buf) - start
                self.body[:self.filled] = buf[start:]
                buf.clear()
            break
        return out

    def _buffer(self, size: int) -> bytearray | memoryview:
        """A buffer for a large frame. One that completes its message fills the spare buffer (``_worker.fit``):
        the caller handles that message (unpickles its results) before its next read, so the buffer is free again
        by the time the next frame starts. One that waits for more frames of its message, or is larger than
        SPARE_MAX, gets its own."""
        if (self.header is not None and len(self.missing) > 1) or size > SPARE_MAX:
            return bytearray(size)
        self.spare = _worker.fit(self.spare, size)
        return memoryview(self.spare)[:size]

    def _take(self, frames: list[bytes | bytearray | memoryview]) -> list[Any]:
        """Frames to messages: a list of answers is complete once the frames of its large results are in."""
        out = []
        for frame in frames:
            if self.header is not None:  # the next large result of the list waiting for it
                i = self.missing.pop(0)
                pos, status, _size, seconds = self.header[i]
                self.header[i] = (pos, status, frame, seconds)
                if not self.missing:
                    out.append(self.header)
                    self.header = None
                continue
            msg = pickle.loads(frame)
            if isinstance(msg, list):
                missing = [i for i, a in enumerate(msg) if a[1] == "ok" and isinstance(a[2], int)]
                if missing:
                    self.header, self.missing = msg, missing
                    continue
            out.append(msg)
        return out


class Outgoing:
    """Bytes for a worker, written as its pipe takes them: ``put`` queues buffers (not copied), ``write`` writes
    what the pipe takes now and keeps the rest, in order, for when the loop sees it has room again."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.views: deque[memoryview] = deque()

    def __bool__(self) -> bool:
        """Bytes are waiting."""
        return bool(self.views)

    def put(self, parts: list[bytes]) -> None:
        self.views.extend(memoryview(p) for p in parts if len(p))

    def drop(self) -> None:
        self.views.clear()

    def write(self) -> None:
        """Write until the pipe is full or nothing is left. Raises OSError if the pipe is broken (the worker is
        gone, or its end was closed under it): the caller drops the rest."""
        views = self.views
        while views:
            try:
                n = os.writev(self.fd, [views[i] for i in range(min(len(views), WRITE_PARTS))])
            except BlockingIOError:
                return  # full: the loop waits for room
            while n:
                head = views[0]
                if n < len(head):
                    views[0] = head[n:]
                    break
                n -= len(head)
                views.popleft()
