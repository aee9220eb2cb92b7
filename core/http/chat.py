"""Chat APIs: OpenAI's ``/v1/chat/completions`` and AI Server's chat DTOs, on the job engine.

- Non-streamed calls are jobs on the chosen provider's queue: the sync style
  waits for the job, the queued style returns its reference at once, and a
  ``ReplyTo`` gets the completion when it is done. A retryable failure moves the
  job to the next provider that serves the model (failover).
- Streamed calls (``stream: true``) flow straight from the backend to the client
  as server-sent events, holding one of the provider's slots; until the first
  byte reaches the client a failing provider is replaced by the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import structlog
from aiohttp import web

from .. import jsoncodec, state
from ..errors import BadRequest, NotFound, ProviderError
from ..execution.chat import ChatExecutor
from ..execution.routing import ProviderManager, RuntimeProvider
from ..jobs.model import Job, JobSpec
from ..jsoncodec import dumps
from .auth import authorize
from .dto import api, api_meta, field, response_model
from .jobs import (
    QueueOpenAiChatResponse,
    call,
    principal_of,
    status_url,
    submit,
)
from .routes import add_api, add_plain

log = structlog.get_logger("aiport.chat")

PROVIDERS = state.PROVIDERS
CHAT_API = "OpenAiChatCompletion"
#: Keys of aiport's own that are never sent to a backend.
GATEWAY_KEYS = {"refid", "provider", "tag", "replyto", "request"}


@api(routes=["/v1/chat/completions"], methods=("POST",), auth="key", naming="snake",
     summary="OpenAI-compatible chat completion (stream: true for server-sent events)", tags=["chat"])
@attrs.define
class OpenAiChatCompletion:
    """An OpenAI chat-completions request, plus AI Server's ``RefId``, ``Provider`` and ``Tag``.

    Fields not listed here (``logprobs``, ``user``, ``parallel_tool_calls``...) are passed
    through to backends that accept them.
    """

    model: str = field(required=True, max_length=200)
    messages: list[dict[str, Any]] = field(required=True, min_length=1, max_length=10_000)
    max_tokens: int | None = field(ge=1)
    max_completion_tokens: int | None = field(ge=1)
    temperature: float | None = field(ge=0, le=2)
    top_p: float | None = field(ge=0, le=1)
    n: int | None = field(ge=1, le=1)
    stream: bool | None = field()
    stream_options: dict[str, Any] | None = field()
    stop: Any = field()
    seed: int | None = field()
    tools: list[dict[str, Any]] | None = field(max_length=128)
    tool_choice: Any = field()
    response_format: dict[str, Any] | None = field()
    frequency_penalty: float | None = field(ge=-2, le=2)
    presence_penalty: float | None = field(ge=-2, le=2)
    ref_id: str | None = field(max_length=200, description="Client reference, unique; used to poll")
    provider: str | None = field(description="Force this provider (aiport honours it; AI Server ignores it)")
    tag: str | None = field(max_length=200)


@api(methods=("POST",), auth="key", response=QueueOpenAiChatResponse, tags=["chat"])
@attrs.define
class QueueOpenAiChatCompletion:
    """Queue a chat completion; poll ``statusUrl`` or get it POSTed to ``ReplyTo``."""

    request: dict[str, Any] = field(required=True, description="The OpenAI chat request")
    ref_id: str | None = field(max_length=200)
    provider: str | None = field()
    reply_to: str | None = field(max_length=2000)
    tag: str | None = field(max_length=200)


def _messages_valid(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list.", error_code="NotEmpty")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a 'role'.", error_code="InvalidValue")


def upstream_body(data: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI body to send on: the request minus aiport's own fields.

    ``provider`` is aiport's only when it is a string: OpenRouter takes an object of
    routing preferences under the same name, which passes through.
    """
    return {k: v for k, v in data.items()
            if k.replace("_", "").lower() not in GATEWAY_KEYS
            or (k.lower() == "provider" and not isinstance(v, str))}


def _providers(request: web.Request) -> ProviderManager:
    return request.app[PROVIDERS]


async def chat_completion(request: web.Request, dto: OpenAiChatCompletion) -> web.StreamResponse:
    data = request[state.INPUT].data
    _messages_valid(dto.messages)
    body = upstream_body(data)
    model = request.app[state.MODELS].qualify(dto.model)
    candidates = _providers(request).candidates(model, provider=dto.provider)
    if dto.stream:
        return await stream_completion(request, dto, model, body, candidates)
    job = await _sync_chat(request, CHAT_API, model, body, candidates, dto.ref_id, dto.tag, dto.provider)
    return web.Response(body=jsoncodec.dumpb(job.response or {}), content_type="application/json",
                        headers={"X-Aiport-Provider": job.provider or "", "X-Aiport-Job-Id": str(job.id)})


async def _sync_chat(request: web.Request, api_name: str, model: str, body: dict[str, Any],
                     candidates: list[RuntimeProvider], ref_id: str | None, tag: str | None,
                     requested: str | None) -> Job:
    """Run a non-streamed chat as a sync job on the best candidate's queue; the completed job,
    or the error its failure calls for."""
    spec = JobSpec(api=api_name, queue=candidates[0].name, request={"model": model, "body": body},
                   ref_id=ref_id, tag=tag, requested_provider=requested, key_id=principal_of(request).key_id)
    return await call(request, spec, request.app[state.CONFIG].jobs.sync_timeout_chat)


