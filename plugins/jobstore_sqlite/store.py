"""The built-in job store: SQLite through aiosqlite, WAL, one writer connection with group commit.

Layout (beside ``storage.database_path``):

- ``aiport.db``: ``job_index`` (every job ever: id, refId, key, archive month),
  ``jobs`` (active and recently finished jobs, with their usage) and ``summary``
  (one analytics row per archived request: a finished job's row is derived from
  ``jobs`` when it is archived, so a request costs two row writes, not three).
- ``jobs_YYYY-MM.db``: finished jobs, moved out by :meth:`archive` into the file
  of the month they were created in (as AI Server does).

Writes go through one connection. Concurrent writes are batched into one
transaction ("group commit"): under load many jobs share one commit, and each
batch costs one hop to the connection's thread. A write is acknowledged only
after its transaction committed (WAL, ``synchronous=NORMAL``: durable against a
crash of the process). Each write runs in its own savepoint, so one failing
write does not undo the others of its batch.

One node only: a SQLite file is not shared between machines, so at start-up
every ``Started`` job belongs to a process that no longer runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import functools
import operator
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog
from aiport.core import jsoncodec
from aiport.core.errors import Conflict
from aiport.core.jobs.model import (
    ACTIVE_STATES,
    FINISHED_STATES,
    STATE_TEXT,
    Job,
    JobResult,
    JobSpec,
    JobState,
    Usage,
    new_ref_id,
    replace_job,
)
from aiport.core.jobs.store import JobQuery

from .schema import JOBS_TABLE, USAGE_COLUMNS, migrate
from .writer import WriterConnection

log = structlog.get_logger("aiport.jobs.sqlite")
T = TypeVar("T")

_JOB_COLUMNS = (
    "id", "ref_id", "api", "queue", "state", "key_id", "tag", "reply_to", "requested_provider", "provider",
    "status", "progress", "attempts", "max_attempts", "request", "response", "error", "error_status",
    "inputs", "outputs", "parent_id", "created_at", "started_at", "completed_at", "run_after",
    "lease_owner", "lease_expires_at", "duration_ms",
)
_SUMMARY_KEYS = ("id", "refId", "api", "queue", "provider", "model", "keyId", "tag", "state", "attempts",
                 "promptTokens", "completionTokens", "durationMs", "ttftMs", "createdAt", "month")
_SUMMARY_COLUMNS = ("id, ref_id, api, queue, provider, model, key_id, tag, state, attempts, prompt_tokens, "
                    "completion_tokens, duration_ms, ttft_ms, created_at")
#: A finished job's summary row, from its ``jobs`` row.
_SUMMARY_OF_JOBS = (f"SELECT {_SUMMARY_COLUMNS}, strftime('%Y-%m', created_at, 'unixepoch') FROM jobs "
                    "WHERE state IN ('Completed', 'Failed', 'Cancelled')")
_BATCH_LIMIT = 512


def _ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


def _dumps(value: Any) -> str | None:
    return None if value is None else jsoncodec.dumps(value)


def _mapping_json(value: Mapping[str, Any] | None) -> str | None:
    """JSON of a mapping, copied to a dict only when it is not one (JSON encoders take dicts)."""
    if value is None:
        return None
    return jsoncodec.dumps(value if type(value) is dict else dict(value))


def _loads(value: str | None) -> Any:
    return None if value is None else jsoncodec.loads(value)


@functools.lru_cache(maxsize=16)
def _seconds(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)


def _month(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m")


def _row_to_job(row: sqlite3.Row | tuple[Any, ...]) -> Job:
    r = dict(zip(_JOB_COLUMNS, row, strict=True))
    return Job(
        id=r["id"], ref_id=r["ref_id"], api=r["api"], queue=r["queue"], state=JobState(r["state"]),
        request=_loads(r["request"]) or {}, key_id=r["key_id"], tag=r["tag"], reply_to=r["reply_to"],
        requested_provider=r["requested_provider"], provider=r["provider"], status=r["status"],
        progress=r["progress"], attempts=r["attempts"], max_attempts=r["max_attempts"],
        response=_loads(r["response"]), error=_loads(r["error"]), error_status=r["error_status"],
        inputs=_loads(r["inputs"]) or {}, outputs=tuple(_loads(r["outputs"]) or ()), parent_id=r["parent_id"],
        created_at=_dt(r["created_at"]) or dt.datetime.now(dt.UTC), started_at=_dt(r["started_at"]),
        completed_at=_dt(r["completed_at"]), run_after=_dt(r["run_after"]), lease_owner=r["lease_owner"],
        lease_expires_at=_dt(r["lease_expires_at"]), duration_ms=r["duration_ms"],
    )


_SELECT = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs"


class SqliteJobStore:
    """The :class:`aiport.core.jobs.store.JobStore`, deferring sync jobs, on SQLite files."""

    def __init__(self, database_path: Path) -> None:
        self.path = database_path
        self._writer: WriterConnection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._pending: asyncio.Queue[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], bool]] = (
            asyncio.Queue())
        self._writer_task: asyncio.Task[None] | None = None
        self._archives: dict[str, aiosqlite.Connection] = {}
        # Deferred sync jobs (see enqueue): ids reserved in blocks, jobs running unwritten,
        # and finished ones waiting for the next batched history write.
        self._ids: collections.deque[int] = collections.deque()
        self._deferred: dict[int, tuple[Job, JobSpec]] = {}
        self._deferred_refs: dict[str, int] = {}
        self._buffer: list[tuple[Any, ...]] = []
        #: Finished jobs waiting in the buffer, as their rows (``_FINISHED_SYNC_COLUMNS``).
        self._buffered: dict[int, tuple[Any, ...]] = {}
        self._buffered_refs: dict[str, int] = {}
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        self._writer = WriterConnection(self.path)
        await self._writer.open("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;"
                                "PRAGMA foreign_keys=OFF;")
        applied = await self._writer.call(migrate)
        if applied:
            log.info("job database migrated", path=str(self.path), migrations=applied)
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        await self._reader.executescript("PRAGMA busy_timeout=5000; PRAGMA query_only=ON;")
        self._writer_task = asyncio.create_task(self._write_loop(), name="aiport-sqlite-writer")

    async def close(self) -> None:
        if self._writer_task is not None:
            await self.flush()
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        for conn in (*self._archives.values(), self._reader):
            if conn is not None:
                await conn.close()
        if self._writer is not None:
            await self._writer.close()
        self._archives.clear()
        self._reader = self._writer = None

    # ------------------------------------------------------------------ group commit

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, exclusive: bool = False) -> T:
        """Run ``fn(connection)`` in the next write transaction; returns after it committed.

        An ``exclusive`` write runs on its own, outside any transaction, and manages
        its transactions itself (ATTACH cannot run inside one).
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.put_nowait((fn, future, exclusive))
        return await future

    async def _write_loop(self) -> None:
        assert self._writer is not None
        writer = self._writer
        while True:
            batch = [await self._pending.get()]
            while len(batch) < _BATCH_LIMIT:
                try:
                    batch.append(self._pending.get_nowait())
                except asyncio.QueueEmpty:
                    break
            shared = [(fn, fut) for fn, fut, exclusive in batch if not exclusive]
            if shared:
                try:
                    # One hop to the writer's thread for the whole batch, not one per statement.
                    outcomes = await writer.call(_run_batch, [fn for fn, _ in shared])
                except Exception as exc:  # the transaction itself failed: every write in it failed
                    log.error("job store write failed", error=repr(exc))
                    outcomes = [(False, exc)] * len(shared)
                for (_, future), (ok, value) in zip(shared, outcomes, strict=True):
                    _settle(future, ok, value)
            for fn, future, exclusive in batch:
                if exclusive:
                    try:
                        _settle(future, True, await writer.call(fn))
                    except Exception as exc:
                        _settle(future, False, exc)

    # ------------------------------------------------------------------ reads

    # Each read runs and finishes in one call on the reader's thread: a cursor left open
    # between awaits would pin the reader to an old WAL snapshot while other reads go on.
    async def _fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    async def _fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        assert self._reader is not None
        return list(await self._reader.execute_fetchall(sql, params))

    async def get(self, job_id: int | None = None, ref_id: str | None = None) -> Job | None:
        if job_id is None and ref_id is None:
            return None
        if ref_id is not None and job_id is None:
            job_id = self._deferred_refs.get(ref_id) or self._buffered_refs.get(ref_id)
            if job_id is not None:
                ref_id = None
        in_memory = self._in_memory(job_id) if job_id is not None else None
        if in_memory is not None:
            return in_memory
        if job_id is not None:
            row = await self._fetchone(f"{_SELECT} WHERE id = ?", (job_id,))
            if row is not None:
                return _row_to_job(row)
            index = await self._fetchone("SELECT id, archive FROM job_index WHERE id = ?", (job_id,))
        else:
            index = await self._fetchone("SELECT id, archive FROM job_index WHERE ref_id = ?", (ref_id,))
            if index is not None and index[1] is None:
                row = await self._fetchone(f"{_SELECT} WHERE id = ?", (index[0],))
                if row is not None:
                    return _row_to_job(row)
        if index is None or index[1] is None:
            return None
        archive = await self._archive_reader(index[1])
        if archive is None:
            return None
        rows = list(await archive.execute_fetchall(f"{_SELECT} WHERE id = ?", (index[0],)))
        return _row_to_job(rows[0]) if rows else None

    def archive_path(self, month: str) -> Path:
        return self.path.with_name(f"jobs_{month}.db")

    async def _archive_reader(self, month: str) -> aiosqlite.Connection | None:
        conn = self._archives.get(month)
        if conn is None:
            path = self.archive_path(month)
            if not await asyncio.to_thread(path.exists):
                return None
            conn = await aiosqlite.connect(path, isolation_level=None)
            await conn.execute("PRAGMA query_only=ON")
            self._archives[month] = conn
        return conn

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        await self.flush()  # listings read the tables: buffered finished jobs go there first
        where, params = [], []
        if query.states:
            where.append(f"state IN ({', '.join('?' * len(query.states))})")
            params += [s.value for s in query.states]
        for column, value in (("queue", query.queue), ("tag", query.tag), ("key_id", query.key_id),
                              ("api", query.api)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = _SELECT + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id DESC LIMIT ? OFFSET ?"
        rows = await self._fetchall(sql, (*params, query.limit, query.offset))
        return [_row_to_job(r) for r in rows]

    async def queue_counts(self) -> dict[str, dict[str, int]]:
        rows = await self._fetchall(
            "SELECT queue, state, COUNT(*) FROM jobs WHERE state IN (?, ?, ?) GROUP BY queue, state",
            tuple(s.value for s in ACTIVE_STATES))
        counts: dict[str, dict[str, int]] = {}
        for queue, state, n in rows:
            counts.setdefault(queue, {})[state] = n
        return counts

    async def due_queues(self, now: dt.datetime) -> list[str]:
        rows = await self._fetchall(
            "SELECT DISTINCT queue FROM jobs WHERE state = 'Queued' AND (run_after IS NULL OR run_after <= ?)",
            (now.timestamp(),))
        return [r[0] for r in rows]

    async def next_due(self) -> dt.datetime | None:
        """When the earliest delayed (retry backoff) job becomes due."""
        row = await self._fetchone("SELECT MIN(run_after) FROM jobs WHERE state = 'Queued' AND run_after IS NOT NULL")
        return _dt(row[0]) if row and row[0] is not None else None

    async def summary(self, since: dt.datetime | None = None,
                      until: dt.datetime | None = None) -> list[Mapping[str, Any]]:
        await self.flush()
        low, high = _ts(since) or 0.0, _ts(until) or 1e12
        # Archived requests from summary, finished ones not archived yet from jobs.
        rows = await self._fetchall(
            f"SELECT {_SUMMARY_COLUMNS}, month FROM summary WHERE created_at >= ? AND created_at < ? "
            f"UNION ALL {_SUMMARY_OF_JOBS} AND created_at >= ? AND created_at < ? ORDER BY id",
            (low, high, low, high))
        return [dict(zip(_SUMMARY_KEYS, r, strict=True)) for r in rows]

    # ------------------------------------------------------------------ writes

    async def enqueue(self, spec: JobSpec, now: dt.datetime, *, owner: str | None = None,
                      lease: float = 0.0, defer: bool = False) -> tuple[Job, bool]:
        if defer and owner is not None and spec.ref_id is None and not spec.reply_to and not spec.inputs:
            while not self._ids:
                await self._next_id()
            return self._defer(spec, now, owner, lease), True
        ref_id = spec.ref_id or new_ref_id()
        created = now.timestamp()
        state = "Queued" if owner is None else "Started"
        attempts = 0 if owner is None else 1
        started = None if owner is None else created
        expires = None if owner is None else created + lease

        def insert(conn: sqlite3.Connection) -> tuple[Any, bool]:
            existing = conn.execute("SELECT id, key_id, api FROM job_index WHERE ref_id = ?", (ref_id,)).fetchone()
            if existing is not None:
                if existing[1] == spec.key_id and existing[2] == spec.api:
                    return int(existing[0]), False
                raise Conflict(f"RefId {ref_id!r} is already used by another job; send a new RefId.",
                               error_code="Conflict")
            cursor = conn.execute("INSERT INTO job_index (ref_id, key_id, api, created_at) VALUES (?, ?, ?, ?)",
                                  (ref_id, spec.key_id, spec.api, created))
            job_id = int(cursor.lastrowid or 0)
            row = conn.execute(
                "INSERT INTO jobs (id, ref_id, api, queue, state, key_id, tag, reply_to, requested_provider, "
                "attempts, max_attempts, request, inputs, parent_id, created_at, run_after, started_at, "
                "lease_owner, lease_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                f"RETURNING {', '.join(_JOB_COLUMNS)}",
                (job_id, ref_id, spec.api, spec.queue, state, spec.key_id, spec.tag, spec.reply_to,
                 spec.requested_provider, attempts, spec.max_attempts, _mapping_json(spec.request),
                 _mapping_json(spec.inputs), spec.parent_id, created, _ts(spec.run_after), started, owner,
                 expires)).fetchone()
            return row, True

        found, new = await self._write(insert)
        if new:
            return _row_to_job(found), True
        job = await self.get(job_id=found)
        if job is None:  # pragma: no cover - the index and the tables are written together
            raise RuntimeError(f"job {found} is indexed but missing")
        return job, False

    # ------------------------------------------------------------------ deferred sync jobs
    #
    # A sync call started at once by this node (no RefId, ReplyTo or uploads) is not
    # written when it starts: its id comes from a reserved block and the job lives in
    # memory while it runs. Finishing it adds one record to a buffer written in batches
    # (executemany) a moment later; anything else that changes it (a retry, a cancel,
    # the caller's sync timeout through persist()) first writes it as a Started job.
    # A crash loses only these unwritten jobs, whose callers' connections broke with it.

    async def _next_id(self) -> None:
        """Reserve a block of ids for deferred jobs when none is left."""
        if not self._ids:
            def reserve(conn: sqlite3.Connection) -> tuple[int, int]:
                row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'job_index'").fetchone()
                highest = conn.execute("SELECT COALESCE(MAX(id), 0) FROM job_index").fetchone()[0]
                base = max(row[0] if row else 0, highest)
                if row:
                    conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'job_index'", (base + _ID_BLOCK,))
                else:
                    conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('job_index', ?)",
                                 (base + _ID_BLOCK,))
                return base + 1, base + _ID_BLOCK

            first, last = await self._write(reserve)
            if not self._ids:  # another reservation may have refilled it meanwhile
                self._ids.extend(range(first, last + 1))

    def _defer(self, spec: JobSpec, now: dt.datetime, owner: str, lease: float,
               max_attempts: int | None = None) -> Job:
        job = Job(id=self._ids.popleft(), ref_id=new_ref_id(), api=spec.api, queue=spec.queue,
                  state=JobState.STARTED, request=spec.request, key_id=spec.key_id, tag=spec.tag,
                  requested_provider=spec.requested_provider, attempts=1,
                  max_attempts=spec.max_attempts or max_attempts or 3, parent_id=spec.parent_id, created_at=now,
                  started_at=now, lease_owner=owner, lease_expires_at=now + _seconds(lease))
        self._deferred[job.id] = (job, spec)
        self._deferred_refs[job.ref_id] = job.id
        return job

    def start_in_memory(self, spec: JobSpec, now: dt.datetime, owner: str, lease: float,
                        max_attempts: int) -> Job | None:
        """Start a sync job in memory (no write, no await), like ``enqueue(..., defer=True)``; ``None``
        when it does not qualify (RefId, ReplyTo or uploads) or no reserved id is left."""
        if spec.ref_id is not None or spec.reply_to or spec.inputs or not self._ids:
            return None
        return self._defer(spec, now, owner, lease, max_attempts)

    def finish_in_memory(self, finished: Job, usage: Usage) -> bool:
        """Finish a job started in memory and still there (not written meanwhile by a retry, a
        cancel or a sync timeout): it joins the batch of finished jobs to write. ``False``: it is
        not in memory, and the caller must use :meth:`complete`."""
        if self._take_deferred(finished.id) is None:
            return False
        self._finish_deferred(finished, usage)
        return True

    def _in_memory(self, job_id: int) -> Job | None:
        deferred = self._deferred.get(job_id)
        if deferred is not None:
            return deferred[0]
        row = self._buffered.get(job_id)
        return None if row is None else _finished_sync_job(row)

    def _take_deferred(self, job_id: int) -> Job | None:
        found = self._deferred.pop(job_id, None)
        if found is None:
            return None
        self._deferred_refs.pop(found[0].ref_id, None)
        return found[0]

    async def persist(self, job_id: int) -> bool:
        """Write a deferred job now (its caller stops waiting and may poll it); ``False`` if it is not deferred."""
        job = self._take_deferred(job_id)
        if job is None:
            return False
        await self._write(lambda conn: _insert_job(conn, job))
        return True

    def _finish_deferred(self, job: Job, usage: Usage) -> None:
        # Kept as its row, not as the job: a row of strings and numbers holds no objects for the
        # garbage collector to trace, while a job's request and response dicts kept for the
        # batch's lifetime outlived young collections and made them much slower.
        row = _finished_sync_params(job, usage)
        self._buffer.append(row)
        self._buffered[job.id] = row
        self._buffered_refs[job.ref_id] = job.id
        if len(self._buffer) >= _FLUSH_ROWS:
            self._spawn_flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(_FLUSH_SECONDS, self._spawn_flush)

    def _spawn_flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        task = asyncio.ensure_future(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        """Write the buffered finished jobs (one transaction, one statement per table)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._buffer = self._buffer, []
        if not batch:
            return

        def write(conn: sqlite3.Connection) -> None:
            _insert_rows(conn, "job_index", _INDEX_COLUMNS, [_index_of(row) for row in batch])
            _insert_rows(conn, "jobs", _FINISHED_SYNC_COLUMNS, batch)

        try:
            await self._write(write)
        except Exception as exc:  # the rows stay readable in memory; the next flush tries them again
            log.error("writing finished sync jobs failed", count=len(batch), error=repr(exc))
            self._buffer[:0] = batch
            return
        for row in batch:
            self._buffered.pop(row[0], None)
            self._buffered_refs.pop(row[1], None)

    async def claim(self, queue: str, owner: str, lease: float, now: dt.datetime, limit: int = 1) -> list[Job]:
        t = now.timestamp()

        def claim(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                "UPDATE jobs SET state = 'Started', attempts = attempts + 1, started_at = ?, lease_owner = ?, "
                "lease_expires_at = ?, run_after = NULL, status = NULL, progress = NULL "
                "WHERE id IN (SELECT id FROM jobs WHERE queue = ? AND state = 'Queued' "
                "AND (run_after IS NULL OR run_after <= ?) ORDER BY id LIMIT ?) AND state = 'Queued' "
                f"RETURNING {', '.join(_JOB_COLUMNS)}",
                (t, owner, t + lease, queue, t, limit)).fetchall()

        rows = await self._write(claim)
        return sorted((_row_to_job(r) for r in rows), key=lambda j: j.id)

    async def renew(self, job_id: int, owner: str, lease: float, now: dt.datetime) -> bool:
        return await self._update(
            "UPDATE jobs SET lease_expires_at = ? "
            "WHERE id = ? AND lease_owner = ? AND state IN ('Started', 'Executed')",
            (now.timestamp() + lease, job_id, owner))

    async def renew_owner(self, owner_prefix: str, lease: float, now: dt.datetime) -> int:
        """Extend the leases of every job held by workers whose id starts with ``owner_prefix``."""
        def renew(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE jobs SET lease_expires_at = ? WHERE state IN ('Started', 'Executed') AND lease_owner LIKE ?",
                (now.timestamp() + lease, owner_prefix.replace("%", "") + "%")).rowcount
        return await self._write(renew)

    async def progress(self, job_id: int, owner: str, progress: float | None, status: str | None) -> bool:
        if job_id in self._deferred:
            job, spec = self._deferred[job_id]
            self._deferred[job_id] = (replace_job(job, progress=job.progress if progress is None else progress,
                                                   status=status or job.status), spec)
            return True
        return await self._update(
            "UPDATE jobs SET progress = COALESCE(?, progress), status = COALESCE(?, status) "
            "WHERE id = ? AND lease_owner = ? AND state IN ('Started', 'Executed')",
            (progress, status, job_id, owner))

    async def mark_executed(self, job_id: int, owner: str, provider: str | None) -> bool:
        if job_id in self._deferred:
            job, spec = self._deferred[job_id]
            self._deferred[job_id] = (replace_job(job, state=JobState.EXECUTED, provider=provider or job.provider),
                                      spec)
            return True
        return await self._update(
            "UPDATE jobs SET state = 'Executed', provider = COALESCE(?, provider) "
            "WHERE id = ? AND lease_owner = ? AND state = 'Started'", (provider, job_id, owner))

    async def _update(self, sql: str, params: tuple[Any, ...]) -> bool:
        return await self._write(lambda conn: conn.execute(sql, params).rowcount == 1)

    async def complete(self, job_id: int, owner: str, result: JobResult, now: dt.datetime,
                       callback: JobSpec | None = None, finished: Job | None = None) -> bool:
        t = now.timestamp()
        deferred = self._take_deferred(job_id)
        if deferred is not None:
            if finished is None:
                finished = replace_job(
                    deferred, state=JobState.COMPLETED, response=dict(result.response),
                    outputs=tuple(result.outputs), completed_at=now,
                    provider=result.usage.provider or deferred.provider, progress=1.0, lease_owner=None,
                    lease_expires_at=None,
                    duration_ms=int((now - (deferred.started_at or deferred.created_at)).total_seconds() * 1000))
            if callback is None:
                self._finish_deferred(finished, result.usage)
                return True

            def complete_new(conn: sqlite3.Connection) -> bool:
                _insert_job(conn, finished, result.usage)
                _insert_callback(conn, callback, t)
                return True

            return await self._write(complete_new)

        def complete(conn: sqlite3.Connection) -> bool:
            updated = conn.execute(
                "UPDATE jobs SET state = 'Completed', response = ?, outputs = ?, completed_at = ?, "
                "provider = COALESCE(?, provider), progress = 1.0, lease_owner = NULL, lease_expires_at = NULL, "
                f"duration_ms = CAST((? - started_at) * 1000 AS INTEGER), {_SET_USAGE} "
                "WHERE id = ? AND lease_owner = ? AND state IN ('Started', 'Executed')",
                (_mapping_json(result.response), _dumps(list(result.outputs)), t, result.usage.provider,
                 t, *_usage_params(result.usage), job_id, owner)).rowcount
            if updated != 1:
                return False
            if callback is not None:
                _insert_callback(conn, callback, t)
            return True

        return await self._write(complete)

    async def fail(self, job_id: int, owner: str, error: Mapping[str, Any], error_status: int,
                   now: dt.datetime, *, retry_at: dt.datetime | None = None, queue: str | None = None,
                   provider: str | None = None, usage: Usage | None = None,
                   callback: JobSpec | None = None) -> bool:
        t = now.timestamp()
        deferred = self._take_deferred(job_id)
        if deferred is not None and retry_at is None and callback is None:
            self._finish_deferred(replace_job(
                deferred, state=JobState.FAILED, error=dict(error), error_status=error_status, completed_at=now,
                provider=provider or deferred.provider, lease_owner=None, lease_expires_at=None,
                duration_ms=int((now - (deferred.started_at or deferred.created_at)).total_seconds() * 1000)),
                usage or Usage(provider=provider))
            return True

        def fail(conn: sqlite3.Connection) -> bool:
            if deferred is not None:  # a retry or a callback: the job must exist to go on
                _insert_job(conn, deferred)
            if retry_at is not None:
                return conn.execute(
                    "UPDATE jobs SET state = 'Queued', queue = COALESCE(?, queue), run_after = ?, error = ?, "
                    "error_status = ?, provider = COALESCE(?, provider), lease_owner = NULL, "
                    "lease_expires_at = NULL, status = 'Retrying' "
                    "WHERE id = ? AND lease_owner = ? AND state IN ('Started', 'Executed')",
                    (queue, retry_at.timestamp(), _mapping_json(error), error_status, provider,
                     job_id, owner)).rowcount == 1
            updated = conn.execute(
                "UPDATE jobs SET state = 'Failed', error = ?, error_status = ?, completed_at = ?, "
                "provider = COALESCE(?, provider), lease_owner = NULL, lease_expires_at = NULL, "
                f"duration_ms = CAST((? - COALESCE(started_at, created_at)) * 1000 AS INTEGER), {_SET_USAGE} "
                "WHERE id = ? AND lease_owner = ? AND state IN ('Started', 'Executed')",
                (_mapping_json(error), error_status, t, provider, t, *_usage_params(usage or Usage()),
                 job_id, owner)).rowcount
            if updated != 1:
                return False
            if callback is not None:
                _insert_callback(conn, callback, t)
            return True

        return await self._write(fail)

    async def cancel(self, job_id: int, now: dt.datetime, error: Mapping[str, Any],
                     callback: JobSpec | None = None, error_status: int = 409) -> Job | None:
        t = now.timestamp()
        deferred = self._take_deferred(job_id)

        def cancel(conn: sqlite3.Connection) -> bool:
            if deferred is not None:
                _insert_job(conn, deferred)
            updated = conn.execute(
                "UPDATE jobs SET state = 'Cancelled', error = ?, error_status = ?, completed_at = ?, "
                "lease_owner = NULL, lease_expires_at = NULL, "
                "duration_ms = CAST((? - COALESCE(started_at, created_at)) * 1000 AS INTEGER) "
                "WHERE id = ? AND state IN ('Queued', 'Started', 'Executed')",
                (_mapping_json(error), error_status, t, t, job_id)).rowcount
            if updated != 1:
                return False
            if callback is not None:
                _insert_callback(conn, callback, t)
            return True

        await self._write(cancel)
        return await self.get(job_id=job_id)

    async def record(self, spec: JobSpec, *, state: JobState, response: Mapping[str, Any] | None,
                     error: Mapping[str, Any] | None, usage: Usage, duration_ms: int, now: dt.datetime) -> int:
        """Store a request that ran outside the queue (a stream) as a finished job, with its usage."""
        ref_id = spec.ref_id or new_ref_id()
        t = now.timestamp()

        def record(conn: sqlite3.Connection) -> int:
            if conn.execute("SELECT 1 FROM job_index WHERE ref_id = ?", (ref_id,)).fetchone():
                ref = new_ref_id()  # a reused RefId on a stream is not an error; keep both
            else:
                ref = ref_id
            cursor = conn.execute("INSERT INTO job_index (ref_id, key_id, api, created_at) VALUES (?, ?, ?, ?)",
                                  (ref, spec.key_id, spec.api, t - duration_ms / 1000))
            job_id = int(cursor.lastrowid or 0)
            conn.execute(
                "INSERT INTO jobs (id, ref_id, api, queue, state, key_id, tag, requested_provider, provider, "
                "attempts, max_attempts, request, response, error, error_status, created_at, started_at, "
                f"completed_at, duration_ms, {', '.join(USAGE_COLUMNS)}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, ref, spec.api, spec.queue, state.value, spec.key_id, spec.tag, spec.requested_provider,
                 usage.provider, _mapping_json(spec.request), _mapping_json(response or None),
                 _mapping_json(error or None), 502 if error else None, t - duration_ms / 1000,
                 t - duration_ms / 1000, t, duration_ms, *_usage_params(usage)))
            return job_id

        return await self._write(record)

    async def recover(self, now: dt.datetime, *, all_started: bool) -> tuple[int, int]:
        t = now.timestamp()
        lease_clause = "" if all_started else " AND lease_expires_at < ?"
        params: tuple[Any, ...] = () if all_started else (t,)
        error = _dumps({"errorCode": "Interrupted", "message": "The server stopped while the job ran; "
                                                               "it ran out of attempts."})

        def recover(conn: sqlite3.Connection) -> tuple[int, int]:
            failed = conn.execute(
                "UPDATE jobs SET state = 'Failed', error = ?, error_status = 500, completed_at = ?, "
                "lease_owner = NULL, lease_expires_at = NULL "
                f"WHERE state IN ('Started', 'Executed') AND attempts >= max_attempts{lease_clause}",
                (error, t, *params)).rowcount
            requeued = conn.execute(
                "UPDATE jobs SET state = 'Queued', status = 'Interrupted; requeued', lease_owner = NULL, "
                "lease_expires_at = NULL, run_after = NULL "
                f"WHERE state IN ('Started', 'Executed'){lease_clause}", params).rowcount
            return requeued, failed

        return await self._write(recover)

    async def archive(self, before: dt.datetime) -> int:
        """Move finished jobs (whose callbacks are done) into ``jobs_YYYY-MM.db`` files."""
        await self.flush()
        rows = await self._fetchall(
            "SELECT id, created_at FROM jobs j WHERE state IN (?, ?, ?) AND completed_at < ? "
            "AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = j.id AND c.state IN (?, ?, ?)) "
            "ORDER BY id LIMIT 5000",
            (*(s.value for s in FINISHED_STATES), before.timestamp(), *(s.value for s in ACTIVE_STATES)))
        by_month: dict[str, list[int]] = {}
        for job_id, created in rows:
            by_month.setdefault(_month(created), []).append(job_id)
        moved = 0
        for month, ids in by_month.items():
            path = self.archive_path(month)
            await asyncio.to_thread(_ensure_archive, path)

            def move(conn: sqlite3.Connection, ids: list[int] = ids, month: str = month,
                     path: Path = path) -> int:
                marks = ", ".join("?" * len(ids))
                conn.execute("ATTACH DATABASE ? AS arch", (str(path),))
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(f"INSERT OR REPLACE INTO arch.jobs ({', '.join(_JOB_COLUMNS)}) "
                                 f"SELECT {', '.join(_JOB_COLUMNS)} FROM main.jobs WHERE id IN ({marks})", ids)
                    conn.execute("COMMIT")
                    # The archive copy is committed before the active row goes, so a crash in
                    # between leaves a duplicate (harmless: reads prefer the active table), never a loss.
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(f"INSERT OR REPLACE INTO summary {_SUMMARY_OF_JOBS} AND id IN ({marks})", ids)
                    conn.execute(f"UPDATE job_index SET archive = ? WHERE id IN ({marks})", [month, *ids])
                    n = conn.execute(f"DELETE FROM main.jobs WHERE id IN ({marks})", ids).rowcount
                    conn.execute("COMMIT")
                finally:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    conn.execute("DETACH DATABASE arch")
                return int(n)

            moved += await self._write(move, exclusive=True)
        if moved:
            log.info("jobs archived", count=moved)
        return moved

    async def requeue(self, job_id: int, now: dt.datetime) -> Job | None:
        """``Failed/Cancelled -> Queued`` from the first attempt (admin requeue); a job already
        in its monthly archive is brought back to the active table first."""
        job = await self.get(job_id=job_id)
        if job is None or job.state not in (JobState.FAILED, JobState.CANCELLED):
            return None
        archived = await self._fetchone("SELECT 1 FROM jobs WHERE id = ?", (job_id,)) is None
        values = (
            job.id, job.ref_id, job.api, job.queue, STATE_TEXT[job.state], job.key_id, job.tag, job.reply_to,
            job.requested_provider, job.provider, job.status, job.progress, job.attempts, job.max_attempts,
            _mapping_json(job.request), None, None, None, _mapping_json(job.inputs), None, job.parent_id,
            job.created_at.timestamp(), None, None, None, None, None, None)

        def requeue(conn: sqlite3.Connection) -> Any:
            if archived:
                # The archive keeps its copy; reads prefer the active table, and the next
                # archiving replaces it.
                conn.execute(f"INSERT OR REPLACE INTO jobs ({', '.join(_JOB_COLUMNS)}) "
                             f"VALUES ({', '.join('?' * len(_JOB_COLUMNS))})", values)
                conn.execute("UPDATE job_index SET archive = NULL WHERE id = ?", (job_id,))
            row = conn.execute(
                "UPDATE jobs SET state = 'Queued', attempts = 0, response = NULL, error = NULL, error_status = NULL, "
                "outputs = NULL, status = 'Requeued', progress = NULL, started_at = NULL, completed_at = NULL, "
                "run_after = NULL, lease_owner = NULL, lease_expires_at = NULL, duration_ms = NULL, "
                "model = NULL, prompt_tokens = NULL, completion_tokens = NULL, ttft_ms = NULL "
                "WHERE id = ? AND state IN ('Failed', 'Cancelled') "
                f"RETURNING {', '.join(_JOB_COLUMNS)}", (job_id,)).fetchone()
            if row is not None:  # no longer finished: its archived summary row goes until it is again
                conn.execute("DELETE FROM summary WHERE id = ?", (job_id,))
            return row

        row = await self._write(requeue)
        return None if row is None else _row_to_job(row)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _ensure_archive(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(JOBS_TABLE)
        conn.commit()


_INSERT_JOB = f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES ({', '.join('?' * len(_JOB_COLUMNS))})"
_INSERT_FINISHED_JOB = (f"INSERT INTO jobs ({', '.join((*_JOB_COLUMNS, *USAGE_COLUMNS))}) "
                        f"VALUES ({', '.join('?' * (len(_JOB_COLUMNS) + len(USAGE_COLUMNS)))})")
#: The columns a finished in-memory sync job can have set (it had no RefId, ReplyTo or uploads, and
#: holds no lease); the rest stay NULL. Fewer bound values: this runs for every sync request.
_FINISHED_SYNC_COLUMNS = (
    "id", "ref_id", "api", "queue", "state", "key_id", "tag", "requested_provider", "provider", "status",
    "progress", "attempts", "max_attempts", "request", "response", "error", "error_status", "outputs",
    "parent_id", "created_at", "started_at", "completed_at", "duration_ms", *USAGE_COLUMNS,
)
_INDEX_COLUMNS = ("id", "ref_id", "key_id", "api", "created_at")
#: ``job_index`` values of a row of ``_FINISHED_SYNC_COLUMNS``.
_index_of = operator.itemgetter(*(_FINISHED_SYNC_COLUMNS.index(c) for c in _INDEX_COLUMNS))
#: Rows per INSERT of a batch. The sqlite3 module releases the GIL around each statement it
#: steps: one statement per row made the writer thread and the event loop trade the GIL
#: a thousand times per batch, which cost the loop more than the inserts themselves.
_ROWS_PER_INSERT = 64 if sqlite3.sqlite_version_info >= (3, 32) else 16  # bound-variable limit 32766 / 999
_SET_USAGE = ", ".join(f"{name} = ?" for name in USAGE_COLUMNS)
#: Ids a deferred sync job takes from one reservation.
_ID_BLOCK = 1000
#: A buffer of finished sync jobs is written after this long, or at this size.
_FLUSH_SECONDS = 0.2
_FLUSH_ROWS = 512


def _insert_rows(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` with multi-row ``VALUES`` statements of up to ``_ROWS_PER_INSERT`` rows."""
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        part = rows[start:start + _ROWS_PER_INSERT]
        conn.execute(_multi_row_insert(table, columns, len(part)), [value for row in part for value in row])


@functools.lru_cache(maxsize=64)
def _multi_row_insert(table: str, columns: tuple[str, ...], rows: int) -> str:
    one = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * rows)}"


