"""Ollama's ``/api/generate`` on any chat provider: sync, streamed (NDJSON) and queued.

A generate request is translated to an OpenAI chat body (:func:`ollama_to_chat`) and runs
as a chat; its answer is kept and returned in Ollama's shape (:func:`chat_to_ollama`).
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

import attrs
from aiohttp import web

from .. import state
from ..errors import BadRequest, ProviderError
from ..execution.chat import ChatExecutor
from ..execution.routing import RuntimeProvider
from ..jobs.model import JobSpec, JobState
from ..jobs.styles import raise_for_job
from ..jsoncodec import dumps
from .chat import _sync_chat, stream_spec
from .dto import api, build, field
from .jobs import ChatStatusResponse, QueueOpenAiChatResponse, find_job, status_url, submit
from .routes import add_api

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


def ollama_result(model: str, response: Mapping[str, Any]) -> dict[str, Any]:
    """A chat completion kept in the shape Ollama's generate answers with."""
    return chat_to_ollama(model, response, None)


def _parse_ollama(data: Mapping[str, Any]) -> OllamaGeneration:
    dto = build(OllamaGeneration, data)
    assert isinstance(dto, OllamaGeneration)
    return dto


async def ollama_generate(request: web.Request, dto: OllamaGeneration) -> web.StreamResponse:
    model = request.app[state.MODELS].qualify(dto.model)
    body = ollama_to_chat(dto)
    candidates = request.app[state.PROVIDERS].candidates(model, provider=dto.provider)
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
    stream = await request.app[state.CHAT].open_stream(
        stream_spec(request, OLLAMA_API, model, dto.ref_id, dto.tag, dto.provider), body, candidates)
    tally = stream.tally
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                           "X-Aiport-Provider": stream.provider.name})
    try:
        await response.prepare(request)
        before = 0
        async for _chunk in stream:
            for piece in tally.text[before:]:
                line = {"model": dto.model, "created_at": _now_iso(), "response": piece, "done": False}
                await response.write(dumps(line).encode() + b"\n")
            before = len(tally.text)
        final = chat_to_ollama(dto.model, {"choices": [{"message": {"content": ""},
                                                        "finish_reason": tally.finish_reason}],
                                           "usage": tally.usage}, int((time.monotonic() - started) * 1000))
        await response.write(dumps(final).encode() + b"\n")
    except ProviderError as exc:
        stream.failed(exc)
        await response.write(dumps({"error": exc.message}).encode() + b"\n")
    finally:
        await stream.close()
    await response.write_eof()
    return response


async def queue_ollama(request: web.Request, dto: QueueOllamaGeneration) -> QueueOpenAiChatResponse:
    generation = _parse_ollama(dto.request)
    if generation.stream:
        raise BadRequest("A queued generation cannot stream; leave Request.stream unset.")
    model = request.app[state.MODELS].qualify(generation.model)
    body = ollama_to_chat(generation)
    candidates = request.app[state.PROVIDERS].candidates(model, provider=dto.provider)
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
    app[state.ENGINE].register_executor(
        OLLAMA_API, ChatExecutor(app[state.PROVIDERS], app[state.ENGINE], result_shape=ollama_result))


def install(app: web.Application) -> None:
    add_api(app, OllamaGeneration, ollama_generate)
    add_api(app, QueueOllamaGeneration, queue_ollama)
    add_api(app, GetOllamaGenerationStatus, get_ollama_status)
    app[state.ENGINE_SETUP].append(setup_engine)