async def queue_chat(request: web.Request, dto: QueueOpenAiChatCompletion) -> QueueOpenAiChatResponse:
    body = upstream_body(dto.request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("Request.model must not be empty.", error_code="NotEmpty")
    model = request.app[state.MODELS].qualify(model)
    _messages_valid(body.get("messages"))
    if body.get("stream"):
        raise BadRequest("A queued chat cannot stream; leave Request.stream unset.")
    candidates = _providers(request).candidates(model, provider=dto.provider)
    job = await submit(request, JobSpec(
        api=CHAT_API, queue=candidates[0].name, request={"model": model, "body": body}, ref_id=dto.ref_id,
        tag=dto.tag, reply_to=dto.reply_to, requested_provider=dto.provider))
    return QueueOpenAiChatResponse(id=job.id, ref_id=job.ref_id, job_state=job.state.value, status=job.status_text,
                                   status_url=status_url(request, "GetOpenAiChatStatus", job))


# --------------------------------------------------------------------------- streaming


def _sse(data: Any) -> bytes:
    return b"data: " + dumps(data).encode() + b"\n\n"


def stream_spec(request: web.Request, api_name: str, model: str, ref_id: str | None, tag: str | None,
                requested: str | None) -> JobSpec:
    """What the history records of a streamed call (its queue becomes the provider that answered)."""
    return JobSpec(api=api_name, queue="", request={"model": model, "stream": True}, ref_id=ref_id, tag=tag,
                   requested_provider=requested, key_id=principal_of(request).key_id)


async def stream_completion(request: web.Request, dto: OpenAiChatCompletion, model: str, body: dict[str, Any],
                            candidates: list[RuntimeProvider]) -> web.StreamResponse:
    """OpenAI server-sent events; bytes flow to the client as the backend sends them."""
    include_usage = bool((dto.stream_options or {}).get("include_usage"))
    stream = await request.app[state.CHAT].open_stream(
        stream_spec(request, CHAT_API, model, dto.ref_id, dto.tag, dto.provider), body, candidates)
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
        "X-Aiport-Provider": stream.provider.name})
    try:
        await response.prepare(request)
        async for chunk in stream:
            out: dict[str, Any] | None = dict(chunk, model=dto.model)
            if out is not None and out.get("usage") and not include_usage:
                out.pop("usage")
                if not out.get("choices"):
                    out = None
            if out is not None:
                await response.write(_sse(out))
    except ProviderError as exc:
        # The client already has bytes, so no failover now: end the stream with an error event.
        stream.failed(exc)
        await response.write(_sse({"error": {"message": exc.message, "type": "api_error",
                                             "code": exc.error_code, "param": None}}))
    finally:
        await stream.close()
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


# --------------------------------------------------------------------------- models and providers


@response_model()
@attrs.define
class StringsResponse:
    results: list[str]


@response_model()
@attrs.define
class MessageResponse:
    result: Any


@api(methods=("GET",), auth="key", response=StringsResponse, tags=["chat"])
@attrs.define
class ActiveAiModels:
    """The gateway model ids some configured provider serves (sorted)."""

    provider: str | None = field()
    vision: bool | None = field()


async def active_models(request: web.Request, dto: ActiveAiModels) -> StringsResponse:
    providers = _providers(request).of_kind("chat")
    if dto.provider:
        providers = [p for p in providers if p.name == dto.provider]
    models = sorted({m for p in providers for m in p.models})
    if dto.vision:
        catalog = request.app[state.MODELS]
        models = [m for m in models if catalog.is_vision(m)]
    return StringsResponse(results=models)


async def openai_models(request: web.Request) -> web.Response:
    """``GET /v1/models`` in OpenAI's list format."""
    await authorize(request, api_meta(ActiveAiModels))
    owners: dict[str, str] = {}
    for p in _providers(request).of_kind("chat"):
        for m in p.models:
            owners.setdefault(m, p.type_name)
    data = [{"id": m, "object": "model", "created": 0, "owned_by": owners[m]} for m in sorted(owners)]
    return web.json_response({"object": "list", "data": data}, dumps=dumps)


@api(methods=("POST",), auth="admin", response=MessageResponse, tags=["admin"])
@attrs.define
class ChangeAiProviderStatus:
    """Force a provider online or offline (probes leave a forced-offline provider alone)."""

    provider: str = field(required=True)
    online: bool = field(required=True)


@api(methods=("GET", "POST"), auth="admin", response=MessageResponse, tags=["admin"])
@attrs.define
class CheckAiProviderStatus:
    """Probe a provider now; ``result`` is whether it answered."""

    provider: str = field(required=True)


def _named_provider(request: web.Request, name: str) -> RuntimeProvider:
    provider = _providers(request).get(name)
    if provider is None:
        raise NotFound(f"Provider {name!r} does not exist.")
    return provider


async def change_provider_status(request: web.Request, dto: ChangeAiProviderStatus) -> MessageResponse:
    provider = _named_provider(request, dto.provider)
    _providers(request).set_online(provider, dto.online)
    return MessageResponse(result=f"{provider.name} is {'online' if dto.online else 'offline'}")


async def check_provider_status(request: web.Request, dto: CheckAiProviderStatus) -> MessageResponse:
    provider = _named_provider(request, dto.provider)
    return MessageResponse(result=await _providers(request).check(provider))


def setup_engine(app: web.Application) -> None:
    app[state.CHAT] = ChatExecutor(app[PROVIDERS], app[state.ENGINE])
    app[state.ENGINE].register_executor(CHAT_API, app[state.CHAT])


def install(app: web.Application) -> None:
    add_api(app, OpenAiChatCompletion, chat_completion)
    add_api(app, QueueOpenAiChatCompletion, queue_chat)
    add_api(app, ActiveAiModels, active_models)
    add_plain(app, "GET", "/v1/models", openai_models, "OpenAI-compatible model list")
    add_api(app, ChangeAiProviderStatus, change_provider_status)
    add_api(app, CheckAiProviderStatus, check_provider_status)
    app[state.ENGINE_SETUP].append(setup_engine)

