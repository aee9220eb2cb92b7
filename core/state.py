"""Typed keys for what an aiport app keeps on its ``web.Application``.

Everything per-app lives here, so two apps in one process share nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy
from aiohttp import ClientSession, web

if TYPE_CHECKING:
    from .catalog import ModelCatalog
    from .config import Config
    from .execution.routing import ProviderManager
    from .http.routes import ApiCatalog
    from .jobs.engine import JobEngine
    from .registry import Registry

CONFIG: web.AppKey[Config] = web.AppKey("aiport.config")
PLUGIN_MANAGER = web.AppKey("aiport.plugin_manager", pluggy.PluginManager)
REGISTRY: web.AppKey[Registry] = web.AppKey("aiport.registry")
CATALOG: web.AppKey[ApiCatalog] = web.AppKey("aiport.api_catalog")
#: Shared outbound HTTP client (providers, callbacks); made at start-up.
HTTP = web.AppKey("aiport.http", ClientSession)
#: Folder uploads are spooled to before they are kept or discarded.
SPOOL_DIR = web.AppKey("aiport.spool_dir", Path)
#: Health checks plugins and subsystems add: name -> async callable returning a dict.
HEALTH_CHECKS = web.AppKey("aiport.health_checks", dict)
#: Free-form per-app services keyed by name (job engine, stores, router), set at start-up.
SERVICES = web.AppKey("aiport.services", dict)


def services(app: web.Application) -> dict[str, Any]:
    return app[SERVICES]
#: The job engine (and through it the job store), started in ``cleanup_ctx``.
ENGINE: web.AppKey[JobEngine] = web.AppKey("aiport.engine")
#: Provider instances, health and routing, started in ``cleanup_ctx``.
PROVIDERS: web.AppKey[ProviderManager] = web.AppKey("aiport.providers")
#: The model catalog (families and tags), built in ``create_app``.
MODELS: web.AppKey[ModelCatalog] = web.AppKey("aiport.models")
#: The app's clock (UTC ``datetime``); tests inject one.
CLOCK = web.AppKey("aiport.clock", object)
#: Functions ``(app) -> None`` run at start-up once the engine exists, before it starts
#: (feature modules register their executors and queues here).
ENGINE_SETUP = web.AppKey("aiport.engine_setup", list)
#: Functions ``(request, response, status, seconds) -> None`` the request middleware calls when
#: a request has ended (``response`` is ``None`` when the handler raised): metrics, limit places.
#: Plain calls rather than middlewares of their own: each middleware layer costs every request.
REQUEST_END = web.AppKey("aiport.request_end", list)
#: Providers from the config whose types are known, enabled and with their keys set.
RESOLVED_PROVIDERS: web.AppKey[list[Any]] = web.AppKey("aiport.resolved_providers")

# Per-request storage.
REQUEST_ID = web.RequestKey("aiport.request_id", str)
#: The caller (an ``aiport.core.http.auth.Principal``).
PRINCIPAL = web.RequestKey("aiport.principal", object)
#: The parsed input (``aiport.core.http.inputs.RequestInput``), for handlers that need the raw files.
INPUT = web.RequestKey("aiport.input", object)
#: Set on OpenAI-shaped APIs: errors also carry OpenAI's ``error`` object.
OPENAI_ERRORS = web.RequestKey("aiport.openai_errors", bool)
