"""API keys: the store (SQLite, beside the jobs) and the service that checks them.

A key's secret (``ak-`` + 32 URL-safe characters, the shape ServiceStack's keys
have) is shown once, when it is made. The database keeps only its SHA-256 hash
and a visible prefix (``ak-AbCd****``), so a copy of the database does not give
anyone a working key. A key carries:

- ``scopes``: ``Admin`` gives full access (the admin APIs included);
- ``restrict_to``: the API names (DTO names such as ``TextToImage``) it may call;
  empty means any;
- an expiry date, a revocation date and notes;
- per-key limits: requests per minute, concurrent requests, chat tokens per minute
  (enforced by :mod:`aiport.core.http.limits`).

:meth:`KeyService.verify` is on every request's path: it looks the key up by its
hash, compares the stored hash in constant time and caches what it found for a
few seconds (writes through this process clear the cache; a change made by
another process, e.g. ``aiport keys revoke``, takes effect within
:data:`CACHE_SECONDS`).

Key ids are never reused (``AUTOINCREMENT``): jobs and stored files are scoped to
a key id, so a new key must never inherit an old key's history.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import attrs
import structlog
from aiohttp import web

from .. import state
from ..config import Config
from .auth import Principal

log = structlog.get_logger("aiport.keys")

#: The scope that makes a key an administrator.
ADMIN_SCOPE = "Admin"
#: How long a verified (or unknown) key is trusted from memory before the database is asked again.
CACHE_SECONDS = 10.0
#: Entries kept in the verification cache before it is emptied (bounds memory under key guessing).
CACHE_LIMIT = 10_000
KEY_PREFIX = "ak-"
#: Shortest and longest secret accepted at all; anything else is refused without a lookup.
MIN_KEY_LENGTH = 20
MAX_KEY_LENGTH = 200
_KEY_CHARS = re.compile(r"[A-Za-z0-9_\-.~]+")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    visible_key TEXT NOT NULL,
    scopes TEXT NOT NULL DEFAULT '[]',
    restrict_to TEXT NOT NULL DEFAULT '[]',
    notes TEXT, user_id TEXT, user_name TEXT, ref_id TEXT,
    created_at REAL NOT NULL, expires_at REAL, revoked_at REAL,
    rpm INTEGER, concurrency INTEGER, tpm INTEGER
);
"""
_COLUMNS = ("id", "name", "key_hash", "visible_key", "scopes", "restrict_to", "notes", "user_id", "user_name",
            "ref_id", "created_at", "expires_at", "revoked_at", "rpm", "concurrency", "tpm")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM api_keys"


def hash_key(secret: str) -> str:
    """The SHA-256 hex digest a key is stored and looked up by."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A fresh key: ``ak-`` and 32 URL-safe random characters (192 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def visible(secret: str) -> str:
    """The part of a key that may be shown again: its first 7 characters."""
    return secret[:7] + "****"


def _ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


@attrs.frozen
class ApiKey:
    """One stored key (never its secret)."""

    id: int
    name: str
    key_hash: str
    visible_key: str
    scopes: tuple[str, ...] = ()
    restrict_to: tuple[str, ...] = ()
    notes: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    ref_id: str | None = None
    created_at: dt.datetime = attrs.field(factory=lambda: dt.datetime.now(dt.UTC))
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    #: Requests per minute (``None``: no limit).
    rpm: int | None = None
    #: Requests running at once.
    concurrency: int | None = None
    #: Chat tokens (prompt + completion) per minute.
    tpm: int | None = None

    @property
    def is_admin(self) -> bool:
        return any(s.lower() == ADMIN_SCOPE.lower() for s in self.scopes)

    def active(self, now: dt.datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def principal(self) -> Principal:
        return Principal(key_id=self.id, is_admin=self.is_admin, name=self.name,
                         restrict_to=frozenset(self.restrict_to), scopes=frozenset(self.scopes),
                         authenticated=True, rpm=self.rpm, concurrency=self.concurrency, tpm=self.tpm)


def _row_to_key(row: Sequence[Any]) -> ApiKey:
    r = dict(zip(_COLUMNS, row, strict=True))
    return ApiKey(
        id=r["id"], name=r["name"], key_hash=r["key_hash"], visible_key=r["visible_key"],
        scopes=tuple(json.loads(r["scopes"] or "[]")), restrict_to=tuple(json.loads(r["restrict_to"] or "[]")),
        notes=r["notes"], user_id=r["user_id"], user_name=r["user_name"], ref_id=r["ref_id"],
        created_at=_dt(r["created_at"]) or dt.datetime.now(dt.UTC), expires_at=_dt(r["expires_at"]),
        revoked_at=_dt(r["revoked_at"]), rpm=r["rpm"], concurrency=r["concurrency"], tpm=r["tpm"])


def _limit(value: int | None) -> int | None:
    """0 or less means "no limit", stored as NULL."""
    return value if value is not None and value > 0 else None


async def open_database(path: Path, schema: str) -> aiosqlite.Connection:
    """An autocommit connection to the app's SQLite database in WAL mode, with ``schema`` applied."""
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;"
                                 + schema)
    except BaseException:
        await conn.close()
        raise
    return conn


