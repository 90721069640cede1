"""The article's own workload, for real: a loopback HTTP API -> fetch and parse in workers -> SQLite.

- :class:`ApiServer`: a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (a free port), started and stopped by
  whoever uses it. ``GET /items/<id>`` answers per item according to its ``faults`` map:
  ``ok`` a large JSON body, ``slow`` the same after a delay, ``never`` no answer at all (until the server
  stops), ``huge`` a body whose parsed form does not fit a small memory cgroup, ``500`` an HTTP error.
- :class:`FetchAndParse`: the worker's job: fetch the item's JSON (socket timeout optional), parse it,
  and return a small summary (the "processed" response). With ``limit_mb`` it first moves its worker
  into a memory cgroup of that size, so parsing ``huge`` gets it OOM-killed by the kernel.
- :func:`save` / :func:`open_db`: ``on_result`` in the main process: one row per item, item UNIQUE, one
  transaction per row (the article's callback, "save to the database").
"""

from __future__ import annotations

import http.server
import json
import os
import sqlite3
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any

from . import cgroup
from .events import stamp

OK_INTS = 100_000  # a "large response": 100,000 ints, about 200 KB of JSON
HUGE_INTS = 20_000_000  # ~40 MB of JSON; parsed, a 160 MB list: far above HUGE_LIMIT_MB
HUGE_LIMIT_MB = 128
# A slow answer: dozens of times an ok one (tens of ms), yet well inside the pipeline experiments' 10 s run
# timeout: nothing cuts it, every design just waits for it.
SLOW_SECONDS = 1.0
CHUNK = 1 << 20


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            item = int(self.path.rsplit("/", 1)[-1])
        except ValueError:
            self.send_error(404)
            return
        mode = self.server.faults.get(item, "ok")
        if mode == "500":
            self.send_error(500, "internal error (injected)")
            return
        if mode == "never":
            self.server.stopping.wait()  # holds the connection open until the server stops
            return
        if mode == "slow":
            if self.server.stopping.wait(SLOW_SECONDS):
                return
        count = HUGE_INTS if mode == "huge" else OK_INTS
        head = f'{{"id": {item}, "values": ['.encode()
        body_len = len(head) + 2 * count - 1 + 2
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(body_len))
        self.end_headers()
        self.wfile.write(head)
        ones = b"1," * (CHUNK // 2)
        left = count
        try:
            while left > 0:  # streamed: the server never holds a huge body in memory
                n = min(left, CHUNK // 2)
                self.wfile.write(ones[: 2 * n] if n < left else ones[: 2 * n - 1])
                left -= n
            self.wfile.write(b"]}")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker died (or gave up) mid-body

    def log_message(self, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, faults: dict[int, str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.faults = faults
        self.stopping = threading.Event()


class ApiServer:
    """``with ApiServer({3: "huge"}) as api: api.url`` — a real HTTP server on loopback, stopped on exit."""

    def __init__(self, faults: dict[int, str] | None = None) -> None:
        self.server = _Server(dict(faults or {}))
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True, name="api-server")

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.stopping.set()  # releases "never" and "slow" handlers
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@dataclass(frozen=True, kw_only=True)
class FetchAndParse:
    """Fetch ``<base_url>/items/<item>``, parse the JSON, return ``{"id", "n", "sum"}``."""

    base_url: str
    socket_timeout: float | None = None  # None: a request that never answers hangs this worker
    limit_mb: int | None = None  # run the parse inside a memory cgroup of this size (real OOM kills)
    events: str | None = None

    def __call__(self, item: int) -> dict[str, int]:
        stamp(self.events, "start", item)
        if self.limit_mb is not None:
            cgroup.enter_limited_cgroup(self.limit_mb << 20)
        with urllib.request.urlopen(f"{self.base_url}/items/{item}", timeout=self.socket_timeout) as resp:
            body = resp.read()
        data = json.loads(body)
        values = data["values"]
        return {"id": data["id"], "n": len(values), "sum": sum(values)}


SCHEMA = "CREATE TABLE IF NOT EXISTS results (item INTEGER NOT NULL UNIQUE, n INTEGER NOT NULL, total INTEGER NOT NULL)"


_DB_LOCK = threading.Lock()


def open_db(path: str) -> sqlite3.Connection:
    # check_same_thread=False: several designs call on_result from a thread of their own (the pool's result
    # handler, the executor's manager thread), not the thread that opened the database; _DB_LOCK keeps
    # each one-row transaction whole.
    conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")  # a SIGKILL mid-commit leaves the last committed state intact
    conn.execute(SCHEMA)
    conn.commit()
    return conn


def save(conn: sqlite3.Connection, item: int, result: dict[str, int]) -> None:
    """One row, one transaction: a row is either fully there or not at all."""
    with _DB_LOCK, conn:
        conn.execute("INSERT INTO results (item, n, total) VALUES (?, ?, ?)", (item, result["n"], result["sum"]))


def rows(path: str) -> list[int]:
    """Items saved, sorted (duplicates kept, so a caller can see one)."""
    if not os.path.exists(path):
        return []
    conn = sqlite3.connect(path, timeout=10)
    try:
        return sorted(r[0] for r in conn.execute("SELECT item FROM results"))
    finally:
        conn.close()


def integrity(path: str) -> str:
    conn = sqlite3.connect(path, timeout=10)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
