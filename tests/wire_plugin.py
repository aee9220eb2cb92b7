"""DTO routes for the wire-convention tests (loaded via ``plugins.load``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import attrs
from aiohttp import web
from aiport.core.hookspecs import hookimpl
from aiport.core.http.dto import api, field, response_model
from aiport.core.http.inputs import UploadedFile
from aiport.core.registry import RouteSpec


@attrs.define
class Size:
    width: int = field(required=True, ge=1)
    height: int | None = field(ge=1)


@response_model()
@attrs.define
class ProbeResponse:
    positive_prompt: str
    width: int | None = None
    ratio: float | None = None
    enabled: bool | None = None
    format: str | None = None
    tags: list[str] | None = None
    args: dict[str, Any] | None = None
    size: Size | None = None
    empty: str | None = None
    created: dt.datetime | None = None
    took: dt.timedelta | None = None
    files: dict[str, Any] | None = None


@api(routes=["/probe/{PositivePrompt}"], methods=("GET", "POST"), response=ProbeResponse,
     auth="none", uploads=True, tags=["test"])
@attrs.define
class Probe:
    """Echo what was parsed."""

    positive_prompt: str = field(required=True, max_length=20)
    width: int | None = field(ge=64, le=2048)
    ratio: float | None = field(gt=0)
    enabled: bool | None = field()
    format: Literal["png", "jpg", "webp"] | None = field()
    tags: list[str] | None = field(max_length=3)
    args: dict[str, Any] | None = field()
    size: Size | None = field()
    reply_to: str | None = field(aliases=["reply-to"])
    image: UploadedFile | None = field()


async def probe(request: web.Request, dto: Probe) -> ProbeResponse:
    files = {dto.image.field: {"size": dto.image.size, "sha256": dto.image.sha256,
                               "filename": dto.image.filename}} if dto.image else None
    return ProbeResponse(positive_prompt=dto.positive_prompt, width=dto.width, ratio=dto.ratio,
                         enabled=dto.enabled, format=dto.format, tags=dto.tags, args=dto.args,
                         size=dto.size, created=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
                         took=dt.timedelta(seconds=12.5), files=files)


@api(methods=("POST",), auth="none", naming="snake", routes=["/v1/echo"])
@attrs.define
class SnakeEcho:
    """An OpenAI-style DTO: snake_case names, OpenAI-shaped errors too."""

    max_tokens: int = field(required=True, ge=1)
    messages: list[dict[str, Any]] | None = field()


async def snake(request: web.Request, dto: SnakeEcho) -> dict[str, Any]:
    return {"max_tokens": dto.max_tokens, "finish_reason": None}


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("secret internals sk-abc123")


@hookimpl
def register_routes(register: Any) -> None:
    register(RouteSpec(handler=probe, dto=Probe))
    register(RouteSpec(handler=snake, dto=SnakeEcho))
    register(RouteSpec(method="GET", path="/boom", handler=boom))
