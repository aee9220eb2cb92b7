"""The app factory: ``create_app(config)`` builds (and never runs) an aiport app.

Everything the app needs is kept on its own ``web.AppKey``s and started in its
``cleanup_ctx``, so two apps in one process share nothing and an app works
mounted as a sub-application::

    parent.add_subapp("/ai/", create_app(load_config("aiport.yaml")))
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pluggy
import structlog
from aiohttp import web

from . import state
from .catalog import ModelCatalog
from .config import Config
from .errors import ConfigError
from .execution.providers import resolve_providers
from .execution.routing import ProviderManager
from .http import admin, chat, files, generation, jobs, keys, limits, metrics, ollama, transforms, ui
from .http.middleware import ACCESS_LOG, access_log_enabled, add_request_id, cors, errors, request_context
from .http.routes import ApiCatalog, add_api, add_plain
from .http.system import add_system_routes
from .jobs.callbacks import CallbackExecutor
from .jobs.engine import CALLBACK_API, CALLBACK_QUEUE, Clock, JobEngine, system_clock
from .plugins import build_plugin_manager
from .registry import Registry, collect
from .version import __version__

#: How many callbacks are delivered at once.
CALLBACK_CONCURRENCY = 16

log = structlog.get_logger("aiport.app")


def create_app(
    config: Config | None = None,
    *,
    plugin_manager: pluggy.PluginManager | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> web.Application:
    """Build an aiport app from ``config`` (default: the embedded defaults).

    Plugins are loaded and their registration hooks called here (sync, no I/O);
    a bad plugin or a provider the plugins cannot serve raises
    :class:`~aiport.core.errors.PluginError` / :class:`~aiport.core.errors.ConfigError`.
    Resources (HTTP client, stores, plugin resources) start when the app runs.
    ``clock`` (a callable returning an aware UTC ``datetime``) replaces the system clock.
    """
    config = config or Config()
    pm = plugin_manager or build_plugin_manager(config.plugins)
    registry = collect(pm, config)
    providers = resolve_providers(config, registry, environ)
    _check_storage(config, registry)

    cors_cfg = config.server.cors
    middlewares: list[Any] = [request_context]
    preflight, add_cors_headers = cors(cors_cfg.allow_origins, cors_cfg.allow_headers,
                                       cors_cfg.allow_credentials, cors_cfg.max_age)
    if cors_cfg.allow_origins:
        middlewares.append(preflight)
    middlewares.append(errors)

    app = web.Application(middlewares=middlewares, client_max_size=config.server.max_upload_size)
    app[state.CONFIG] = config
    app[state.PLUGIN_MANAGER] = pm
    app[state.REGISTRY] = registry
    app[state.CATALOG] = ApiCatalog()
    app[state.SPOOL_DIR] = config.resolve_path(config.storage.artifacts_path) / ".incoming"
    app[state.HEALTH_CHECKS] = {}
    app[state.RESOLVED_PROVIDERS] = providers
    app[state.CLOCK] = clock or system_clock
    app[state.MODELS] = ModelCatalog(registry.models, config.models)
    app[state.ENGINE_SETUP] = []
    app[state.REQUEST_END] = []
    app[ACCESS_LOG] = access_log_enabled(config.logging.level)

    app.on_response_prepare.append(add_request_id)
    if cors_cfg.allow_origins:
        app.on_response_prepare.append(add_cors_headers)

    add_system_routes(app)
    jobs.install(app)
    chat.install(app)
    ollama.install(app)
    transforms.install(app)
    files.install(app)
    generation.install(app)
    limits.install(app)
    metrics.install(app)
    admin.install(app)
    ui.install(app)
    _add_plugin_routes(app, registry)

    app.cleanup_ctx.append(_http_client)
    app.cleanup_ctx.append(_spool_dir)
    app.cleanup_ctx.append(files.artifact_store)
    app.cleanup_ctx.append(_jobs)
    app.cleanup_ctx.append(keys.key_service)
    app.cleanup_ctx.append(admin.runtime_providers)
    app.cleanup_ctx.append(metrics.observe_jobs)
    for resource in registry.resources:
        app.cleanup_ctx.append(resource.context)
    return app


def _check_storage(config: Config, registry: Registry) -> None:
    problems = []
    if config.storage.job_store not in registry.job_stores:
        problems.append(f"storage.job_store: no plugin provides the job store {config.storage.job_store!r}; "
                        f"known: {', '.join(registry.job_stores.names()) or 'none'}")
    if config.storage.artifact_store not in registry.artifact_stores:
        problems.append(f"storage.artifact_store: no plugin provides the artifact store "
                        f"{config.storage.artifact_store!r}; known: {', '.join(registry.artifact_stores.names())}")
    if config.routing.strategy not in registry.routing_strategies:
        problems.append(f"routing.strategy: no plugin provides the strategy {config.routing.strategy!r}; "
                        f"known: {', '.join(registry.routing_strategies.names()) or 'none'}")
    if problems:
        raise ConfigError(problems)


def _add_plugin_routes(app: web.Application, registry: Registry) -> None:
    for route, _owner in registry.routes:
        if route.dto is not None:
            add_api(app, route.dto, route.handler)
        else:
            add_plain(app, route.method, route.path, route.handler, route.summary)


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    """One outbound HTTP session per app, for providers and callbacks."""
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        # The session serves every caller: a cookie a backend (or a ReplyTo receiver) sets must
        # not ride along on other callers' requests. Not tracking cookies also saves work per call.
        cookie_jar=aiohttp.DummyCookieJar(),
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300),
    )
    app[state.HTTP] = session
    try:
        yield
    finally:
        await session.close()


async def _spool_dir(app: web.Application) -> AsyncIterator[None]:
    await asyncio.to_thread(app[state.SPOOL_DIR].mkdir, parents=True, exist_ok=True)
    yield


async def _jobs(app: web.Application) -> AsyncIterator[None]:
    """The job store, the engine, provider instances and callback delivery."""
    config = app[state.CONFIG]
    registry = app[state.REGISTRY]
    store = registry.job_stores[config.storage.job_store].factory(config)
    await store.open()
    engine = JobEngine(config, store, clock=app[state.CLOCK])
    app[state.ENGINE] = engine
    providers = ProviderManager(engine, app[state.MODELS])
    providers.strategy = registry.routing_strategies[config.routing.strategy].factory(config)
    resolved: list[Any] = app[state.RESOLVED_PROVIDERS]
    providers.build(resolved, app[state.HTTP], config, registry)
    app[state.PROVIDERS] = providers

    key = config.jobs.callback_signing_key or config.auth.admin_secret
    strategies = [(s.name, s.accepts, s.factory(config, app[state.HTTP])) for s in registry.callback_strategies]
    engine.add_queue(CALLBACK_QUEUE, CALLBACK_CONCURRENCY)
    engine.register_executor(CALLBACK_API, CallbackExecutor(strategies, key.reveal() if key else None,
                                                            f"aiport/{__version__}"))
    if not key:
        log.warning("ReplyTo callbacks are unsigned; set jobs.callback_signing_key to sign them")
    for setup in app[state.ENGINE_SETUP]:
        setup(app)

    async def jobs_health() -> dict[str, object]:
        counts = await store.queue_counts()
        return {"status": "ok", "queued": sum(c.get("Queued", 0) for c in counts.values()),
                "running": sum(c.get("Started", 0) for c in counts.values())}

    app[state.HEALTH_CHECKS]["jobs"] = jobs_health
    await engine.start()
    try:
        yield
    finally:
        await engine.stop()
        await providers.close()
        await store.close()
