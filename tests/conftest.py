"""Shared fixtures: configs in a temp folder, and apps served over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiport.core import create_app, parse_config
from aiport.core.config import Config


@pytest.fixture
def make_config(tmp_path: Any) -> Callable[..., Config]:
    """``make_config({...yaml-like dict...})``: a Config whose storage lives in ``tmp_path``."""

    def make(data: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Config:
        data = dict(data or {})
        storage = dict(data.get("storage") or {})
        storage.setdefault("database_path", str(tmp_path / "aiport.db"))
        storage.setdefault("artifacts_path", str(tmp_path / "artifacts"))
        data["storage"] = storage
        return parse_config(data, environ=environ or {}, base_dir=str(tmp_path))

    return make


@pytest.fixture
def make_client(aiohttp_client: Any, make_config: Callable[..., Config]) -> Callable[..., Any]:
    """``await make_client({...config...})``: a test client for a fresh aiport app on loopback."""

    async def make(data: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Any:
        return await aiohttp_client(create_app(make_config(data, environ), environ=environ or {}))

    return make


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An outbound HTTP session, as a provider gets from the app (for provider-level tests)."""
    async with aiohttp.ClientSession() as session:
        yield session
