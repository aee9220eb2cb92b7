"""The SQLite job database's tables, and the ordered, named migrations that build them.

Every migration runs once per database, in order, inside one transaction with its
record in ``schema_migrations``; a database opened again runs only the ones it has
not recorded. Databases made before migrations were recorded have no
``schema_migrations`` table: the early steps are written to be safe on them
(``IF NOT EXISTS``, columns added only when missing), so they are recognised and
brought up to date without losing a row.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

JOBS_TABLE = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY, ref_id TEXT NOT NULL, api TEXT NOT NULL, queue TEXT NOT NULL,
    state TEXT NOT NULL, key_id INTEGER NOT NULL DEFAULT 0, tag TEXT, reply_to TEXT,
    requested_provider TEXT, provider TEXT, status TEXT, progress REAL,
    attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL DEFAULT 3,
    request TEXT NOT NULL, response TEXT, error TEXT, error_status INTEGER,
    inputs TEXT, outputs TEXT, parent_id INTEGER,
    created_at REAL NOT NULL, started_at REAL, completed_at REAL, run_after REAL,
    lease_owner TEXT, lease_expires_at REAL, duration_ms INTEGER
);
"""
#: The first schema: jobs, the RefId index over the archives, and the analytics rows.
BASE_SCHEMA = JOBS_TABLE + """
DROP INDEX IF EXISTS jobs_due;
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (queue, run_after, id) WHERE state = 'Queued';
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (state, completed_at);
DROP INDEX IF EXISTS jobs_parent;
CREATE INDEX IF NOT EXISTS jobs_children ON jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS job_index (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ref_id TEXT NOT NULL UNIQUE, key_id INTEGER NOT NULL,
    api TEXT NOT NULL, created_at REAL NOT NULL, archive TEXT
);
CREATE TABLE IF NOT EXISTS summary (
    id INTEGER PRIMARY KEY, ref_id TEXT NOT NULL, api TEXT NOT NULL, queue TEXT, provider TEXT,
    model TEXT, key_id INTEGER NOT NULL, tag TEXT, state TEXT NOT NULL, attempts INTEGER,
    prompt_tokens INTEGER, completion_tokens INTEGER, duration_ms INTEGER, ttft_ms INTEGER,
    created_at REAL NOT NULL, month TEXT NOT NULL
);
DROP INDEX IF EXISTS summary_month;
CREATE INDEX IF NOT EXISTS summary_created ON summary (created_at);
"""
#: Usage columns of the main database's ``jobs`` (not of the archives: ``summary`` keeps them).
USAGE_COLUMNS = {"model": "TEXT", "prompt_tokens": "INTEGER", "completion_tokens": "INTEGER",
                 "ttft_ms": "INTEGER"}
# Databases from before the usage columns: finished jobs not yet archived take their usage
# from their summary rows, whose place the jobs rows now take until they are archived.
_ADOPT_SUMMARY = """
UPDATE jobs SET model = s.model, prompt_tokens = s.prompt_tokens, completion_tokens = s.completion_tokens,
    ttft_ms = s.ttft_ms FROM summary AS s WHERE s.id = jobs.id;
DELETE FROM summary WHERE id IN (SELECT id FROM jobs);
"""

_MIGRATIONS_TABLE = "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"


def _base_schema(conn: sqlite3.Connection) -> None:
    for statement in BASE_SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def _usage_on_jobs(conn: sqlite3.Connection) -> None:
    present = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    missing = [name for name in USAGE_COLUMNS if name not in present]
    if not missing:  # a database made after the columns came (before migrations were recorded)
        return
    for name in missing:
        conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {USAGE_COLUMNS[name]}")
    for statement in _ADOPT_SUMMARY.split(";"):
        if statement.strip():
            conn.execute(statement)


#: The migrations, in the order they run; a name, once released, never changes meaning.
MIGRATIONS: tuple[tuple[str, Callable[[sqlite3.Connection], None]], ...] = (
    ("0001_jobs_index_summary", _base_schema),
    ("0002_usage_on_jobs", _usage_on_jobs),
)


def migrate(conn: sqlite3.Connection,
            migrations: tuple[tuple[str, Callable[[sqlite3.Connection], None]], ...] = MIGRATIONS) -> list[str]:
    """Run the migrations ``conn``'s database has not recorded (each in its own transaction,
    with its record); the names of those that ran. ``conn`` is in autocommit mode."""
    conn.execute(_MIGRATIONS_TABLE)
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    ran = []
    for name, step in migrations:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(conn)
            conn.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        ran.append(name)
    return ran
