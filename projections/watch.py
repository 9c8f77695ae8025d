"""How far the read models have got, for threads and for asyncio code to wait on."""

from __future__ import annotations

import asyncio
import threading


class PositionWatch:
    """The position up to which every projection has committed.

    The runner advances it (in the server, the projector process's reports do); request
    handlers wait on it to read their own writes, and the live event stream waits on it
    for the next event. Async waiters are woken through their own loop, never by
    blocking a thread per waiter.
    """

    def __init__(self, position: int = 0) -> None:
        self._position = position
        self._cond = threading.Condition()
        self._async_waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def position(self) -> int:
        """The last position every projection has committed."""
        return self._position

    def advance(self, position: int) -> None:
        """Record progress and wake whoever waits for it."""
        with self._cond:
            if position <= self._position:
                return
            self._position = position
            self._cond.notify_all()
            ready = [w for w in self._async_waiters if w[0] <= position]
            self._async_waiters = [w for w in self._async_waiters if w[0] > position]
        if not ready:
            return
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # a thread without a loop (a runner thread)
            here = None
        for _, loop, future in ready:
            if loop is here:
                _resolve(future)  # advanced from that loop itself: no wake-up to send it
            else:
                loop.call_soon_threadsafe(_resolve, future)

    def reset(self, position: int) -> None:
        """Go back (after a rebuild); nobody is woken."""
        with self._cond:
            self._position = position

    def wait(self, position: int, timeout: float) -> bool:
        """Block until ``position`` is reached; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._position >= position, timeout=timeout)

    async def wait_async(self, position: int, timeout: float) -> bool:
        """Await until ``position`` is reached; False on timeout."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self._position >= position:
                return True
            entry = (position, loop, future)
            self._async_waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._cond:
                if entry in self._async_waiters:
                    self._async_waiters.remove(entry)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
