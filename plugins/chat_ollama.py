"""Ollama's native chat API (``POST /api/chat``), translated to and from OpenAI's format.

Request translation:

- messages keep their roles; content parts become ``content`` text plus an
  ``images`` list of bare base64 (``data:`` URLs and AI Server's ``images``;
  Ollama cannot fetch ``http`` image URLs, so those are refused with a 400);
- assistant ``tool_calls`` get their ``arguments`` as objects; ``tool`` messages
  carry ``tool_name`` (looked up from the call id, since Ollama matches by name);
- ``tools`` are passed as they are (Ollama takes OpenAI's function-tool shape);
  ``tool_choice`` ``auto`` and ``none`` work, a forced choice is refused (Ollama
  has no way to force a call);
- ``response_format`` ``json_object`` -> ``format: "json"``, ``json_schema`` ->
  ``format: <schema>``;
- ``temperature``, ``top_p``, ``seed``, ``stop``, ``frequency_penalty``,
  ``presence_penalty`` and ``max_tokens`` (as ``num_predict``) go into ``options``;
- ``stream`` is always sent: Ollama streams unless told ``false``.

Streams are NDJSON, one object per line, the last with ``done: true`` and the
counts (``prompt_eval_count``/``eval_count`` -> usage).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
from aiport.core.sdk import ChatProviderType, HttpOptions, hookimpl, iter_lines, rejected

from .chat_common import (
    JSON,
    ChunkMaker,
    HttpChatProvider,
    api_models,
    assistant_message,
    completion,
    dumps,
    function_call,
    function_tools,
    image_url_of,
    max_tokens_of,
    message_parts,
    parse_arguments,
    parse_data_url,
    refuse_untranslatable,
    require_messages,
    response_format_of,
    stop_list,
    tool_call_id,
    tool_choice_of,
    tool_names_by_id,
    usage,
)

TYPE_NAME = "ollama"
DEFAULT_BASE_URL = "http://localhost:11434"


@attrs.frozen
class OllamaOptions(HttpOptions):
    """Extra config keys of the ``ollama`` type."""

    #: How long Ollama keeps the model loaded after a request (``"5m"``, ``"1h"``, ``"-1"``).
    keep_alive: str | None = None
    #: Context window (``options.num_ctx``); Ollama's default is small.
    num_ctx: int | None = None


class OllamaChatProvider(HttpChatProvider):
    """A provider speaking Ollama's native ``/api/chat``."""

    options_class = OllamaOptions

    def probe_url(self) -> str:
        return self.url("/api/tags")

    def error_message(self, data: Any) -> str | None:
        # Ollama's errors are {"error": "..."}.
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return str(data["error"])
        return super().error_message(data)

    # ----------------------------------------------------------------- request

    def _payload(self, body: dict[str, Any], stream: bool) -> JSON:
        name = self.name
        refuse_untranslatable(name, body)
        messages = require_messages(name, body)
        names = tool_names_by_id(messages)
        payload: JSON = {"model": body.get("model"), "messages": [
            self._message(m, f"messages[{i}]", names) for i, m in enumerate(messages)
        ], "stream": stream}

        tools = function_tools(name, body)
        choice = tool_choice_of(name, body)
        if choice and choice[0] in ("required", "function") and tools:
            raise rejected(name, "Ollama cannot force a tool call; tool_choice must be 'auto' or 'none'")
        if tools and not (choice and choice[0] == "none"):
            payload["tools"] = [{"type": "function", "function": {k: v for k, v in t.items() if v is not None}}
                                for t in tools]

        kind, schema, _ = response_format_of(name, body)
        if kind == "json_object":
            payload["format"] = "json"
        elif kind == "json_schema":
            payload["format"] = schema

        options: JSON = {}
        for key in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"):
            if body.get(key) is not None:
                options[key] = body[key]
        if body.get("top_k") is not None:  # not OpenAI's, but commonly sent to local models
            options["top_k"] = body["top_k"]
        if (stop := stop_list(body)) is not None:
            options["stop"] = stop
        if (max_tokens := max_tokens_of(body)) is not None:
            options["num_predict"] = max_tokens
        if self.options.num_ctx is not None:
            options["num_ctx"] = self.options.num_ctx
        if options:
            payload["options"] = options
        if self.options.keep_alive is not None:
            payload["keep_alive"] = self.options.keep_alive
        return payload

    def _message(self, message: JSON, where: str, names: dict[str, str]) -> JSON:
        role = message.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise rejected(self.name, f"{where}.role {role!r} is not supported")
        texts: list[str] = []
        images: list[str] = []
        for part in message_parts(self.name, message, where):
            kind = part["type"]
            if kind == "text":
                texts.append(str(part.get("text") or ""))
            elif kind == "image_url":
                url = image_url_of(part)
                data = parse_data_url(url)
                if data is None:
                    raise rejected(self.name, f"{where}: Ollama takes images as data: URLs or base64 only, "
                                              "not links it would have to download")
                images.append(data[1])
            else:
                raise rejected(self.name, f"{where}: {kind!r} content parts are not supported by Ollama")
        out: JSON = {"role": role, "content": "\n".join(texts)}
        if images:
            out["images"] = images
        if role == "assistant" and message.get("tool_calls"):
            out["tool_calls"] = [
                {"function": {"name": (call.get("function") or {}).get("name"),
                              "arguments": parse_arguments(self.name, (call.get("function") or {}).get("arguments"),
                                                           f"{where}.tool_calls[{j}]")}}
                for j, call in enumerate(message["tool_calls"])
            ]
        if role == "tool":
            call_id = str(message.get("tool_call_id"))
            tool_name = message.get("name") or names.get(call_id)
            if tool_name:
                out["tool_name"] = tool_name
        return out

    # ----------------------------------------------------------------- response

    def _tool_calls(self, message: JSON) -> list[JSON]:
        calls = []
        for call in message.get("tool_calls") or ():
            fn = call.get("function") or {}
            args = fn.get("arguments")
            calls.append(function_call(str(call.get("id") or tool_call_id()), str(fn.get("name") or ""),
                                       args if isinstance(args, str) else dumps(args or {})))
        return calls

    @staticmethod
    def _finish(data: JSON, has_tool_calls: bool) -> str:
        if has_tool_calls:
            return "tool_calls"
        return "length" if data.get("done_reason") == "length" else "stop"

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/chat`` with ``stream: false``, answered as a ``chat.completion``."""
        data = await self.request_json("POST", self.url("/api/chat"), json_body=self._payload(body, False))
        if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
            raise self.malformed("the answer has no 'message'")
        message = data["message"]
        calls = self._tool_calls(message)
        choice = {"index": 0, "message": assistant_message(message.get("content") or "", calls),
                  "logprobs": None, "finish_reason": self._finish(data, bool(calls))}
        return completion(str(data.get("model") or body.get("model")), [choice],
                          usage(data.get("prompt_eval_count"), data.get("eval_count")))

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """``POST /api/chat`` streaming NDJSON, as ``chat.completion.chunk`` objects."""
        maker = ChunkMaker(str(body.get("model")))
        calls_seen = 0
        async with self.open("POST", self.url("/api/chat"), json_body=self._payload(body, True),
                             stream=True) as resp:
            yield maker.chunk({"role": "assistant", "content": ""})
            async for line in iter_lines(resp.content):
                if not line.strip():
                    continue
                data = self.parse_json(line)
                if not isinstance(data, dict):
                    raise self.malformed("a stream line is not a JSON object")
                if data.get("error"):
                    raise self.stream_error(str(data["error"]))
                message = data.get("message") or {}
                if message.get("content"):
                    yield maker.chunk({"content": message["content"]})
                calls = self._tool_calls(message)
                if calls:
                    # Ollama sends each tool call whole; index them in the order they arrive.
                    deltas = [{"index": calls_seen + i, **call} for i, call in enumerate(calls)]
                    calls_seen += len(calls)
                    yield maker.chunk({"tool_calls": deltas})
                if data.get("done"):
                    yield maker.chunk(finish_reason=self._finish(data, calls_seen > 0),
                                      usage_=usage(data.get("prompt_eval_count"), data.get("eval_count")))
                    return
        raise self.stream_error("the stream ended before its 'done' line")

    async def list_models(self) -> list[str]:
        """``GET /api/tags``: the models pulled on this Ollama."""
        data = await self.request_json("GET", self.url("/api/tags"))
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise self.malformed("the model list has no 'models'")
        return [str(m.get("name") or m.get("model")) for m in models if isinstance(m, dict)]


@hookimpl
def register_chat_providers(register: Callable[[ChatProviderType], None]) -> None:
    """Register the ``ollama`` chat provider type."""
    register(ChatProviderType(
        name=TYPE_NAME,
        factory=functools.partial(OllamaChatProvider, type_name=TYPE_NAME, default_base_url=DEFAULT_BASE_URL),
        options=OllamaOptions,
        description="Ollama's native chat API (/api/chat)",
        default_base_url=DEFAULT_BASE_URL,
        api_models=api_models(TYPE_NAME),
    ))
