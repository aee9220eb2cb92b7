"""Typed keys for what an aiport app keeps on its ``web.Application``.

Everything per-app lives here, so two apps in one process share nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy
from aiohttp import ClientSession, web

if TYPE_CHECKING:
    from .api import ApiCatalog
    from .config import Config
    from .registry import Registry

CONFIG = web.AppKey("aiport.config", "Config")
PLUGIN_MANAGER = web.AppKey("aiport.plugin_manager", pluggy.PluginManager)
REGISTRY = web.AppKey("aiport.registry", "Registry")
CATALOG = web.AppKey("aiport.api_catalog", "ApiCatalog")
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
#: Providers from the config whose types are known, enabled and with their keys set.
RESOLVED_PROVIDERS = web.AppKey("aiport.resolved_providers", list)
