"""The ``runtime_providers`` table: providers an admin added while aiport ran.

A row is what the admin sent, normalised (the provider type resolved, models as
``{model, api_model}`` entries); :meth:`ProviderRow.as_config` turns it into the
``providers:`` entry the config checks and starts. The API key is stored as given,
since aiport has to send it; everything shown to people masks it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import aiosqlite
import attrs

SCHEMA = """
CREATE TABLE IF NOT EXISTS runtime_providers (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, name TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    type_id TEXT, base_url TEXT, api_key TEXT, api_key_env TEXT, api_key_header TEXT, heartbeat_url TEXT,
    concurrency INTEGER NOT NULL DEFAULT 1, priority INTEGER NOT NULL DEFAULT 0, weight INTEGER,
    enabled INTEGER NOT NULL DEFAULT 1, timeout REAL, models TEXT NOT NULL DEFAULT '[]',
    options TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, updated_at REAL NOT NULL
);
"""
_COLUMNS = ("id", "kind", "name", "type", "type_id", "base_url", "api_key", "api_key_env", "api_key_header",
            "heartbeat_url", "concurrency", "priority", "weight", "enabled", "timeout", "models", "options",
            "created_at", "updated_at")

#: Option names whose values are treated as secrets (masked, scrubbed, kept out of logs).
SECRET_OPTION = re.compile(r"(?i)key|secret|token|password|passwd|auth|credential")


def secret_values(api_key: str | None, options: Mapping[str, Any]) -> list[str]:
    """A provider's secret values: its API key and its secret-looking options."""
    found = [api_key] if api_key else []
    found += [str(v) for k, v in options.items() if SECRET_OPTION.search(k) and v]
    return found


@attrs.frozen
class ProviderRow:
    """A provider added at run time, as stored. ``api_key`` is kept as given: aiport must send it."""

    id: int
    kind: str
    name: str
    type: str
    type_id: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    api_key_header: str | None = None
    heartbeat_url: str | None = None
    concurrency: int = 1
    priority: int = 0
    weight: int | None = None
    enabled: bool = True
    timeout: float | None = None
    #: ``[{"model": gateway id, "api_model": provider's id or None}]``
    models: tuple[Mapping[str, Any], ...] = ()
    options: Mapping[str, Any] = attrs.field(factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0

    def as_config(self) -> dict[str, Any]:
        """The provider as a YAML ``providers:`` entry would say it."""
        data: dict[str, Any] = {
            "name": self.name, "type": self.type, "enabled": self.enabled, "base_url": self.base_url,
            "api_key": self.api_key, "api_key_env": self.api_key_env, "api_key_header": self.api_key_header,
            "heartbeat_url": self.heartbeat_url, "concurrency": self.concurrency, "priority": self.priority,
            "weight": self.weight, "timeout": self.timeout,
            "models": [{"model": m["model"], "api_model": m["api_model"]} if m.get("api_model") else m["model"]
                       for m in self.models],
        }
        data = {k: v for k, v in data.items() if v is not None}
        data.update(self.options)
        return data

    def secret_values(self) -> list[str]:
        """The row's API key and secret-looking options."""
        return secret_values(self.api_key, self.options)


def _row(values: Any) -> ProviderRow:
    r = dict(zip(_COLUMNS, values, strict=True))
    r["enabled"] = bool(r["enabled"])
    r["models"] = tuple(json.loads(r["models"] or "[]"))
    r["options"] = json.loads(r["options"] or "{}")
    return ProviderRow(**r)


class ProviderStore:
    """The ``runtime_providers`` table, on a connection with :data:`SCHEMA` applied."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def all(self) -> list[ProviderRow]:
        """Every stored provider, oldest first."""
        rows = await self.db.execute_fetchall(f"SELECT {', '.join(_COLUMNS)} FROM runtime_providers ORDER BY id")
        return [_row(r) for r in rows]

    async def save(self, row: ProviderRow) -> ProviderRow:
        """Insert (``id`` 0) or replace a row; returns it with its id."""
        values = attrs.asdict(row)
        values["models"] = json.dumps([dict(m) for m in row.models])
        values["options"] = json.dumps(dict(row.options))
        values["enabled"] = int(row.enabled)
        columns = [c for c in _COLUMNS if c != "id" or row.id]
        cursor = await self.db.execute(
            f"INSERT OR REPLACE INTO runtime_providers ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [values[c] for c in columns])
        new_id = row.id or int(cursor.lastrowid or 0)
        await cursor.close()
        return attrs.evolve(row, id=new_id)

    async def delete(self, row_id: int) -> None:
        """Remove a row (a missing one is no error)."""
        await self.db.execute("DELETE FROM runtime_providers WHERE id = ?", (row_id,))
