"""Many timeouts on few timers.

Every sync request has a job timeout and a wait timeout, and nearly all of them
are cancelled long before they are due. An asyncio timer per timeout costs a
heap push, a heap pop of the cancelled entry later, and a Python-level
comparison at every step of both. :class:`Deadlines` rounds each deadline *up*
to a tick and keeps one loop timer per tick: adding and cancelling a deadline
are dictionary operations. A deadline fires at most one tick late, never early.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("aiport.deadlines")

#: A deadline's handle: (tick number, key within the tick).
Deadline = tuple[int, int]


class Deadlines:
    """Callbacks due at a time, grouped by tick. Use from one event loop, in its thread."""

    def __init__(self, tick: float = 0.05) -> None:
        if tick <= 0:
            raise ValueError("tick must be positive")
        self.tick = tick
        self._buckets: dict[int, dict[int, tuple[Callable[..., Any], tuple[Any, ...]]]] = {}
        self._keys = itertools.count()
        #: The loop of the first deadline: all later ones use it (one loop per engine).
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        """Deadlines not yet fired or cancelled."""
        return sum(len(bucket) for bucket in self._buckets.values())

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Deadline:
        """Call ``callback(*args)`` in ``delay`` seconds (up to one tick later); returns a handle
        for :meth:`cancel`."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        number = math.ceil((loop.time() + delay) / self.tick)
        bucket = self._buckets.get(number)
        if bucket is None:
            bucket = self._buckets[number] = {}
            loop.call_at(number * self.tick, self._fire, number)
        key = next(self._keys)
        bucket[key] = (callback, args)
        return number, key

    def cancel(self, deadline: Deadline) -> None:
        """Forget a deadline (no effect once it fired or was cancelled)."""
        bucket = self._buckets.get(deadline[0])
        if bucket is not None:
            bucket.pop(deadline[1], None)

    def _fire(self, number: int) -> None:
        bucket = self._buckets.pop(number, None)
        for callback, args in (bucket or {}).values():
            try:
                callback(*args)
            except Exception as exc:  # one failing callback must not keep the others from running
                log.error("a deadline callback failed", callback=repr(callback), error=repr(exc))
