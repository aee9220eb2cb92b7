"""The store's one writing connection, owned by a thread of its own.

sqlite3 releases the GIL while it steps a statement, so the writes run on a
dedicated thread and the event loop awaits them. A whole batch of writes is one
hop to that thread (:meth:`WriterConnection.call` with a function that runs them
all), which is what makes group commit cheap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class WriterConnection:
    """A ``sqlite3`` connection (autocommit: callers manage transactions) used only on its own thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiport-sqlite-writer")
        self._conn: sqlite3.Connection | None = None

    async def open(self, setup: str) -> None:
        """Connect on the writer thread and run ``setup`` (pragmas)."""
        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.executescript(setup)
            return conn

        self._conn = await self._run(connect)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the writer thread; its result (or its exception)."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("the job store's writer connection is closed")
        return await self._run(fn, conn, *args)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._run(conn.close)
        self._thread.shutdown(wait=False)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
