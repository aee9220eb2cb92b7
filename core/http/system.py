"""Routes every aiport app has: liveness, health and the OpenAPI document."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .. import state
from ..version import __version__
from .openapi import build_openapi
from .routes import add_plain


async def up(request: web.Request) -> web.Response:
    """Liveness: 200 as soon as the app serves requests."""
    return web.Response(text="OK")


async def health(request: web.Request) -> web.Response:
    """Readiness: runs every registered health check; 503 when one fails."""
    checks = request.app[state.HEALTH_CHECKS]
    names = list(checks)
    results = await asyncio.gather(*(checks[n]() for n in names), return_exceptions=True)
    report: dict[str, dict[str, object]] = {}
    healthy = True
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            healthy = False
            report[name] = {"status": "error", "error": type(result).__name__}
        else:
            report[name] = result
            healthy = healthy and result.get("status", "ok") == "ok"
    body = {"status": "ok" if healthy else "degraded", "version": __version__, "checks": report}
    return web.json_response(body, status=200 if healthy else 503)


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3 document of this app; paths are relative to where the app is mounted."""
    doc = build_openapi(request.app, version=__version__)
    canonical = request.match_info.route.resource.canonical if request.match_info.route.resource else ""
    prefix = canonical[: -len("/openapi.json")] if canonical.endswith("/openapi.json") else ""
    if prefix:
        doc["servers"] = [{"url": prefix}]
    return web.json_response(doc)


def add_system_routes(app: web.Application) -> None:
    add_plain(app, "GET", "/up", up, "Liveness check", name="aiport-up")
    add_plain(app, "GET", "/health", health, "Readiness check with per-subsystem status")
    add_plain(app, "GET", "/openapi.json", openapi, "This OpenAPI document")
