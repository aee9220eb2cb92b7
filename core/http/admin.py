"""The admin APIs, and where each part lives.

All of them need the admin secret or an API key with the ``Admin`` scope
(``auth="admin"``); no response here ever carries a secret
(:mod:`~aiport.core.http.scrubbing`).

- :mod:`~aiport.core.http.admin_keys`: API keys (``CreateApiKey``, ``QueryApiKeys``...);
- :mod:`~aiport.core.http.admin_providers`: providers at run time (``CreateAiProvider``,
  ``CreateMediaProvider``, ``QueryAiProviders``, ``GetProviderHealth``...), on top of
  :mod:`~aiport.core.execution.provider_admin` (their lifecycle) and
  :mod:`~aiport.core.execution.provider_store` (their ``runtime_providers`` table);
- :mod:`~aiport.core.http.admin_stats`: ``GetSummaryStats``, ``GetWorkerStats``, ``AdminData``;
- :mod:`~aiport.core.http.admin_jobs`: the job browser (``QueryJobs``, ``AdminCancelJob``, ``RequeueJob``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from .. import state
from ..execution import provider_store
from ..execution.provider_admin import ProviderAdmin
from . import admin_jobs, admin_keys, admin_providers, admin_stats
from .keys import open_database


async def runtime_providers(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the engine's): open the providers table and start the stored providers."""
    config = app[state.CONFIG]
    db = await open_database(config.resolve_path(config.storage.database_path), provider_store.SCHEMA)
    admin = ProviderAdmin(app, provider_store.ProviderStore(db))
    app[state.PROVIDER_ADMIN] = admin
    try:
        await admin.load()
        yield
    finally:
        await db.close()


def install(app: web.Application) -> None:
    """Serve the admin APIs."""
    admin_keys.install(app)
    admin_providers.install(app)
    admin_stats.install(app)
    admin_jobs.install(app)
