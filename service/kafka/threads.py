"""Blocking client calls with a bound: a silent broker never holds up the event loop or a stop.

librdkafka's synchronous commit and its close have no timeout; they run on a
daemon thread of their own, and the caller stops waiting when its time is up
(the process may exit with such a thread still blocked).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable

__all__ = ["bounded", "wait_or_stop"]


async def bounded(fn: Callable[[], None], timeout: float) -> bool:
    """Run ``fn`` on a daemon thread; False if it is still running after ``timeout``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        error: BaseException | None = None
        try:
            fn()
        except BaseException as exc:  # handed to the waiting coroutine
            error = exc
        # A call that hung past the end of its event loop: nobody waits for it any more.
        with contextlib.suppress(RuntimeError):  # "Event loop is closed"
            loop.call_soon_threadsafe(_settle, done, error)

    threading.Thread(target=run, daemon=True, name="kafka-bounded").start()
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        return False
    return True


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


async def wait_or_stop(waiting: Awaitable[object], stopping: Callable[[], bool]) -> None:
    """Wait for ``waiting`` unless ``stopping()`` turns true first (checked 5 times a second)."""
    task = asyncio.ensure_future(waiting)
    while not task.done() and not stopping():
        await asyncio.wait({task}, timeout=0.2)
    task.cancel()
