"""The supervisor's worker process: one task at a time over its own pipe, and it dies with its parent.

Kept free of heavy imports: every worker imports this module at spawn.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """No orphans: the kernel SIGKILLs us when the parent dies; a thread covers what that misses.

    PR_SET_PDEATHSIG (Linux) fires when the *thread* that spawned us exits, and only if set before the
    parent dies: the getppid() check closes the window between our fork and this call. The thread
    waiting on the parent's sentinel is the portable check, and the fallback where prctl is missing.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the sentinel thread below is the only guard
    if os.getppid() != parent_pid:
        os._exit(70)  # the parent died before the prctl took effect
    parent = multiprocessing.parent_process()
    if parent is not None:
        def exit_when_parent_dies() -> None:
            wait([parent.sentinel])  # readable only once the parent is gone: no polling, no limit needed
            os._exit(70)

        threading.Thread(target=exit_when_parent_dies, daemon=True, name="parent-watch").start()


def main(conn: Connection, job: Any, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    # Ctrl-C reaches the whole foreground process group; the supervisor decides what stops, not us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return  # the supervisor closed our pipe
        if msg is None:
            return  # orderly shutdown
        tid, item = msg
        try:
            result = job(item)
        except BaseException as e:  # noqa: BLE001  (SystemExit in a job is a failure of that item too)
            conn.send(("err", tid, f"{type(e).__name__}: {e}", traceback.format_exc()))
            continue
        try:
            conn.send(("ok", tid, result))
        except Exception as e:  # the result could not be pickled: that item failed, the worker is fine
            conn.send(("err", tid, f"result could not be sent back: {type(e).__name__}: {e}",
                       traceback.format_exc()))
