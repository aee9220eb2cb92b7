"""Serving request DTOs: route them, parse and validate input, render output.

:func:`add_api` binds a DTO class (see :mod:`aiport.core.http.dto`) to an async
handler ``handler(request, dto)`` on an app, at ``/api/{DtoName}`` plus the
DTO's custom routes. The handler returns an attrs response object, a dict
(sent as it is, e.g. OpenAI bodies), or any aiohttp response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web

from .. import state
from ..jsoncodec import dumps
from .auth import authorize
from .dto import ApiMeta, api_meta, build, to_wire
from .inputs import discard_files, read_input

Handler = Callable[[web.Request, Any], Awaitable[Any]]


@attrs.frozen
class ApiEntry:
    dto: type
    meta: ApiMeta
    paths: tuple[str, ...]


@attrs.define
class ApiCatalog:
    """Every DTO route of an app, for the OpenAPI document and the admin UI."""

    entries: list[ApiEntry] = attrs.field(factory=list)
    #: (method, path) of plain routes added without a DTO, with their summary.
    plain: list[tuple[str, str, str]] = attrs.field(factory=list)

    def by_name(self, name: str) -> ApiEntry | None:
        return next((e for e in self.entries if e.meta.name == name), None)


def render(result: Any, status: int = 200) -> web.StreamResponse:
    """An HTTP response for a handler's result."""
    if isinstance(result, web.StreamResponse):
        return result
    return web.json_response(to_wire(result), status=status, dumps=dumps)


def dto_handler(dto_cls: type, func: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    meta = api_meta(dto_cls)

    async def handle(request: web.Request) -> web.StreamResponse:
        if meta.naming == "snake":
            request[state.OPENAI_ERRORS] = True
        await authorize(request, meta)
        config = request.app[state.CONFIG]
        inp = await read_input(request, limit=config.server.max_upload_size,
                               spool_dir=request.app[state.SPOOL_DIR], allow_files=meta.uploads)
        try:
            dto = build(dto_cls, inp.data, files=inp.files_by_field())
            request[state.INPUT] = inp
            return render(await func(request, dto))
        finally:
            # Handlers move the uploads they keep; whatever is left is spool garbage.
            discard_files(inp.files)

    handle.__name__ = f"api_{meta.name}"
    return handle


def to_aiohttp_path(path: str) -> str:
    """AI Server's ``{**Path}`` catch-all becomes aiohttp's ``{path:.*}``."""
    out = []
    for part in path.split("/"):
        if part.startswith("{**") and part.endswith("}"):
            out.append("{" + part[3:-1] + ":.*}")
        else:
            out.append(part)
    return "/".join(out)


def add_api(app: web.Application, dto_cls: type, func: Handler) -> ApiEntry:
    """Serve ``dto_cls`` with ``func`` on ``app`` and list it in the app's catalog."""
    meta = api_meta(dto_cls)
    handler = dto_handler(dto_cls, func)
    paths = (f"/api/{meta.name}", *meta.routes)
    for path in paths:
        for method in meta.methods:
            app.router.add_route(method, to_aiohttp_path(path), handler)
    entry = ApiEntry(dto=dto_cls, meta=meta, paths=paths)
    app[state.CATALOG].entries.append(entry)
    return entry


def add_plain(app: web.Application, method: str, path: str, handler: Callable[..., Any],
              summary: str = "", name: str | None = None) -> None:
    """A route without a DTO (health checks, file downloads); still listed in the OpenAPI document."""
    app.router.add_route(method, path, handler, name=name)
    app[state.CATALOG].plain.append((method.upper(), path, summary))


def base_url(request: web.Request) -> str:
    """The absolute URL of the aiport app for this request (``server.public_base_url`` if set),
    including the prefix it is mounted under, without a trailing slash."""
    configured = request.app[state.CONFIG].server.public_base_url
    if configured:
        return configured.rstrip("/")
    prefix = ""
    resource = request.app.router.named_resources().get("aiport-up")
    if resource is not None:
        prefix = resource.canonical.removesuffix("/up")
    return f"{request.scheme}://{request.host}{prefix}"
