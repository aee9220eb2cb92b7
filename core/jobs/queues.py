"""A queue's capacity and its dispatcher's state, as the engine keeps them on this node."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any


class Slots:
    """A queue's capacity: ``concurrency`` places shared by its worker and streamed calls."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.running = 0
        #: Jobs this node submitted to the queue that no worker has taken yet.
        self.waiting = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def free(self) -> int:
        """Places not in use and not promised to waiting jobs (negative when backlogged)."""
        return self.concurrency - self.running - self.waiting

    def try_acquire(self) -> bool:
        """Take a place if one is free now (first come, first served with waiting acquirers)."""
        if self.running < self.concurrency and not self._waiters:
            self.running += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future  # release() hands its place over: running stays counted
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the place was handed over just as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(future)
            raise

    def release(self) -> None:
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.running -= 1

    @contextlib.asynccontextmanager
    async def hold(self) -> Any:
        await self.acquire()
        try:
            yield
        finally:
            self.release()



class WorkQueue:
    """One named queue: its slots, its wake-up event and its dispatcher task."""

    def __init__(self, name: str, concurrency: int, owner: str) -> None:
        self.name = name
        #: The lease owner this node's workers of the queue use.
        self.owner = owner
        self.slots = Slots(concurrency)
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
