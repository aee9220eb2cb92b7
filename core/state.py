"""Typed keys for what an aiport app keeps on its ``web.Application``.

Everything per-app lives here, so two apps in one process share nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy
from aiohttp import ClientSession, web

if TYPE_CHECKING:
    from .catalog import ModelCatalog
    from .config import Config
    from .execution.chat import ChatExecutor
    from .execution.provider_admin import ProviderAdmin
    from .execution.providers import ResolvedProvider
    from .execution.routing import ProviderManager
    from .http.auth import Principal
    from .http.inputs import RequestInput
    from .http.keys import KeyService
    from .http.routes import ApiCatalog
    from .interfaces import ArtifactStore
    from .jobs.engine import Clock, JobEngine
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
HEALTH_CHECKS: web.AppKey[dict[str, Callable[[], Awaitable[dict[str, object]]]]] = web.AppKey("aiport.health_checks")
#: API keys: the key store and fast verification, started in ``cleanup_ctx``.
KEYS: web.AppKey[KeyService] = web.AppKey("aiport.keys")
#: Where generated files and uploads are kept, started in ``cleanup_ctx``.
ARTIFACTS: web.AppKey[ArtifactStore] = web.AppKey("aiport.artifacts")
#: The job engine (and through it the job store), started in ``cleanup_ctx``.
ENGINE: web.AppKey[JobEngine] = web.AppKey("aiport.engine")
#: Runs chat jobs and streamed chat calls, made at start-up once the engine exists.
CHAT: web.AppKey[ChatExecutor] = web.AppKey("aiport.chat")
#: Provider instances, health and routing, started in ``cleanup_ctx``.
PROVIDERS: web.AppKey[ProviderManager] = web.AppKey("aiport.providers")
#: The model catalog (families and tags), built in ``create_app``.
MODELS: web.AppKey[ModelCatalog] = web.AppKey("aiport.models")
#: The app's clock (UTC ``datetime``); tests inject one.
CLOCK: web.AppKey[Clock] = web.AppKey("aiport.clock")
#: Functions ``(app) -> None`` run at start-up once the engine exists, before it starts
#: (feature modules register their executors and queues here).
ENGINE_SETUP: web.AppKey[list[Callable[[web.Application], None]]] = web.AppKey("aiport.engine_setup")
#: Functions ``(request, response, status, seconds) -> None`` the request middleware calls when
#: a request has ended (``response`` is ``None`` when the handler raised): metrics, limit places.
#: Plain calls rather than middlewares of their own: each middleware layer costs every request.
REQUEST_END: web.AppKey[list[Callable[[web.Request, web.StreamResponse | None, int, float], None]]] = (
    web.AppKey("aiport.request_end"))
#: Providers from the config whose types are known, enabled and with their keys set.
RESOLVED_PROVIDERS: web.AppKey[list[ResolvedProvider]] = web.AppKey("aiport.resolved_providers")
#: Providers added, changed and removed at run time, started in ``cleanup_ctx`` after the engine.
PROVIDER_ADMIN: web.AppKey[ProviderAdmin] = web.AppKey("aiport.provider_admin")

# Per-request storage.
REQUEST_ID = web.RequestKey("aiport.request_id", str)
#: The caller, once :func:`aiport.core.http.auth.authorize` ran.
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("aiport.principal")
#: The parsed input, for handlers that need the raw body or the uploaded files.
INPUT: web.RequestKey[RequestInput] = web.RequestKey("aiport.input")
#: Set on OpenAI-shaped APIs: errors also carry OpenAI's ``error`` object.
OPENAI_ERRORS = web.RequestKey("aiport.openai_errors", bool)