def _usage_params(usage: Usage) -> tuple[Any, ...]:
    """A request's usage as the ``jobs`` usage columns, in ``USAGE_COLUMNS`` order."""
    return usage.model, usage.prompt_tokens, usage.completion_tokens, usage.ttft_ms


def _job_params(job: Job) -> tuple[Any, ...]:
    """A job as a ``jobs`` row, in ``_JOB_COLUMNS`` order."""
    return (job.id, job.ref_id, job.api, job.queue, STATE_TEXT[job.state], job.key_id, job.tag, job.reply_to,
            job.requested_provider, job.provider, job.status, job.progress, job.attempts, job.max_attempts,
            _mapping_json(job.request), _mapping_json(job.response), _mapping_json(job.error), job.error_status,
            _mapping_json(job.inputs), _dumps(list(job.outputs)), job.parent_id, _ts(job.created_at),
            _ts(job.started_at), _ts(job.completed_at), _ts(job.run_after), job.lease_owner,
            _ts(job.lease_expires_at), job.duration_ms)


def _finished_sync_params(job: Job, usage: Usage) -> tuple[Any, ...]:
    """A finished in-memory sync job as a row of ``_FINISHED_SYNC_COLUMNS``."""
    completed = job.completed_at
    return (job.id, job.ref_id, job.api, job.queue, STATE_TEXT[job.state], job.key_id, job.tag, job.requested_provider,
            job.provider, job.status, job.progress, job.attempts, job.max_attempts, _mapping_json(job.request),
            _mapping_json(job.response), _mapping_json(job.error),
            job.error_status, jsoncodec.dumps(list(job.outputs)) if job.outputs else None, job.parent_id,
            job.created_at.timestamp(), None if job.started_at is None else job.started_at.timestamp(),
            None if completed is None else completed.timestamp(), job.duration_ms,
            usage.model, usage.prompt_tokens, usage.completion_tokens, usage.ttft_ms)


