"""OpenAI-compatible chat providers: ``openai``, ``groq``, ``mistral``, ``openrouter``, ``openai-compatible``.

The gateway's request body is already OpenAI chat-completions JSON, so it is
passed through (tools, ``tool_choice``, ``response_format``, image parts,
``stream_options`` and any vendor field such as OpenRouter's ``provider``)
with three changes:

- AI Server's ``images`` message extension becomes ``image_url`` parts;
- a stream asks for ``stream_options.include_usage`` so its last chunk carries
  the usage (turn off with ``stream_usage: false`` for servers that reject it);
- a non-streamed call never sends ``stream_options`` (OpenAI rejects it then).

Endpoints: ``{base}/v1/chat/completions`` and ``{base}/v1/models``. A base URL
that already ends in a version (``.../v1``) gets ``/chat/completions``; one that
ends in ``/chat/completions`` is used verbatim (AI Server's custom providers
name the full completions URL).
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
from aiport.core.sdk import ChatProviderType, HttpOptions, ProviderContext, hookimpl, iter_sse

from .chat_common import (
    JSON,
    HttpChatProvider,
    api_models,
    as_image_url,
    completion_to_chunks,
)

_VERSIONED = re.compile(r"/v\d+[a-z0-9]*$")


@attrs.frozen
class OpenAIOptions(HttpOptions):
    """Extra config keys of the OpenAI-compatible types."""

    #: ``OpenAI-Organization`` header.
    organization: str | None = None
    #: ``OpenAI-Project`` header.
    project: str | None = None
    #: Ask for usage in streams (``stream_options.include_usage``); some servers reject the field.
    stream_usage: bool = True


class OpenAIChatProvider(HttpChatProvider):
    """A backend speaking OpenAI's chat-completions API."""

    options_class = OpenAIOptions

    def __init__(self, ctx: ProviderContext, *, type_name: str, default_base_url: str | None = None) -> None:
        super().__init__(ctx, type_name=type_name, default_base_url=default_base_url)
        base = self.base_url
        if base.endswith("/chat/completions"):
            self.chat_url = base
            root = base[: -len("/chat/completions")]
        else:
            root = base if _VERSIONED.search(base) else f"{base}/v1"
            self.chat_url = f"{root}/chat/completions"
        self.models_url = f"{root}/models"

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        if self.options.organization:
            headers["OpenAI-Organization"] = self.options.organization
        if self.options.project:
            headers["OpenAI-Project"] = self.options.project
        return headers

    def probe_url(self) -> str:
        return self.models_url

    def _payload(self, body: dict[str, Any], stream: bool) -> JSON:
        payload = dict(body)
        messages = payload.get("messages")
        if isinstance(messages, list) and any(isinstance(m, dict) and m.get("images") for m in messages):
            payload["messages"] = [_images_to_parts(m) if isinstance(m, dict) else m for m in messages]
        if stream:
            payload["stream"] = True
            if self.options.stream_usage:
                options = dict(payload.get("stream_options") or {})
                options["include_usage"] = True
                payload["stream_options"] = options
        else:
            payload.pop("stream", None)
            payload.pop("stream_options", None)
        return payload

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST the body as is; the answer is already a ``chat.completion``."""
        data = await self.request_json("POST", self.chat_url, json_body=self._payload(body, stream=False))
        if not isinstance(data, dict):
            raise self.malformed("the answer is not a JSON object")
        if data.get("error"):
            # OpenRouter reports some upstream failures with HTTP 200 and an error body.
            err = data["error"]
            code = err.get("code") if isinstance(err, dict) else None
            status = code if isinstance(code, int) and 400 <= code < 600 else 502
            raise self.stream_error(self.error_message(data) or "error", status=status,
                                    retryable=status == 502 or status == 429 or status >= 500)
        if not isinstance(data.get("choices"), list):
            raise self.malformed("the answer has no 'choices'")
        data.setdefault("object", "chat.completion")
        return data

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Chunks as the server sends them, until ``data: [DONE]``."""
        async with self.open("POST", self.chat_url, json_body=self._payload(body, stream=True),
                             stream=True) as resp:
            if resp.content_type == "application/json":
                # A server that cannot stream answered in one piece: replay it as chunks.
                data = self.parse_json(await resp.text(errors="replace"))
                if not isinstance(data, dict) or data.get("error") or not isinstance(data.get("choices"), list):
                    raise self.stream_error(self.error_message(data) or "the answer is not a chat completion")
                for chunk in completion_to_chunks(data):
                    yield chunk
                return
            async for event in iter_sse(resp.content):
                if event.data.strip() == "[DONE]":
                    return
                chunk = self.parse_json(event.data)
                if not isinstance(chunk, dict):
                    raise self.malformed("a stream event is not a JSON object")
                if chunk.get("error"):
                    raise self.stream_error(self.error_message(chunk) or "error in the stream")
                yield chunk
        raise self.stream_error("the stream ended before 'data: [DONE]'")

    async def list_models(self) -> list[str]:
        """``GET /v1/models``."""
        data = await self.request_json("GET", self.models_url)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise self.malformed("the model list has no 'data'")
        return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]


def _images_to_parts(message: JSON) -> JSON:
    """AI Server's ``images`` (base64 or URLs) as ``image_url`` content parts."""
    images = message.get("images")
    if not images:
        return message
    message = {k: v for k, v in message.items() if k != "images"}
    content = message.get("content")
    parts: list[Any] = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    parts += [{"type": "image_url", "image_url": {"url": as_image_url(str(img))}} for img in images]
    message["content"] = parts
    return message


def _factory(type_name: str, default_base_url: str | None) -> Callable[[ProviderContext], OpenAIChatProvider]:
    return functools.partial(OpenAIChatProvider, type_name=type_name, default_base_url=default_base_url)


#: (type name, default base URL, description)
TYPES: tuple[tuple[str, str | None, str], ...] = (
    ("openai", "https://api.openai.com", "OpenAI chat completions"),
    ("groq", "https://api.groq.com/openai", "GroqCloud (OpenAI-compatible)"),
    ("mistral", "https://api.mistral.ai", "Mistral AI (OpenAI-compatible)"),
    ("openrouter", "https://openrouter.ai/api", "OpenRouter (OpenAI-compatible)"),
    ("openai-compatible", None,
     "Any OpenAI-compatible server (vLLM, llama.cpp, LM Studio, LocalAI...); base_url is required"),
)


@hookimpl
def register_chat_providers(register: Callable[[ChatProviderType], None]) -> None:
    """Register the OpenAI-compatible chat provider types."""
    for name, base, description in TYPES:
        register(ChatProviderType(
            name=name,
            factory=_factory(name, base),
            options=OpenAIOptions,
            description=description,
            default_base_url=base,
            api_models=api_models(name),
        ))
