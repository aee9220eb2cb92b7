"""Anthropic's Messages API (``POST /v1/messages``), translated to and from OpenAI's format.

Requests carry ``x-api-key`` (or the configured ``api_key_header``) and
``anthropic-version: 2023-06-01``. Translation:

- ``system``/``developer`` messages -> the top-level ``system`` prompt;
- user content parts -> ``text`` and ``image`` blocks (``data:`` URLs as base64
  sources, ``http(s)`` URLs as url sources; JPEG, PNG, GIF and WebP only);
- assistant ``tool_calls`` -> ``tool_use`` blocks; ``tool`` messages ->
  ``tool_result`` blocks in a user turn (consecutive turns of one role are
  merged, tool results first, as the API requires);
- ``tools`` -> ``tools`` with ``input_schema``; ``tool_choice`` auto / none /
  required / a named function -> ``auto`` / ``none`` / ``any`` / ``tool``;
  ``parallel_tool_calls: false`` -> ``disable_parallel_tool_use``;
- ``max_tokens`` (default 4096, option ``default_max_tokens``), ``temperature``,
  ``top_p``, ``top_k``, ``stop`` -> ``stop_sequences``, ``user`` ->
  ``metadata.user_id``. ``seed`` and the penalties have no equivalent and are
  dropped (they tune sampling; the answer's shape is unaffected).

``response_format`` ``json_object`` / ``json_schema`` is **emulated** the way
Anthropic documents for JSON output: a single tool named ``json_response``
whose ``input_schema`` is the schema, forced with ``tool_choice``. The tool's
input comes back as the message ``content`` (a JSON string) with
``finish_reason: "stop"``, streamed as content deltas. The schema's top level
must be an object, and it cannot be combined with caller ``tools`` (both are
refused with a 400).

Responses: ``stop_reason`` end_turn/stop_sequence -> ``stop``, max_tokens ->
``length``, tool_use -> ``tool_calls``, refusal -> ``content_filter``; usage
from ``input_tokens`` (plus cache reads and writes) and ``output_tokens``.
Streams translate ``message_start``, ``content_block_*`` (``text_delta`` and
``input_json_delta``), ``message_delta``, ``message_stop``, ``ping`` and
``error`` events into OpenAI chunks, tool calls included.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import attrs
from aiport.core.sdk import ChatProviderType, HttpOptions, hookimpl, is_retryable_status, iter_sse, rejected

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
    text_only,
    tool_call_id,
    tool_choice_of,
    usage,
)

TYPE_NAME = "anthropic"
DEFAULT_BASE_URL = "https://api.anthropic.com"
#: The tool that carries a JSON answer when ``response_format`` asks for JSON.
JSON_TOOL = "json_response"

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
#: HTTP status of each documented error type (for ``error`` events inside a stream).
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


@attrs.frozen
class AnthropicOptions(HttpOptions):
    """Extra config keys of the ``anthropic`` type."""

    #: The ``anthropic-version`` header.
    anthropic_version: str = "2023-06-01"
    #: ``max_tokens`` when the request has none (Anthropic requires it).
    default_max_tokens: int = 4096
    #: ``anthropic-beta`` feature flags.
    beta: list[str] = attrs.field(factory=list)


def _prompt_tokens(u: JSON) -> int | None:
    """Input tokens including prompt-cache reads and writes (OpenAI counts them all as prompt)."""
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    if all(u.get(k) is None for k in keys):
        return None
    return sum(int(u.get(k) or 0) for k in keys)


class AnthropicChatProvider(HttpChatProvider):
    """A provider speaking Anthropic's Messages API."""

    options_class = AnthropicOptions

    def auth_headers(self) -> dict[str, str]:
        return self.key_headers("x-api-key")

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        headers["anthropic-version"] = self.options.anthropic_version
        if self.options.beta:
            headers["anthropic-beta"] = ",".join(self.options.beta)
        return headers

    def probe_url(self) -> str:
        # Anthropic has no free health endpoint; listing models is authenticated and costs nothing.
        return self.url("/v1/models")

    def error_message(self, data: Any) -> str | None:
        # {"type": "error", "error": {"type": "invalid_request_error", "message": "..."}}
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            err = data["error"]
            if err.get("message"):
                return f"{err.get('type') or 'error'}: {err['message']}"
        return super().error_message(data)

    # ----------------------------------------------------------------- request

    def _payload(self, body: dict[str, Any], stream: bool) -> tuple[JSON, bool]:
        """The Messages API request, and whether JSON output is emulated with :data:`JSON_TOOL`."""
        name = self.name
        refuse_untranslatable(name, body)
        system, messages = self._messages(require_messages(name, body))
        max_tokens = max_tokens_of(body)
        payload: JSON = {
            "model": body.get("model"),
            "max_tokens": max_tokens if max_tokens is not None else self.options.default_max_tokens,
            "messages": messages,
        }
        if system:
            payload["system"] = "\n\n".join(system)
        for key in ("temperature", "top_p", "top_k"):
            if body.get(key) is not None:
                payload[key] = body[key]
        if (stop := stop_list(body)) is not None:
            payload["stop_sequences"] = stop
        if body.get("user"):
            payload["metadata"] = {"user_id": str(body["user"])}
        if stream:
            payload["stream"] = True

        tools = function_tools(name, body)
        kind, schema, schema_name = response_format_of(name, body)
        json_mode = kind in ("json_object", "json_schema")
        if json_mode:
            if tools:
                raise rejected(name, "response_format json_object/json_schema cannot be combined with tools "
                                     "on Anthropic (JSON output is emulated with a forced tool call)")
            schema = schema or {"type": "object"}
            if schema.get("type") != "object":
                raise rejected(name, "Anthropic can only produce JSON for schemas whose top level is "
                                     "an object ({\"type\": \"object\", ...})")
            description = "Answer by calling this tool with the answer as its input."
            if schema_name:
                description += f" The input is a {schema_name}."
            payload["tools"] = [{"name": JSON_TOOL, "description": description, "input_schema": schema}]
            payload["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
        elif tools:
            payload["tools"] = [
                {k: v for k, v in {
                    "name": t["name"],
                    "description": t["description"],
                    "input_schema": t["parameters"] or {"type": "object", "properties": {}},
                }.items() if v is not None}
                for t in tools
            ]
            choice = tool_choice_of(name, body)
            tool_choice: JSON | None = None
            if choice is not None:
                mode, fn = choice
                tool_choice = ({"type": "tool", "name": fn} if mode == "function"
                               else {"type": {"auto": "auto", "none": "none", "required": "any"}[mode]})
            if body.get("parallel_tool_calls") is False:
                tool_choice = tool_choice or {"type": "auto"}
                if tool_choice["type"] != "none":
                    tool_choice["disable_parallel_tool_use"] = True
            if tool_choice is not None:
                payload["tool_choice"] = tool_choice
        return payload, json_mode

    def _messages(self, messages: list[JSON]) -> tuple[list[str], list[JSON]]:
        system: list[str] = []
        turns: list[JSON] = []

        def push(role: str, blocks: list[JSON]) -> None:
            if not blocks:
                return
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"].extend(blocks)
            else:
                turns.append({"role": role, "content": list(blocks)})

        for i, message in enumerate(messages):
            where = f"messages[{i}]"
            role = message.get("role")
            if role in ("system", "developer"):
                text = text_only(self.name, message, where)
                if text:
                    system.append(text)
            elif role == "user":
                push("user", self._user_blocks(message, where))
            elif role == "assistant":
                text = text_only(self.name, message, where)
                blocks: list[JSON] = [{"type": "text", "text": text}] if text else []
                for j, call in enumerate(message.get("tool_calls") or ()):
                    fn = call.get("function") or {}
                    blocks.append({
                        "type": "tool_use",
                        "id": str(call.get("id") or tool_call_id()),
                        "name": fn.get("name"),
                        "input": parse_arguments(self.name, fn.get("arguments"), f"{where}.tool_calls[{j}]"),
                    })
                push("assistant", blocks)
            elif role == "tool":
                result: JSON = {"type": "tool_result", "tool_use_id": str(message.get("tool_call_id") or "")}
                text = text_only(self.name, message, where)
                if text:
                    result["content"] = text
                push("user", [result])
            else:
                raise rejected(self.name, f"{where}.role {role!r} is not supported")
        if not turns:
            raise rejected(self.name, "Anthropic needs at least one user or assistant message "
                                      "besides the system prompt")
        for turn in turns:
            if turn["role"] == "user":
                # tool_result blocks must open the user turn that answers a tool_use turn.
                turn["content"].sort(key=lambda block: block["type"] != "tool_result")
        return system, turns

    def _user_blocks(self, message: JSON, where: str) -> list[JSON]:
        blocks: list[JSON] = []
        for part in message_parts(self.name, message, where):
            kind = part["type"]
            if kind == "text":
                if part.get("text"):
                    block: JSON = {"type": "text", "text": str(part["text"])}
                    if part.get("cache_control"):
                        block["cache_control"] = part["cache_control"]
                    blocks.append(block)
            elif kind == "image_url":
                url = image_url_of(part)
                data = parse_data_url(url)
                if data is not None:
                    mime, b64 = data
                    if mime not in _IMAGE_TYPES:
                        raise rejected(self.name, f"{where}: Anthropic accepts JPEG, PNG, GIF and WebP "
                                                  f"images, not {mime}")
                    blocks.append({"type": "image",
                                   "source": {"type": "base64", "media_type": mime, "data": b64}})
                elif url.startswith(("http://", "https://")):
                    blocks.append({"type": "image", "source": {"type": "url", "url": url}})
                else:
                    raise rejected(self.name, f"{where}: an image must be a data: or http(s) URL")
            else:
                raise rejected(self.name, f"{where}: {kind!r} content parts are not supported by Anthropic")
        return blocks

    # ----------------------------------------------------------------- response

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/messages``, answered as a ``chat.completion``."""
        payload, json_mode = self._payload(body, stream=False)
        data = await self.request_json("POST", self.url("/v1/messages"), json_body=payload)
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise self.malformed("the answer has no 'content'")
        texts: list[str] = []
        calls: list[JSON] = []
        json_text: str | None = None
        for block in data["content"]:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append(str(block.get("text") or ""))
            elif kind == "tool_use":
                arguments = dumps(block.get("input") or {})
                if json_mode and block.get("name") == JSON_TOOL:
                    json_text = arguments
                else:
                    calls.append(function_call(str(block.get("id")), str(block.get("name")), arguments))
            # thinking / redacted_thinking blocks have no place in an OpenAI message.
        finish = _FINISH.get(str(data.get("stop_reason")), "stop")
        if json_text is not None and finish == "tool_calls":
            finish = "stop"
        text = json_text if json_text is not None else "".join(texts)
        u = data.get("usage") or {}
        choice = {"index": 0, "message": assistant_message(text, calls), "logprobs": None,
                  "finish_reason": finish}
        return completion(str(data.get("model") or body.get("model")), [choice],
                          usage(_prompt_tokens(u), u.get("output_tokens")), id_=data.get("id"))

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """``POST /v1/messages`` with ``stream: true``; SSE events become ``chat.completion.chunk`` objects."""
        payload, json_mode = self._payload(body, stream=True)
        maker = ChunkMaker(str(body.get("model")))
        tool_index: dict[Any, int] = {}  # content block index -> OpenAI tool call index
        json_blocks: set[Any] = set()
        finish: str | None = None
        prompt_tokens: int | None = None
        output_tokens: int | None = None
        async with self.open("POST", self.url("/v1/messages"), json_body=payload, stream=True) as resp:
            async for event in iter_sse(resp.content):
                data = self.parse_json(event.data)
                if not isinstance(data, dict):
                    raise self.malformed("a stream event is not a JSON object")
                kind = data.get("type") or event.event
                index = data.get("index")
                if kind == "message_start":
                    message = data.get("message") or {}
                    maker.model = str(message.get("model") or maker.model)
                    u = message.get("usage") or {}
                    prompt_tokens, output_tokens = _prompt_tokens(u), u.get("output_tokens")
                    yield maker.chunk({"role": "assistant", "content": ""})
                elif kind == "content_block_start":
                    block = data.get("content_block") or {}
                    if block.get("type") == "tool_use":
                        if json_mode and block.get("name") == JSON_TOOL:
                            json_blocks.add(index)
                        else:
                            n = tool_index[index] = len(tool_index)
                            yield maker.chunk({"tool_calls": [{
                                "index": n, "id": block.get("id"), "type": "function",
                                "function": {"name": block.get("name"), "arguments": ""},
                            }]})
                    elif block.get("type") == "text" and block.get("text"):
                        yield maker.chunk({"content": block["text"]})
                elif kind == "content_block_delta":
                    delta = data.get("delta") or {}
                    if delta.get("type") == "text_delta" and delta.get("text"):
                        yield maker.chunk({"content": delta["text"]})
                    elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                        if index in json_blocks:
                            yield maker.chunk({"content": delta["partial_json"]})
                        elif index in tool_index:
                            yield maker.chunk({"tool_calls": [{
                                "index": tool_index[index], "function": {"arguments": delta["partial_json"]},
                            }]})
                    # thinking_delta, signature_delta and citations_delta have no OpenAI equivalent.
                elif kind == "message_delta":
                    delta = data.get("delta") or {}
                    if delta.get("stop_reason"):
                        finish = _FINISH.get(str(delta["stop_reason"]), "stop")
                    u = data.get("usage") or {}
                    if u.get("output_tokens") is not None:
                        output_tokens = u["output_tokens"]
                    if _prompt_tokens(u) is not None:  # newer API versions repeat the input counts here
                        prompt_tokens = _prompt_tokens(u)
                elif kind == "message_stop":
                    if json_blocks and finish == "tool_calls":
                        finish = "stop"
                    yield maker.chunk(finish_reason=finish or "stop", usage_=usage(prompt_tokens, output_tokens))
                    return
                elif kind == "error":
                    err = data.get("error") or {}
                    status = _ERROR_STATUS.get(str(err.get("type")), 500)
                    raise self.stream_error(f"{err.get('type') or 'error'}: {err.get('message') or 'stream error'}",
                                            status=status, retryable=is_retryable_status(status))
                # ping and content_block_stop carry nothing to translate.
        raise self.stream_error("the stream ended before 'message_stop'")

    async def list_models(self) -> list[str]:
        """``GET /v1/models``, following its pages."""
        ids: list[str] = []
        url = self.url("/v1/models?limit=1000")
        while True:
            data = await self.request_json("GET", url)
            items = data.get("data") if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise self.malformed("the model list has no 'data'")
            ids += [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]
            if not data.get("has_more") or not data.get("last_id"):
                return ids
            url = self.url(f"/v1/models?limit=1000&after_id={quote(str(data['last_id']))}")


@hookimpl
def register_chat_providers(register: Callable[[ChatProviderType], None]) -> None:
    """Register the ``anthropic`` chat provider type."""
    register(ChatProviderType(
        name=TYPE_NAME,
        factory=functools.partial(AnthropicChatProvider, type_name=TYPE_NAME, default_base_url=DEFAULT_BASE_URL),
        options=AnthropicOptions,
        description="Anthropic Messages API (/v1/messages)",
        default_base_url=DEFAULT_BASE_URL,
        api_models=api_models(TYPE_NAME),
    ))