# Fields :meth:`KeyStore.update` may change, and their columns.
_UPDATABLE = {"name": "name", "scopes": "scopes", "restrict_to": "restrict_to", "notes": "notes",
              "user_id": "user_id", "user_name": "user_name", "ref_id": "ref_id", "expires_at": "expires_at",
              "rpm": "rpm", "concurrency": "concurrency", "tpm": "tpm"}


class KeyStore:
    """API keys in the ``api_keys`` table of ``storage.database_path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self._db = await open_database(self.path, _SCHEMA)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the key store is not open")
        return self._db

    async def create(self, name: str, *, now: dt.datetime, secret: str | None = None,
                     scopes: Iterable[str] = (), restrict_to: Iterable[str] = (), notes: str | None = None,
                     user_id: str | None = None, user_name: str | None = None, ref_id: str | None = None,
                     expires_at: dt.datetime | None = None, rpm: int | None = None,
                     concurrency: int | None = None, tpm: int | None = None) -> tuple[ApiKey, str]:
        """Store a new key; returns it and its secret (the only time the secret is known)."""
        secret = secret or new_secret()
        cursor = await self.db.execute(
            "INSERT INTO api_keys (name, key_hash, visible_key, scopes, restrict_to, notes, user_id, user_name, "
            "ref_id, created_at, expires_at, rpm, concurrency, tpm) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, hash_key(secret), visible(secret), json.dumps(list(scopes)), json.dumps(list(restrict_to)), notes,
             user_id, user_name, ref_id, now.timestamp(), _ts(expires_at), _limit(rpm), _limit(concurrency),
             _limit(tpm)))
        key_id = int(cursor.lastrowid or 0)
        await cursor.close()
        key = await self.get(key_id)
        assert key is not None
        return key, secret

    async def get(self, key_id: int) -> ApiKey | None:
        rows = list(await self.db.execute_fetchall(f"{_SELECT} WHERE id = ?", (key_id,)))
        return _row_to_key(rows[0]) if rows else None

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        rows = list(await self.db.execute_fetchall(f"{_SELECT} WHERE key_hash = ?", (key_hash,)))
        return _row_to_key(rows[0]) if rows else None

    async def list(self, *, key_id: int | None = None, name: str | None = None, include_revoked: bool = True,
                   limit: int = 1000, offset: int = 0) -> tuple[list[ApiKey], int]:
        """Keys (newest first) and how many match in all."""
        where: list[str] = []
        params: list[Any] = []
        if key_id is not None:
            where.append("id = ?")
            params.append(key_id)
        if name:
            where.append("name = ?")
            params.append(name)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self.db.execute_fetchall(f"{_SELECT}{clause} ORDER BY id DESC LIMIT ? OFFSET ?",
                                              (*params, limit, offset))
        total = await self.db.execute_fetchall(f"SELECT COUNT(*) FROM api_keys{clause}", params)
        return [_row_to_key(r) for r in rows], int(next(iter(total))[0])

    async def update(self, key_id: int, **changes: Any) -> ApiKey | None:
        """Change the given fields (see ``_UPDATABLE``); ``None`` values clear them."""
        sets, params = [], []
        for field, value in changes.items():
            column = _UPDATABLE[field]
            if field in ("scopes", "restrict_to"):
                value = json.dumps(list(value or ()))
            elif field == "expires_at":
                value = _ts(value)
            elif field in ("rpm", "concurrency", "tpm"):
                value = _limit(value)
            sets.append(f"{column} = ?")
            params.append(value)
        if sets:
            await self.db.execute(f"UPDATE api_keys SET {', '.join(sets)} WHERE id = ?", (*params, key_id))
        return await self.get(key_id)

    async def revoke(self, key_id: int, now: dt.datetime) -> ApiKey | None:
        """Mark a key revoked (it stays listed); revoking twice keeps the first date."""
        await self.db.execute("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                              (now.timestamp(), key_id))
        return await self.get(key_id)

    async def delete(self, key_id: int) -> bool:
        cursor = await self.db.execute("DELETE FROM api_keys WHERE id = ?", (key_id,))
        deleted = cursor.rowcount == 1
        await cursor.close()
        return deleted

    async def count(self, *, active_at: dt.datetime | None = None) -> int:
        if active_at is None:
            rows = await self.db.execute_fetchall("SELECT COUNT(*) FROM api_keys")
        else:
            rows = await self.db.execute_fetchall(
                "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
                (active_at.timestamp(),))
        return int(next(iter(rows))[0])


@attrs.define
class _Cached:
    key: ApiKey | None
    principal: Principal | None
    at: float


class KeyService:
    """The store plus fast verification; kept on ``state.KEYS``."""

    def __init__(self, store: KeyStore, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.clock = clock
        self._cache: dict[str, _Cached] = {}

    async def verify(self, token: str) -> Principal | None:
        """The principal of a valid, unexpired, unrevoked key; ``None`` for anything else.

        Callers must not tell "unknown" from "expired" or "revoked": all are ``None``.
        """
        if not MIN_KEY_LENGTH <= len(token) <= MAX_KEY_LENGTH or not _KEY_CHARS.fullmatch(token):
            return None
        digest = hash_key(token)
        current = self.clock()
        now = current.timestamp()
        entry = self._cache.get(digest)
        if entry is None or not 0 <= now - entry.at <= CACHE_SECONDS:
            key = await self.store.by_hash(digest)
            entry = _Cached(key=key, principal=key.principal() if key else None, at=now)
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = entry
        key = entry.key
        # The lookup was by hash already; comparing the stored hash in constant time as well
        # keeps a lookup-structure quirk from ever turning into a timing oracle.
        if key is None or not hmac.compare_digest(key.key_hash, digest):
            return None
        if not key.active(current):
            return None
        return entry.principal

    def invalidate(self) -> None:
        """Forget every cached verification (after a key changed)."""
        self._cache.clear()

    async def create(self, name: str, **fields: Any) -> tuple[ApiKey, str]:
        key, secret = await self.store.create(name, now=self.clock(), **fields)
        log.info("API key created", key_id=key.id, name=key.name, scopes=list(key.scopes))
        return key, secret

    async def update(self, key_id: int, **changes: Any) -> ApiKey | None:
        key = await self.store.update(key_id, **changes)
        self.invalidate()
        if key is not None:
            log.info("API key updated", key_id=key_id, fields=sorted(changes))
        return key

    async def revoke(self, key_id: int) -> ApiKey | None:
        key = await self.store.revoke(key_id, self.clock())
        self.invalidate()
        if key is not None:
            log.info("API key revoked", key_id=key_id)
        return key

    async def delete(self, key_id: int) -> bool:
        deleted = await self.store.delete(key_id)
        self.invalidate()
        if deleted:
            log.info("API key deleted", key_id=key_id)
        return deleted


def key_store_for(config: Config) -> KeyStore:
    """The key store of a config's database (used by the app and by ``aiport keys``)."""
    return KeyStore(config.resolve_path(config.storage.database_path))


async def key_service(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the key store and set ``state.KEYS``."""
    store = key_store_for(app[state.CONFIG])
    await store.open()
    app[state.KEYS] = KeyService(store, app[state.CLOCK])
    try:
        yield
    finally:
        await store.close()


def is_integrity_error(exc: BaseException) -> bool:
    """A UNIQUE constraint failed (a caller-chosen key that already exists)."""
    return isinstance(exc, sqlite3.IntegrityError)
