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

import asyncio
import base64
import datetime as dt
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
import structlog
from aiohttp import web

from .. import jsoncodec, state
from ..errors import BadRequest, NotFound, ProviderError
from ..execution.routing import ProviderExecutor, ProviderManager, RuntimeProvider
from ..jobs.executor import JobContext
from ..jobs.model import Job, JobResult, JobSpec, JobState, Usage
from ..jsoncodec import dumps
from .auth import authorize
from .dto import api, api_meta, build, field, response_model
from .jobs import (
    ENGINE,
    ChatStatusResponse,
    QueueOpenAiChatResponse,
    call,
    find_job,
    principal_of,
    raise_for_job,
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


class ChatExecutor(ProviderExecutor):
    """Runs a queued chat job on the provider its queue names; fails over on retryable errors."""

    async def run(self, job: Job, ctx: JobContext) -> JobResult:
        provider = self.provider_for(job)
        model = str(job.request["model"])
        body = dict(job.request["body"])
        body["model"] = provider.api_model(model)
        body.pop("stream", None)
        body.pop("stream_options", None)
        started = time.monotonic()
        try:
            response = dict(await provider.instance.chat(body))
        except Exception as exc:
            self.providers.report_failure(provider, exc)
            raise
        self.providers.report_success(provider, time.monotonic() - started)
        self.succeeded(job)
        response["model"] = model
        usage = response.get("usage") or {}
        return JobResult(response=response, usage=Usage(
            provider=provider.name, model=model, prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            ttft_ms=int((time.monotonic() - started) * 1000)))

    def callback_body(self, job: Job) -> Mapping[str, Any] | None:
        if job.state == JobState.COMPLETED and job.response is not None:
            return dict(job.response)  # AI Server posts the bare chat completion
        return {"id": job.ref_id, "jobId": job.id, "refId": job.ref_id, "jobState": job.state.value,
                "responseStatus": dict(job.error or {})}


def _providers(request: web.Request) -> ProviderManager:
    return request.app[PROVIDERS]


async def chat_completion(request: web.Request, dto: OpenAiChatCompletion) -> web.StreamResponse:
    data = request[state.INPUT].data  # type: ignore[attr-defined]
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
    job = await call(request, spec, request.app[state.CONFIG].jobs.sync_timeout_chat)
    raise_for_job(job)
    return job


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


@attrs.define
class StreamTally:
    """What a stream carried, for the history record."""

    usage: dict[str, Any] = attrs.field(factory=dict)
    text: list[str] = attrs.field(factory=list)
    chunks: int = 0
    finish_reason: str | None = None
    error: dict[str, Any] | None = None
    completed: bool = False
    ttft_ms: int = 0

    def add(self, chunk: Mapping[str, Any]) -> None:
        if chunk.get("usage"):
            self.usage = dict(chunk["usage"])
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                self.text.append(delta["content"])
                self.chunks += 1
            self.finish_reason = choice.get("finish_reason") or self.finish_reason


async def open_stream(request: web.Request, model: str, body: dict[str, Any], candidates: list[RuntimeProvider],
                      forced: bool) -> tuple[RuntimeProvider, AsyncIterator[dict[str, Any]], dict[str, Any] | None]:
    """Start streaming from the first provider that answers; a retryable failure before the
    first chunk moves on to the next candidate. The caller must release the provider's slot."""
    providers = _providers(request)
    last_error: BaseException | None = None
    for provider in candidates:
        await provider.slots.acquire()
        started = time.monotonic()
        chunks = provider.instance.stream(dict(body, model=provider.api_model(model)))
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        except BaseException as exc:
            provider.slots.release()
            await _aclose(chunks)
            if isinstance(exc, Exception):
                providers.report_failure(provider, exc)
            if isinstance(exc, ProviderError) and exc.retryable and not forced:
                last_error = exc
                continue
            raise
        providers.report_success(provider, time.monotonic() - started)
        return provider, chunks, first
    assert last_error is not None
    raise last_error


async def _aclose(chunks: AsyncIterator[Any]) -> None:
    closer = getattr(chunks, "aclose", None)
    if closer is not None:
        try:
            await closer()
        except Exception as exc:  # closing a broken stream must not hide the real error
            log.debug("closing upstream stream failed", error=repr(exc))


async def stream_completion(request: web.Request, dto: OpenAiChatCompletion, model: str, body: dict[str, Any],
                            candidates: list[RuntimeProvider]) -> web.StreamResponse:
    """OpenAI server-sent events; bytes flow to the client as the backend sends them."""
    include_usage = bool((dto.stream_options or {}).get("include_usage"))
    started = time.monotonic()
    provider, chunks, first = await open_stream(request, model, body, candidates, bool(dto.provider))
    tally = StreamTally(ttft_ms=int((time.monotonic() - started) * 1000))
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
        "X-Aiport-Provider": provider.name})
    try:
        await response.prepare(request)
        chunk = first
        while chunk is not None:
            tally.add(chunk)
            out: dict[str, Any] | None = dict(chunk, model=dto.model)
            if out is not None and out.get("usage") and not include_usage:
                out.pop("usage")
                if not out.get("choices"):
                    out = None
            if out is not None:
                await response.write(_sse(out))
            chunk = await anext(chunks, None)
        tally.completed = True
    except ProviderError as exc:
        # The client already has bytes, so no failover now: end the stream with an error event.
        tally.error = exc.response_status()
        await response.write(_sse({"error": {"message": exc.message, "type": "api_error",
                                             "code": exc.error_code, "param": None}}))
    finally:
        provider.slots.release()
        await _aclose(chunks)
        # Accounting runs even when the client went away mid-stream (this task is being cancelled).
        await asyncio.shield(_record_stream(request, CHAT_API, dto.ref_id, dto.tag, dto.provider, model,
                                            provider, tally, started))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _record_stream(request: web.Request, api_name: str, ref_id: str | None, tag: str | None,
                         requested: str | None, model: str, provider: RuntimeProvider, tally: StreamTally,
                         started: float) -> None:
    engine = request.app[ENGINE]
    if tally.completed:
        state_, error = JobState.COMPLETED, None
    elif tally.error:
        state_, error = JobState.FAILED, tally.error
    else:
        state_, error = JobState.CANCELLED, {"errorCode": "ClientClosedRequest",
                                             "message": "The client disconnected during the stream."}
    response: dict[str, Any] = {"object": "chat.completion", "model": model, "choices": [{
        "index": 0, "message": {"role": "assistant", "content": "".join(tally.text)},
        "finish_reason": tally.finish_reason}]}
    # A stream cut short has no usage from the backend: count what streamed (about a token a chunk).
    completion_tokens = tally.usage.get("completion_tokens", tally.chunks)
    if tally.usage:
        response["usage"] = tally.usage
    try:
        await engine.record(
            JobSpec(api=api_name, queue=provider.name, request={"model": model, "stream": True},
                    ref_id=ref_id, tag=tag, requested_provider=requested, key_id=principal_of(request).key_id),
            state=state_, response=response, error=error,
            usage=Usage(provider=provider.name, model=model, prompt_tokens=tally.usage.get("prompt_tokens"),
                        completion_tokens=completion_tokens, ttft_ms=tally.ttft_ms),
            duration_ms=int((time.monotonic() - started) * 1000))
    except Exception as exc:
        log.error("recording a streamed request failed", error=repr(exc))


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
    healthy = await _providers(request).probe(provider)
    if healthy:
        _providers(request).report_success(provider)
    return MessageResponse(result=healthy)


# --------------------------------------------------------------------------- Ollama generate

OLLAMA_API = "OllamaGeneration"


@api(routes=["/api/generate"], methods=("POST",), auth="key", naming="snake", tags=["chat"],
     summary="Ollama-style text generation on any chat provider (stream: true for NDJSON)")
@attrs.define
class OllamaGeneration:
    """Ollama's ``/api/generate`` body, plus ``RefId``, ``Provider`` and ``Tag``."""

    model: str = field(required=True, max_length=200)
    prompt: str = field(required=True, max_length=1_000_000)
    system: str | None = field()
    images: list[str] | None = field(max_length=16, description="Base64 images or image URLs")
    format: Any = field(description="'json' or a JSON schema")
    options: dict[str, Any] | None = field()
    stream: bool | None = field()
    ref_id: str | None = field(max_length=200)
    provider: str | None = field()
    tag: str | None = field(max_length=200)


@api(methods=("POST",), auth="key", response=QueueOpenAiChatResponse, tags=["chat"])
@attrs.define
class QueueOllamaGeneration:
    """Queue an Ollama-style generation; poll ``GetOllamaGenerationStatus`` or use ``ReplyTo``."""

    request: dict[str, Any] = field(required=True)
    ref_id: str | None = field(max_length=200)
    provider: str | None = field()
    reply_to: str | None = field(max_length=2000)
    tag: str | None = field(max_length=200)


