"""Plugins used by the hook tests: one implementation of every hook, loaded via ``plugins.load``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
from aiohttp import web
from aiport.core.hookspecs import hookimpl
from aiport.core.http.dto import api, field, response_model
from aiport.core.registry import (
    ArtifactStoreType,
    CallbackStrategyType,
    ChatProviderType,
    JobStoreType,
    MediaProviderType,
    ModelSpec,
    ResourceSpec,
    RouteSpec,
    RoutingStrategySpec,
    TransformSpec,
    WorkflowSpec,
)

EVENTS: list[str] = []


@attrs.frozen
class ReverseOptions:
    """Options of the test chat type: extra provider keys land here."""

    uppercase: bool = False


class ReverseChat:
    """A chat provider that answers with the last user message reversed."""

    def __init__(self, ctx: Any) -> None:
        self.name = ctx.provider.name
        self.uppercase = ctx.options.uppercase

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        text = body["messages"][-1]["content"][::-1]
        return {"choices": [{"message": {"role": "assistant", "content": text.upper() if self.uppercase else text}}]}


@hookimpl
def register_chat_providers(register: Any) -> None:
    register(ChatProviderType(name="reverse", factory=ReverseChat, options=ReverseOptions,
                              description="test", api_models={"rev-1": "reverse-v1"}))


@hookimpl
def register_models(register: Any) -> None:
    register(ModelSpec(name="tinyllm", tags=("1b", "2b"), latest="2b", description="test family"))


@hookimpl
def register_media_providers(register: Any, config: Any) -> None:
    register(MediaProviderType(name="test-media", factory=lambda ctx: None,
                               tasks=frozenset({"TextToImage"})))


@hookimpl
def register_workflows(register: Any) -> None:
    register(WorkflowSpec(name="test-t2i", task="TextToImage",
                          template={"3": {"class_type": "KSampler", "inputs": {"seed": "{{seed}}"}}},
                          defaults={"seed": 1}))


async def _invert(request: Any) -> list[Any]:
    return []


@hookimpl
def register_transforms(register: Any) -> None:
    register(TransformSpec(name="InvertImage", kind="image", run=_invert))


@hookimpl
def register_artifact_stores(register: Any) -> None:
    register(ArtifactStoreType(name="memory", factory=lambda config: {}))


@hookimpl
def register_job_stores(register: Any) -> None:
    register(JobStoreType(name="memory", factory=lambda config: {}))


@hookimpl
def register_callback_strategies(register: Any) -> None:
    register(CallbackStrategyType(name="mailto", accepts=lambda url: url.startswith("mailto:"),
                                  factory=lambda config, http: None))


@response_model()
@attrs.define
class ShoutResponse:
    text: str
    length: int


@api(routes=["/shout/{Text}"], methods=("GET", "POST"), response=ShoutResponse, auth="none")
@attrs.define
class Shout:
    """Upper-case a text."""

    text: str = field(required=True, max_length=50)
    times: int = field(default=1, ge=1, le=3)


async def shout(request: web.Request, dto: Shout) -> ShoutResponse:
    text = " ".join([dto.text.upper()] * dto.times)
    return ShoutResponse(text=text, length=len(text))


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="pong")


@hookimpl
def register_routes(register: Any) -> None:
    register(RouteSpec(handler=shout, dto=Shout))
    register(RouteSpec(method="GET", path="/ping", handler=ping, summary="Ping"))


async def _resource(app: web.Application) -> AsyncIterator[None]:
    EVENTS.append("start")
    yield
    EVENTS.append("stop")


@hookimpl
def register_resources(register: Any) -> None:
    register(ResourceSpec(name="test-resource", context=_resource))


def _reverse_order(candidates: list[Any]) -> list[Any]:
    return sorted(candidates, key=lambda p: p.order, reverse=True)


@hookimpl
def register_routing_strategies(register: Any) -> None:
    register(RoutingStrategySpec(name="last-first", factory=lambda config: _reverse_order))
