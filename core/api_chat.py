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
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
import structlog
from aiohttp import web

from . import state
from .api import add_api, dumps
from .api_jobs import (
    ENGINE,
    QueueOpenAiChatResponse,
    engine_of,
    principal_of,
    raise_for_job,
    status_url,
    submit,
)
from .dto import api, field
from .engine import Executor, JobContext
from .errors import ApiError, BadRequest, ProviderError
from .jobs import Job, JobResult, JobSpec, JobState, Usage
from .routing import ProviderManager, RuntimeProvider

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
    """The OpenAI body to send on: the request minus aiport's own fields."""
    return {k: v for k, v in data.items() if k.replace("_", "").lower() not in GATEWAY_KEYS}


class ChatExecutor(Executor):
    """Runs a queued chat job on the provider its queue names; fails over on retryable errors."""

    def __init__(self, providers: ProviderManager) -> None:
        self.providers = providers
        self._tried: dict[int, set[str]] = {}

    async def run(self, job: Job, ctx: JobContext) -> JobResult:
        provider = self.providers.get(job.queue)
        if provider is None:
            raise ProviderError(f"Provider {job.queue!r} is not configured any more.", provider=job.queue,
                                retryable=True)
        self._tried.setdefault(job.id, set()).add(provider.name)
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
        self.providers.report_success(provider)
        self._tried.pop(job.id, None)
        response["model"] = model
        usage = response.get("usage") or {}
        return JobResult(response=response, usage=Usage(
            provider=provider.name, model=model, prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            ttft_ms=int((time.monotonic() - started) * 1000)))

    def reroute(self, job: Job, error: BaseException) -> str | None:
        if job.requested_provider:
            return None
        tried = self._tried.get(job.id, set()) | {job.queue}
        try:
            candidates = self.providers.candidates(str(job.request["model"]), exclude=tried)
        except ApiError:
            return None
        return candidates[0].name if candidates else None

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
    candidates = _providers(request).candidates(dto.model, provider=dto.provider)
    if dto.stream:
        return await stream_completion(request, dto, body, candidates)
    job = await submit(request, JobSpec(
        api=CHAT_API, queue=candidates[0].name, request={"model": dto.model, "body": body},
        ref_id=dto.ref_id, tag=dto.tag, requested_provider=dto.provider))
    job = await engine_of(request).wait(job, request.app[state.CONFIG].jobs.sync_timeout_chat)
    raise_for_job(job)
    return web.json_response(dict(job.response or {}), dumps=dumps,
                             headers={"X-Aiport-Provider": job.provider or "", "X-Aiport-Job-Id": str(job.id)})


async def queue_chat(request: web.Request, dto: QueueOpenAiChatCompletion) -> QueueOpenAiChatResponse:
    body = upstream_body(dto.request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("Request.model must not be empty.", error_code="NotEmpty")
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


async def stream_completion(request: web.Request, dto: OpenAiChatCompletion, body: dict[str, Any],
                            candidates: list[RuntimeProvider]) -> web.StreamResponse:
    """Stream from the first provider that starts answering; bytes flow as they arrive."""
    providers = _providers(request)
    include_usage = bool((dto.stream_options or {}).get("include_usage"))
    last_error: BaseException | None = None
    for provider in candidates:
        upstream = dict(body, model=provider.api_model(dto.model))
        async with provider.slots.hold():
            started = time.monotonic()
            chunks = provider.instance.stream(upstream)
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                first = None
            except ProviderError as exc:
                providers.report_failure(provider, exc)
                await _aclose(chunks)
                if not exc.retryable or dto.provider:
                    raise
                last_error = exc
                continue
            except Exception as exc:
                providers.report_failure(provider, exc)
                await _aclose(chunks)
                raise
            providers.report_success(provider)
            return await _relay(request, dto, provider, chunks, first, include_usage, started)
    assert last_error is not None
    raise last_error


async def _aclose(chunks: AsyncIterator[Any]) -> None:
    closer = getattr(chunks, "aclose", None)
    if closer is not None:
        try:
            await closer()
        except Exception as exc:  # closing a broken stream must not hide the real error
            log.debug("closing upstream stream failed", error=repr(exc))


async def _relay(request: web.Request, dto: OpenAiChatCompletion, provider: RuntimeProvider,
                 chunks: AsyncIterator[dict[str, Any]], first: dict[str, Any] | None, include_usage: bool,
                 started: float) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
        "X-Aiport-Provider": provider.name})
    await response.prepare(request)
    ttft_ms = int((time.monotonic() - started) * 1000)
    usage: dict[str, Any] = {}
    text_parts: list[str] = []
    finish_reason = None
    error: dict[str, Any] | None = None
    completed = False
    try:
        chunk = first
        while chunk is not None:
            chunk = dict(chunk, model=dto.model)
            if chunk.get("usage"):
                usage = dict(chunk["usage"])
                if not include_usage:
                    chunk.pop("usage")
                    if not chunk.get("choices"):
                        chunk = None
            if chunk is not None:
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if isinstance(delta.get("content"), str):
                        text_parts.append(delta["content"])
                    finish_reason = choice.get("finish_reason") or finish_reason
                await response.write(_sse(chunk))
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                chunk = None
        completed = True
    except ProviderError as exc:
        # The client already has bytes: no failover now; end the stream with an error event.
        error = exc.response_status()
        await response.write(_sse({"error": {"message": exc.message, "type": "api_error",
                                             "code": exc.error_code, "param": None}}))
    finally:
        await _aclose(chunks)
        # Accounting runs even when the client went away mid-stream (the task is being cancelled).
        record = asyncio.ensure_future(_record_stream(request, dto, provider, usage, "".join(text_parts),
                                                      finish_reason, error, completed, ttft_ms, started))
        await asyncio.shield(record)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _record_stream(request: web.Request, dto: OpenAiChatCompletion, provider: RuntimeProvider,
                         usage: dict[str, Any], text: str, finish_reason: str | None,
                         error: dict[str, Any] | None, completed: bool, ttft_ms: int, started: float) -> None:
    engine = request.app[ENGINE]
    state_ = JobState.COMPLETED if completed else (JobState.FAILED if error else JobState.CANCELLED)
    response: dict[str, Any] = {"object": "chat.completion", "model": dto.model, "choices": [{
        "index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}]}
    if usage:
        response["usage"] = usage
    try:
        await engine.store.record(
            JobSpec(api=CHAT_API, queue=provider.name, request={"model": dto.model, "stream": True},
                    ref_id=dto.ref_id, tag=dto.tag, requested_provider=dto.provider,
                    key_id=principal_of(request).key_id),
            state=state_, response=response,
            error=error or ({"errorCode": "ClientClosedRequest", "message": "The client disconnected."}
                            if not completed else None),
            usage=Usage(provider=provider.name, model=dto.model, prompt_tokens=usage.get("prompt_tokens"),
                        completion_tokens=usage.get("completion_tokens"), ttft_ms=ttft_ms),
            duration_ms=int((time.monotonic() - started) * 1000), now=engine.clock())
    except Exception as exc:
        log.error("recording a streamed chat failed", error=repr(exc))


def setup_engine(app: web.Application) -> None:
    app[state.ENGINE].register_executor(CHAT_API, ChatExecutor(app[PROVIDERS]))


def install(app: web.Application) -> None:
    add_api(app, OpenAiChatCompletion, chat_completion)
    add_api(app, QueueOpenAiChatCompletion, queue_chat)
    app[state.ENGINE_SETUP].append(setup_engine)