@api(methods=("GET", "POST"), auth="key", response=ChatStatusResponse, tags=["jobs", "chat"])
@attrs.define
class GetOllamaGenerationStatus:
    """Status of a queued Ollama-style generation; ``result`` once completed."""

    job_id: int | None = field(ge=1)
    ref_id: str | None = field(max_length=200)


def _image_part(image: str) -> dict[str, Any]:
    if image.startswith(("http://", "https://", "data:")):
        return {"type": "image_url", "image_url": {"url": image}}
    head = base64.b64decode(image[:24] + "=" * (-len(image[:24]) % 4), validate=False)
    mime = "image/png" if head.startswith(b"\x89PNG") else "image/webp" if head[8:12] == b"WEBP" else (
        "image/gif" if head.startswith(b"GIF8") else "image/jpeg")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{image}"}}


def ollama_to_chat(dto: OllamaGeneration) -> dict[str, Any]:
    """An Ollama generate request as an OpenAI chat body."""
    messages: list[dict[str, Any]] = []
    if dto.system:
        messages.append({"role": "system", "content": dto.system})
    if dto.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": dto.prompt}]
        parts += [_image_part(i) for i in dto.images]
        messages.append({"role": "user", "content": parts})
    else:
        messages.append({"role": "user", "content": dto.prompt})
    body: dict[str, Any] = {"model": dto.model, "messages": messages}
    options = dto.options or {}
    for ollama_key, openai_key in (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed"),
                                   ("stop", "stop"), ("num_predict", "max_tokens"),
                                   ("frequency_penalty", "frequency_penalty"),
                                   ("presence_penalty", "presence_penalty")):
        if options.get(ollama_key) is not None:
            body[openai_key] = options[ollama_key]
    if dto.format == "json":
        body["response_format"] = {"type": "json_object"}
    elif isinstance(dto.format, dict):
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": dto.format}}
    elif dto.format not in (None, ""):
        raise BadRequest("format must be 'json' or a JSON schema object.", error_code="InvalidValue")
    return body


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def chat_to_ollama(model: str, response: Mapping[str, Any], duration_ms: int | None) -> dict[str, Any]:
    choice = (response.get("choices") or [{}])[0]
    usage = response.get("usage") or {}
    out: dict[str, Any] = {
        "model": model, "created_at": _now_iso(),
        "response": (choice.get("message") or {}).get("content") or "", "done": True,
        "done_reason": {"length": "length"}.get(choice.get("finish_reason") or "", "stop"),
        "prompt_eval_count": usage.get("prompt_tokens", 0), "eval_count": usage.get("completion_tokens", 0),
    }
    if duration_ms is not None:
        out["total_duration"] = duration_ms * 1_000_000
    return out


class OllamaExecutor(ChatExecutor):
    """A chat job whose result is stored in Ollama's generate shape."""

    async def run(self, job: Job, ctx: JobContext) -> JobResult:
        result = await super().run(job, ctx)
        return attrs.evolve(result, response=chat_to_ollama(str(job.request["model"]), result.response, None))


def _parse_ollama(data: Mapping[str, Any]) -> OllamaGeneration:
    dto = build(OllamaGeneration, data)
    assert isinstance(dto, OllamaGeneration)
    return dto


async def ollama_generate(request: web.Request, dto: OllamaGeneration) -> web.StreamResponse:
    model = request.app[state.MODELS].qualify(dto.model)
    body = ollama_to_chat(dto)
    candidates = _providers(request).candidates(model, provider=dto.provider)
    if dto.stream:
        return await _stream_ollama(request, dto, model, body, candidates)
    job = await _sync_chat(request, OLLAMA_API, model, body, candidates, dto.ref_id, dto.tag, dto.provider)
    result = dict(job.response or {})
    if job.duration_ms is not None:
        result["total_duration"] = job.duration_ms * 1_000_000
    return web.json_response(result, dumps=dumps, headers={"X-Aiport-Provider": job.provider or "",
                                                           "X-Aiport-Job-Id": str(job.id)})