def _finished_sync_job(row: tuple[Any, ...]) -> Job:
    """The job a row of ``_FINISHED_SYNC_COLUMNS`` holds (as reading it back would give it)."""
    values = dict(zip(_FINISHED_SYNC_COLUMNS, row, strict=True))
    return _row_to_job(tuple(values.get(column) for column in _JOB_COLUMNS))


def _insert_job(conn: sqlite3.Connection, job: Job, usage: Usage | None = None) -> None:
    """Write a job kept in memory until now (its index entry and its row, with its usage if finished)."""
    conn.execute("INSERT INTO job_index (id, ref_id, key_id, api, created_at) VALUES (?, ?, ?, ?, ?)",
                 (job.id, job.ref_id, job.key_id, job.api, job.created_at.timestamp()))
    if usage is None:
        conn.execute(_INSERT_JOB, _job_params(job))
    else:
        conn.execute(_INSERT_FINISHED_JOB, (*_job_params(job), *_usage_params(usage)))


def _insert_callback(conn: sqlite3.Connection, spec: JobSpec, now: float) -> None:
    ref_id = spec.ref_id or new_ref_id()
    cursor = conn.execute("INSERT INTO job_index (ref_id, key_id, api, created_at) VALUES (?, ?, ?, ?)",
                          (ref_id, spec.key_id, spec.api, now))
    conn.execute(
        "INSERT INTO jobs (id, ref_id, api, queue, state, key_id, tag, reply_to, attempts, max_attempts, request, "
        "parent_id, created_at) VALUES (?, ?, ?, ?, 'Queued', ?, ?, ?, 0, ?, ?, ?, ?)",
        (cursor.lastrowid, ref_id, spec.api, spec.queue, spec.key_id, spec.tag, spec.reply_to,
         spec.max_attempts, _mapping_json(spec.request), spec.parent_id, now))


def _run_batch(conn: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]]) -> list[tuple[bool, Any]]:
    """Run writes in one transaction, each in a savepoint (runs in the connection's thread)."""
    outcomes: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for fn in fns:
            conn.execute("SAVEPOINT w")
            try:
                outcomes.append((True, fn(conn)))
                conn.execute("RELEASE w")
            except Exception as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                outcomes.append((False, exc))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes
