"""A protocol-faithful fake of Anthropic's Messages API (``/v1/messages``, ``/v1/models``).

Validation follows the real API, with its error shape
``{"type": "error", "error": {"type": "invalid_request_error", "message": ...}}``
and a ``request-id`` header:

* ``x-api-key`` (401 ``authentication_error``) and ``anthropic-version``
  (400) headers are required;
* ``model``, ``max_tokens`` and ``messages`` are required (``max_tokens: Field
  required``); unknown fields are refused (``Extra inputs are not permitted``);
  ``temperature`` is 0-1; an unknown model is a 404 ``not_found_error``;
* messages are ``user``/``assistant`` only (a ``system`` role gets the real
  hint about the top-level ``system`` parameter), with non-empty content;
  blocks are ``text`` (non-empty), ``image`` (base64 with JPEG/PNG/GIF/WebP
  media type and valid data, or a url source), ``tool_use`` (assistant) and
  ``tool_result`` (user); every ``tool_use`` must be answered by a
  ``tool_result`` in the next message and every ``tool_result`` must answer a
  ``tool_use`` of the previous one;
* ``tools`` need a valid name and an object ``input_schema``; ``tool_choice``
  is auto/any/tool/none, and ``tool`` must name a given tool.

Answers: ``{"id": "msg_...", "type": "message", "role": "assistant", "model",
"content": [text / tool_use blocks], "stop_reason", "stop_sequence", "usage"}``.
With a forced tool (``tool_choice: {"type": "tool"}``) and no scripted reply,
the fake calls that tool with ``{"echo": <last user text>}``. Streams are
``event: <type>\\ndata: <json>\\n\\n``: ``message_start``, ``ping``, per block
``content_block_start`` / ``content_block_delta`` (``text_delta`` or
``input_json_delta``) / ``content_block_stop``, ``message_delta`` (stop
reason, output tokens) and ``message_stop``; an in-stream failure is an
``error`` event.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from typing import Any

from aiohttp import web

from .chat_fake import ChatFake, Reply, ToolCall

TOP_LEVEL = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature",
    "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier", "container", "mcp_servers",
})
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               529: "overloaded_error"}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


class AnthropicError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class FakeAnthropic(ChatFake):
    """Anthropic's Messages API on loopback (see the module docs)."""

    default_models = ("claude-3-5-haiku-latest", "claude-sonnet-4-20250514", "claude-3-haiku-20240307")
    #: Largest model-list page served whatever ``limit`` asks (shrink it to exercise paging).
    page_limit = 1000

    def install(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/v1/models", self.list_models)

    def error_response(self, status: int, message: str, *, headers: dict[str, str] | None = None,
                       kind: str | None = None) -> web.Response:
        kind = kind or ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        headers = {"request-id": f"req_{uuid.uuid4().hex[:20]}", **(headers or {})}
        return web.json_response({"type": "error", "error": {"type": kind, "message": message}},
                                 status=status, headers=headers)

    def stream_error_frame(self, message: str) -> bytes:
        return _sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": message}})

    def _check_headers(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-api-key")
        if self.api_key is not None:
            if not key:
                return self.error_response(401, "x-api-key header is required")
            if key != self.api_key:
                return self.error_response(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self.error_response(400, "anthropic-version: header is required")
        return None

    # ----------------------------------------------------------------- handlers

    async def list_models(self, request: web.Request) -> web.Response:
        await self.record(request)
        if (denied := self._check_headers(request)) is not None:
            return denied
        if (early := await self.intercept(request)) is not None:
            return early  # type: ignore[return-value]
        limit = min(int(request.query.get("limit", "20")), self.page_limit)
        start = 0
        if "after_id" in request.query:
            start = self.models.index(request.query["after_id"]) + 1
        page = self.models[start:start + limit]
        return web.json_response({
            "data": [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                     for m in page],
            "has_more": start + limit < len(self.models),
            "first_id": page[0] if page else None, "last_id": page[-1] if page else None,
        })

    async def messages(self, request: web.Request) -> web.StreamResponse:
        rec = await self.record(request)
        if (denied := self._check_headers(request)) is not None:
            return denied
        if (early := await self.intercept(request)) is not None:
            return early
        if not isinstance(rec.body, dict):
            return self.error_response(400, "There was an issue with your request body: invalid JSON")
        try:
            prompt_text, last_user = self._validate(rec.body)
        except AnthropicError as e:
            return self.error_response(e.status, e.message)
        body = rec.body
        choice = body.get("tool_choice") or {}
        if choice.get("type") == "tool":
            default = Reply(tool_calls=[ToolCall(choice["name"], {"echo": last_user})])
        else:
            default = Reply(text=f"Echo: {last_user}")
        reply = self.next_reply(default)
        if body.get("stream"):
            return await self.send_stream(request, self._events(body["model"], reply, prompt_text),
                                          "text/event-stream; charset=utf-8")
        return web.json_response(self._message(body["model"], reply, prompt_text))

    # ----------------------------------------------------------------- validation

    def _validate(self, body: dict[str, Any]) -> tuple[str, str]:
        for key in body:
            if key not in TOP_LEVEL:
                raise AnthropicError(400, f"{key}: Extra inputs are not permitted")
        for key in ("model", "max_tokens", "messages"):
            if key not in body:
                raise AnthropicError(400, f"{key}: Field required")
        if self.models and body["model"] not in self.models:
            raise AnthropicError(404, f"model: {body['model']}")
        max_tokens = body["max_tokens"]
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise AnthropicError(400, "max_tokens: Input should be greater than or equal to 1")
        temperature = body.get("temperature")
        if temperature is not None and not 0 <= temperature <= 1:
            raise AnthropicError(400, "temperature: Input should be less than or equal to 1")
        system = body.get("system")
        texts: list[str] = []
        if isinstance(system, str):
            texts.append(system)
        elif isinstance(system, list):
            for j, block in enumerate(system):
                if block.get("type") != "text" or not block.get("text"):
                    raise AnthropicError(400, f"system.{j}: Input should be a valid text block")
                texts.append(block["text"])
        elif system is not None:
            raise AnthropicError(400, "system: Input should be a valid string or list")
        stop = body.get("stop_sequences")
        if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            raise AnthropicError(400, "stop_sequences: Input should be a valid list of strings")
        metadata = body.get("metadata")
        if metadata is not None and set(metadata) - {"user_id"}:
            raise AnthropicError(400, f"metadata.{sorted(set(metadata) - {'user_id'})[0]}: Extra inputs are not "
                                      "permitted")

        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise AnthropicError(400, "messages: at least one message is required")
        last_user = ""
        previous_tool_uses: set[str] = set()
        for i, msg in enumerate(messages):
            role = msg.get("role")
            if role == "system":
                raise AnthropicError(400, 'messages: Unexpected role "system". The Messages API accepts a top-level '
                                          '`system` parameter, not "system" as an input message role.')
            if role not in ("user", "assistant"):
                raise AnthropicError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
            content = msg.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            final_assistant = role == "assistant" and i == len(messages) - 1
            if not isinstance(blocks, list) or (not blocks and not final_assistant) or (
                    isinstance(content, str) and not content and not final_assistant):
                raise AnthropicError(400, f"messages.{i}: all messages must have non-empty content except for "
                                          "the optional final assistant message")
            tool_uses: set[str] = set()
            answered: set[str] = set()
            seen_other = False
            for j, block in enumerate(blocks):
                where = f"messages.{i}.content.{j}"
                kind = block.get("type")
                if kind == "text":
                    if not block.get("text"):
                        raise AnthropicError(400, f"{where}.text: text content blocks must be non-empty")
                    texts.append(block["text"])
                    if role == "user":
                        last_user = block["text"]
                    seen_other = True
                elif kind == "image" and role == "user":
                    self._check_image(block, where)
                    seen_other = True
                elif kind == "tool_use" and role == "assistant":
                    if not block.get("id") or not block.get("name") or not isinstance(block.get("input"), dict):
                        raise AnthropicError(400, f"{where}.tool_use: id, name and an object input are required")
                    tool_uses.add(block["id"])
                elif kind == "tool_result" and role == "user":
                    if seen_other:
                        raise AnthropicError(400, f"messages.{i}: tool_result blocks must come before any other "
                                                  "content in a user message")
                    if block.get("tool_use_id") not in previous_tool_uses:
                        raise AnthropicError(400, f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: "
                                                  f"{block.get('tool_use_id')}. Each `tool_result` block must have a "
                                                  "corresponding `tool_use` block in the previous message.")
                    answered.add(block["tool_use_id"])
                    result = block.get("content")
                    if result is not None and not isinstance(result, str | list):
                        raise AnthropicError(400, f"{where}.content: Input should be a valid string or list")
                    if isinstance(result, str):
                        texts.append(result)
                else:
                    raise AnthropicError(400, f"{where}.type: Input tag {kind!r} found using 'type' does not match "
                                              f"any of the expected tags for a {role} message")
            if previous_tool_uses - answered:
                missing = ", ".join(sorted(previous_tool_uses - answered))
                raise AnthropicError(400, f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                                          f"immediately after: {missing}. Each `tool_use` block must have a "
                                          "corresponding `tool_result` block in the next message.")
            previous_tool_uses = tool_uses

        tool_names = set()
        for j, tool in enumerate(body.get("tools") or ()):
            if not _TOOL_NAME.match(str(tool.get("name", ""))):
                raise AnthropicError(400, f"tools.{j}.custom.name: String should match pattern "
                                          "'^[a-zA-Z0-9_-]{1,128}$'")
            schema = tool.get("input_schema")
            if not isinstance(schema, dict):
                raise AnthropicError(400, f"tools.{j}.custom.input_schema: Field required")
            if schema.get("type") != "object":
                raise AnthropicError(400, f"tools.{j}.custom.input_schema.type: Input should be 'object'")
            if set(tool) - {"name", "description", "input_schema", "cache_control", "type"}:
                extra = sorted(set(tool) - {"name", "description", "input_schema", "cache_control", "type"})[0]
                raise AnthropicError(400, f"tools.{j}.custom.{extra}: Extra inputs are not permitted")
            tool_names.add(tool["name"])
        choice = body.get("tool_choice")
        if choice is not None:
            if choice.get("type") not in ("auto", "any", "tool", "none"):
                raise AnthropicError(400, "tool_choice.type: Input tag found using 'type' does not match any of "
                                          "the expected tags: 'auto', 'any', 'tool', 'none'")
            if choice["type"] == "tool" and choice.get("name") not in tool_names:
                raise AnthropicError(400, f"tool_choice: tool {choice.get('name')!r} not found in tools")
        return "\n".join(texts), last_user

    @staticmethod
    def _check_image(block: dict[str, Any], where: str) -> None:
        source = block.get("source") or {}
        if source.get("type") == "base64":
            if source.get("media_type") not in IMAGE_TYPES:
                raise AnthropicError(400, f"{where}.image.source.base64.media_type: Input should be 'image/jpeg', "
                                          "'image/png', 'image/gif' or 'image/webp'")
            try:
                base64.b64decode(source.get("data", ""), validate=True)
            except (binascii.Error, ValueError):
                raise AnthropicError(400, f"{where}.image.source.base64.data: invalid base64 data") from None
        elif source.get("type") == "url":
            if not str(source.get("url", "")).startswith(("http://", "https://")):
                raise AnthropicError(400, f"{where}.image.source.url.url: Input should be a valid URL")
        else:
            raise AnthropicError(400, f"{where}.image.source: Input tag {source.get('type')!r} found using 'type' "
                                      "does not match any of the expected tags: 'base64', 'url'")

    # ----------------------------------------------------------------- rendering

    @staticmethod
    def _blocks(reply: Reply) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
        blocks += [{"type": "tool_use", "id": c.id or f"toolu_{uuid.uuid4().hex[:20]}", "name": c.name,
                    "input": c.arguments} for c in reply.tool_calls]
        return blocks

    def _message(self, model: str, reply: Reply, prompt_text: str) -> dict[str, Any]:
        prompt, completion = reply.usage(prompt_text)
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
            "content": self._blocks(reply), "stop_reason": STOP_REASONS[reply.finish_reason], "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": completion, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0},
        }

    def _events(self, model: str, reply: Reply, prompt_text: str) -> list[bytes]:
        prompt, completion = reply.usage(prompt_text)
        message = {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": prompt, "output_tokens": 1, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 0}}
        events = [_sse("message_start", {"type": "message_start", "message": message}),
                  _sse("ping", {"type": "ping"})]
        calls = iter(reply.tool_calls)  # tool_use blocks follow the reply's tool calls, in order
        for index, block in enumerate(self._blocks(reply)):
            if block["type"] == "text":
                events.append(_sse("content_block_start", {"type": "content_block_start", "index": index,
                                                           "content_block": {"type": "text", "text": ""}}))
                events += [_sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                                        "delta": {"type": "text_delta", "text": piece}})
                           for piece in reply.text_pieces()]
            else:
                call = next(calls)
                events.append(_sse("content_block_start", {"type": "content_block_start", "index": index,
                                                           "content_block": {**block, "input": {}}}))
                # The API's first input_json_delta is often empty; clients must cope.
                events += [_sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                                        "delta": {"type": "input_json_delta", "partial_json": p}})
                           for p in ["", *call.argument_pieces()]]
            events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        events.append(_sse("message_delta", {"type": "message_delta",
                                             "delta": {"stop_reason": STOP_REASONS[reply.finish_reason],
                                                       "stop_sequence": None},
                                             "usage": {"output_tokens": completion}}))
        events.append(_sse("message_stop", {"type": "message_stop"}))
        return events
