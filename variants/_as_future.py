"""A callback-style ``apply_async`` seen as a ``concurrent.futures.Future``, so the bounded loop can drive it.

Not a design of its own. mpire and billiard return an ``AsyncResult`` shaped like
``multiprocessing.pool.ApplyResult``: ``ready()``, ``wait(timeout)``, ``get()``, but no way to wait for the
first of many, which is what ``variants._bounded.drive`` does. Both take ``callback`` and
``error_callback``, run in the pool's own result-handler (or timeout, or death-watch) thread; each pair
settles one Future here, and ``concurrent.futures.wait`` wakes on it at once. Nothing is polled.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from typing import Any


def settled_by_callbacks(unwrap: Callable[[Any], BaseException] = lambda e: e
                         ) -> tuple[cf.Future, Callable[[Any], None], Callable[[Any], None]]:
    """``(future, callback, error_callback)``: pass the two callables to the library's ``apply_async``.

    ``unwrap`` turns what the library hands its error callback into the exception to raise (billiard
    hands an ``ExceptionInfo``, mpire the exception itself).
    """
    future: cf.Future = cf.Future()
    future.set_running_or_notify_cancel()

    def callback(value: Any) -> None:
        try:
            future.set_result(value)
        except cf.InvalidStateError:
            pass  # already settled: see error_callback

    def error_callback(error: Any) -> None:
        # A library may settle one task twice (mpire's death watch fails every pending task while its
        # result handler may still deliver one of them); raising here would kill the library's thread.
        try:
            future.set_exception(unwrap(error))
        except cf.InvalidStateError:
            pass

    return future, callback, error_callback
