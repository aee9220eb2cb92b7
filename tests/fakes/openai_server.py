"""A protocol-faithful fake of OpenAI's chat-completions API (``/v1/chat/completions``, ``/v1/models``).

Validation follows the real API, with its error shape
``{"error": {"message", "type", "param", "code"}}``:

* ``Authorization: Bearer <key>`` (or the raw key in :attr:`FakeOpenAI.key_header`
  when set to another header): 401 ``invalid_api_key`` otherwise;
* unknown top-level fields (``Unrecognized request argument supplied: ...``),
  unknown fields in messages, roles and content-part types; ``tool`` messages
  need a ``tool_call_id`` answering an earlier assistant ``tool_calls``;
* ``tools`` entries must be ``function`` tools with a valid name; ``tool_choice``
  needs ``tools``; ``response_format`` ``json_schema`` needs a name and
  ``json_object`` needs the word "json" in the messages; ``stream_options`` is
  only allowed with ``stream: true``;
* an unknown model is a 404 ``model_not_found``.

Streams are ``text/event-stream``: ``data: <chunk>\\n\\n`` frames, the first
delta carrying the role, tool calls as ``index``/``id``/``name`` then argument
pieces, a final chunk with ``finish_reason``, with ``include_usage`` every chunk
has ``"usage": null`` and one more chunk with empty ``choices`` and the usage,
and finally ``data: [DONE]\\n\\n``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from aiohttp import web

from .chat_fake import ChatFake, Reply

TOP_LEVEL = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "stop", "max_tokens",
    "max_completion_tokens", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
    "top_logprobs", "user", "seed", "tools", "tool_choice", "parallel_tool_calls", "response_format",
    "modalities", "audio", "prediction", "reasoning_effort", "metadata", "store", "service_tier",
    "web_search_options", "functions", "function_call", "verbosity", "safety_identifier", "prompt_cache_key",
})
MESSAGE_FIELDS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "refusal", "audio", "function_call"},
    "tool": {"role", "content", "tool_call_id"},
    "function": {"role", "content", "name"},
}
PART_TYPES = {
    "system": {"text"},
    "developer": {"text"},
    "user": {"text", "image_url", "input_audio", "file"},
    "assistant": {"text", "refusal"},
    "tool": {"text"},
}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_


class FakeOpenAI(ChatFake):
    """OpenAI's chat-completions API on loopback (see the module docs)."""

    default_models = ("gpt-4o-mini", "gpt-4o", "llama-3.1-8b-instant")
    #: The header the key comes in; ``Authorization`` means ``Bearer <key>``.
    key_header = "Authorization"

    def install(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.list_models)

    # ----------------------------------------------------------------- errors

    def error_response(self, status: int, message: str, *, headers: dict[str, str] | None = None,
                       kind: str | None = None, param: str | None = None, code: str | None = None) -> web.Response:
        kind = kind or {401: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_exceeded"}.get(
            status, "server_error" if status >= 500 else "invalid_request_error")
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return web.json_response(body, status=status, headers=headers)

    def stream_error_frame(self, message: str) -> bytes:
        body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
        return f"data: {json.dumps(body)}\n\n".encode()

    def _check_key(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        value = request.headers.get(self.key_header)
        if self.key_header.lower() == "authorization":
            value = value[7:] if value and value.startswith("Bearer ") else None
        if not value:
            return self.error_response(401, "You didn't provide an API key. You need to provide your API key in "
                                            "an Authorization header using Bearer auth (i.e. Authorization: "
                                            "Bearer YOUR_KEY).")
        if value != self.api_key:
            # The real API echoes a masked key; echoing it whole checks that clients never pass it on.
            return self.error_response(401, f"Incorrect API key provided: {value}. You can find your API key "
                                            "at https://platform.openai.com/account/api-keys.",
                                       code="invalid_api_key")
        return None

    # ----------------------------------------------------------------- handlers

    async def list_models(self, request: web.Request) -> web.Response:
        await self.record(request)
        if (denied := self._check_key(request)) is not None:
            return denied
        if (early := await self.intercept(request)) is not None:
            return early  # type: ignore[return-value]
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in self.models]})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        rec = await self.record(request)
        if (denied := self._check_key(request)) is not None:
            return denied
        if (early := await self.intercept(request)) is not None:
            return early
        if not isinstance(rec.body, dict):
            return self.error_response(400, "We could not parse the JSON body of your request. (HINT: This likely "
                                            "means you aren't using your HTTP library correctly.)")
        try:
            prompt_text, last_user = self._validate(rec.body)
        except OpenAIError as e:
            return self.error_response(e.status, e.message, param=e.param, code=e.code, kind=e.type)
        body = rec.body
        fmt = (body.get("response_format") or {}).get("type")
        default = Reply(text=json.dumps({"echo": last_user}) if fmt in ("json_object", "json_schema")
                        else f"Echo: {last_user}")
        reply = self.next_reply(default)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self.send_stream(request, self._frames(body["model"], reply, prompt_text, include_usage),
                                          "text/event-stream; charset=utf-8")
        return web.json_response(self._completion(body["model"], reply, prompt_text))

    # ----------------------------------------------------------------- validation

    def _validate(self, body: dict[str, Any]) -> tuple[str, str]:
        """Check the body like the API does; returns (all prompt text, last user text)."""
        for key in body:
            if key not in TOP_LEVEL:
                raise OpenAIError(400, f"Unrecognized request argument supplied: {key}")
        model = body.get("model")
        if not model:
            raise OpenAIError(400, "you must provide a model parameter")
        if self.models and model not in self.models:
            raise OpenAIError(404, f"The model `{model}` does not exist or you do not have access to it.",
                              code="model_not_found")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise OpenAIError(400, f"Invalid value for 'messages': expected a non-empty array, got {messages!r}.",
                              param="messages")
        if body.get("stream_options") is not None and not body.get("stream"):
            raise OpenAIError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                              param="stream_options")
        texts: list[str] = []
        last_user = ""
        call_ids: set[str] = set()
        for i, msg in enumerate(messages):
            where = f"messages[{i}]"
            role = msg.get("role") if isinstance(msg, dict) else None
            if role not in MESSAGE_FIELDS:
                raise OpenAIError(400, f"Invalid value: {role!r}. Supported values are: 'system', 'assistant', "
                                       "'user', 'function', 'tool', and 'developer'.", param=f"{where}.role")
            extra = set(msg) - MESSAGE_FIELDS[role]
            if extra:
                raise OpenAIError(400, f"Additional properties are not allowed ({sorted(extra)[0]!r} was "
                                       f"unexpected) - '{where}'", param=where)
            content = msg.get("content")
            if content is None and not (role == "assistant" and msg.get("tool_calls")):
                raise OpenAIError(400, f"Missing required parameter: '{where}.content'.", param=f"{where}.content")
            msg_text = self._content_text(content, role, where)
            texts.append(msg_text)
            if role == "user":
                last_user = msg_text
            if role == "assistant":
                for j, call in enumerate(msg.get("tool_calls") or ()):
                    fn = call.get("function") or {}
                    if call.get("type") != "function" or not fn.get("name") or not isinstance(
                            fn.get("arguments"), str) or not call.get("id"):
                        raise OpenAIError(400, "Invalid tool call: each needs 'id', type 'function' and a "
                                               "function with 'name' and 'arguments' (a string).",
                                          param=f"{where}.tool_calls[{j}]")
                    call_ids.add(call["id"])
            if role == "tool":
                if not msg.get("tool_call_id"):
                    raise OpenAIError(400, f"Missing required parameter: '{where}.tool_call_id'.",
                                      param=f"{where}.tool_call_id")
                if msg["tool_call_id"] not in call_ids:
                    raise OpenAIError(400, "Invalid parameter: messages with role 'tool' must be a response to a "
                                           "preceeding message with 'tool_calls'.", param=f"{where}.role")
        tools = body.get("tools")
        if tools is not None:
            for j, tool in enumerate(tools):
                name = (tool.get("function") or {}).get("name", "")
                if tool.get("type") != "function" or not _TOOL_NAME.match(str(name)):
                    raise OpenAIError(400, f"Invalid 'tools[{j}]': expected a function tool with a name matching "
                                           "'^[a-zA-Z0-9_-]{1,64}$'.", param=f"tools[{j}]")
        if body.get("tool_choice") is not None and not tools:
            raise OpenAIError(400, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
                                   "are specified.", param="tool_choice")
        fmt = body.get("response_format")
        if fmt is not None:
            kind = fmt.get("type")
            if kind not in ("text", "json_object", "json_schema"):
                raise OpenAIError(400, f"Invalid value: {kind!r}. Supported values are: 'text', 'json_object' "
                                       "and 'json_schema'.", param="response_format.type")
            if kind == "json_schema" and not (fmt.get("json_schema") or {}).get("name"):
                raise OpenAIError(400, "Missing required parameter: 'response_format.json_schema.name'.",
                                  param="response_format.json_schema.name")
            if kind == "json_object" and "json" not in " ".join(texts).lower():
                raise OpenAIError(400, "'messages' must contain the word 'json' in some form, to use "
                                       "'response_format' of type 'json_object'.", param="messages")
        temperature = body.get("temperature")
        if temperature is not None and not 0 <= temperature <= 2:
            raise OpenAIError(400, f"Invalid 'temperature': decimal above maximum value. Expected a value <= 2, "
                                   f"but got {temperature} instead.", param="temperature")
        return "\n".join(texts), last_user

    @staticmethod
    def _content_text(content: Any, role: str, where: str) -> str:
        if content is None or isinstance(content, str):
            return content or ""
        if not isinstance(content, list):
            raise OpenAIError(400, f"Invalid type for '{where}.content': expected a string or an array.",
                              param=f"{where}.content")
        texts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in PART_TYPES.get(role, {"text"}):
                allowed = ", ".join(repr(t) for t in sorted(PART_TYPES.get(role, {"text"})))
                raise OpenAIError(400, f"Invalid value: {kind!r}. Supported values are: {allowed}.",
                                  param=f"{where}.content[{j}].type")
            if kind == "text":
                texts.append(str(part.get("text", "")))
            if kind == "image_url":
                url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
                if not url or not str(url).startswith(("http://", "https://", "data:image/")):
                    raise OpenAIError(400, "Invalid 'image_url': expected an object with a http(s) or "
                                           "data:image URL.", param=f"{where}.content[{j}].image_url")
        return " ".join(texts)

    # ----------------------------------------------------------------- rendering

    @staticmethod
    def _calls(reply: Reply) -> list[dict[str, Any]]:
        return [{"id": c.id or f"call_{uuid.uuid4().hex[:16]}", "type": "function",
                 "function": {"name": c.name, "arguments": json.dumps(c.arguments)}} for c in reply.tool_calls]

    def _completion(self, model: str, reply: Reply, prompt_text: str) -> dict[str, Any]:
        prompt, completion = reply.usage(prompt_text)
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None,
                                   "annotations": []}
        if reply.tool_calls:
            message["tool_calls"] = self._calls(reply)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            "service_tier": "default", "system_fingerprint": "fp_fake",
        }

    def _frames(self, model: str, reply: Reply, prompt_text: str, include_usage: bool) -> list[bytes]:
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                                     "model": model, "system_fingerprint": "fp_fake",
                                     "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                  "finish_reason": finish}]}
            if include_usage:
                chunk["usage"] = None
            return f"data: {json.dumps(chunk)}\n\n".encode()

        frames = [frame({"role": "assistant", "content": "", "refusal": None})]
        frames += [frame({"content": piece}) for piece in reply.text_pieces()]
        for index, (call, rendered) in enumerate(zip(reply.tool_calls, self._calls(reply), strict=True)):
            frames.append(frame({"tool_calls": [{"index": index, "id": rendered["id"], "type": "function",
                                                 "function": {"name": call.name, "arguments": ""}}]}))
            frames += [frame({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                       for piece in call.argument_pieces()]
        frames.append(frame({}, reply.finish_reason))
        if include_usage:
            prompt, completion = reply.usage(prompt_text)
            frames.append(("data: " + json.dumps({
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_fake", "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion},
            }) + "\n\n").encode())
        frames.append(b"data: [DONE]\n\n")
        return frames
