"""The built-in job store plugin: SQLite (WAL) with monthly archive files, for one node.

- :mod:`.store`: :class:`SqliteJobStore`, the :class:`~aiport.core.jobs.store.JobStore`
  and :class:`~aiport.core.jobs.store.DeferringJobStore` the engine runs on;
- :mod:`.writer`: its one writing connection, on a thread of its own;
- :mod:`.schema`: the tables and the ordered, named migrations recorded in the database.
"""

from __future__ import annotations

from collections.abc import Callable

from aiport.core.hookspecs import hookimpl
from aiport.core.registry import JobStoreType

from .store import SqliteJobStore

__all__ = ["SqliteJobStore", "register_job_stores"]


@hookimpl
def register_job_stores(register: Callable[[JobStoreType], None]) -> None:
    register(JobStoreType(
        name="sqlite",
        factory=lambda config: SqliteJobStore(config.resolve_path(config.storage.database_path)),
        description="SQLite (WAL) with monthly archive files; one node",
    ))