async def _stream_ollama(request: web.Request, dto: OllamaGeneration, model: str, body: dict[str, Any],
                         candidates: list[RuntimeProvider]) -> web.StreamResponse:
    """Ollama's streaming: one JSON object per line, the last with ``done: true`` and counts."""
    started = time.monotonic()
    provider, chunks, first = await open_stream(request, model, body, candidates, bool(dto.provider))
    tally = StreamTally(ttft_ms=int((time.monotonic() - started) * 1000))
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "X-Aiport-Provider": provider.name})
    try:
        await response.prepare(request)
        chunk = first
        while chunk is not None:
            before = len(tally.text)
            tally.add(chunk)
            for piece in tally.text[before:]:
                line = {"model": dto.model, "created_at": _now_iso(), "response": piece, "done": False}
                await response.write(dumps(line).encode() + b"\n")
            chunk = await anext(chunks, None)
        tally.completed = True
        final = chat_to_ollama(dto.model, {"choices": [{"message": {"content": ""},
                                                        "finish_reason": tally.finish_reason}],
                                           "usage": tally.usage}, int((time.monotonic() - started) * 1000))
        await response.write(dumps(final).encode() + b"\n")
    except ProviderError as exc:
        tally.error = exc.response_status()
        await response.write(dumps({"error": exc.message}).encode() + b"\n")
    finally:
        provider.slots.release()
        await _aclose(chunks)
        await asyncio.shield(_record_stream(request, OLLAMA_API, dto.ref_id, dto.tag, dto.provider, model,
                                            provider, tally, started))
    await response.write_eof()
    return response


async def queue_ollama(request: web.Request, dto: QueueOllamaGeneration) -> QueueOpenAiChatResponse:
    generation = _parse_ollama(dto.request)
    if generation.stream:
        raise BadRequest("A queued generation cannot stream; leave Request.stream unset.")
    model = request.app[state.MODELS].qualify(generation.model)
    body = ollama_to_chat(generation)
    candidates = _providers(request).candidates(model, provider=dto.provider)
    job = await submit(request, JobSpec(api=OLLAMA_API, queue=candidates[0].name,
                                        request={"model": model, "body": body}, ref_id=dto.ref_id, tag=dto.tag,
                                        reply_to=dto.reply_to, requested_provider=dto.provider))
    return QueueOpenAiChatResponse(id=job.id, ref_id=job.ref_id, job_state=job.state.value, status=job.status_text,
                                   status_url=status_url(request, "GetOllamaGenerationStatus", job))


async def get_ollama_status(request: web.Request, dto: GetOllamaGenerationStatus) -> ChatStatusResponse:
    job = await find_job(request, dto.job_id, dto.ref_id, ref_first=True)
    raise_for_job(job)
    result = dict(job.response) if job.state == JobState.COMPLETED and job.response else None
    return ChatStatusResponse(job_id=job.id, ref_id=job.ref_id, job_state=job.state.value, status=job.status_text,
                              result=result)


def setup_engine(app: web.Application) -> None:
    app[state.ENGINE].register_executor(CHAT_API, ChatExecutor(app[PROVIDERS]))
    app[state.ENGINE].register_executor(OLLAMA_API, OllamaExecutor(app[PROVIDERS]))


def install(app: web.Application) -> None:
    add_api(app, OpenAiChatCompletion, chat_completion)
    add_api(app, QueueOpenAiChatCompletion, queue_chat)
    add_api(app, ActiveAiModels, active_models)
    add_plain(app, "GET", "/v1/models", openai_models, "OpenAI-compatible model list")
    add_api(app, ChangeAiProviderStatus, change_provider_status)
    add_api(app, CheckAiProviderStatus, check_provider_status)
    add_api(app, OllamaGeneration, ollama_generate)
    add_api(app, QueueOllamaGeneration, queue_ollama)
    add_api(app, GetOllamaGenerationStatus, get_ollama_status)
    app[state.ENGINE_SETUP].append(setup_engine)

