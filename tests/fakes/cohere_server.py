"""A protocol-faithful fake of Cohere's API (Chat v2 and List Models), served on loopback.

It checks requests the way the real API does, so a mistranslation fails loudly
instead of passing against a lenient mock:

* ``Authorization: Bearer <key>`` is required (401 ``{"message": ...}`` otherwise);
* ``POST /v2/chat`` rejects unknown fields (``unknown field: parameter top_p is
  not a valid field``), unknown roles and per-role fields, out-of-range sampling
  values (``p`` 0.01-0.99, ``k`` 0-500, penalties 0-1, ``temperature`` >= 0),
  malformed tools/tool calls, ``tool_call_id`` values that answer no earlier
  call, and unknown models (404);
* ``GET /v1/models`` takes ``page_size`` (1-1000), ``page_token`` and ``endpoint``.

Answers have Cohere v2's shapes: a chat response ``{id, finish_reason, message:
{role, content: [{type: text, text}] | tool_plan + tool_calls}, usage:
{billed_units, tokens}}``, and for ``stream: true`` a ``text/event-stream`` of
``event: <type>\\ndata: <json>\\n\\n`` frames: ``message-start``,
``content-start``, ``content-delta``..., ``content-end`` (or ``tool-plan-delta``...,
``tool-call-start``/``-delta``/``-end`` per call), ``message-end`` with
``delta.finish_reason`` and ``delta.usage``. Errors are ``{"id", "message"}``
with the real status codes.

Test knobs: :meth:`FakeCohere.reply_with` scripts the next answers
(:class:`Reply`), :meth:`FakeCohere.fail_next` makes the next N requests fail
with a status, message and ``Retry-After``, :attr:`FakeCohere.page_limit`
shrinks model-list pages to exercise paging, and every request is recorded in
:attr:`FakeCohere.requests`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CHAT_FIELDS = frozenset({
    "stream", "model", "messages", "tools", "strict_tools", "documents", "citation_options",
    "response_format", "safety_mode", "max_tokens", "stop_sequences", "temperature", "seed",
    "frequency_penalty", "presence_penalty", "k", "p", "return_prompt", "logprobs", "tool_choice",
    "thinking", "priority",
})
MESSAGE_FIELDS = {
    "system": frozenset({"role", "content"}),
    "user": frozenset({"role", "content"}),
    "assistant": frozenset({"role", "content", "tool_calls", "tool_plan", "citations"}),
    "tool": frozenset({"role", "tool_call_id", "content"}),
}
FINISH_REASONS = frozenset({"COMPLETE", "STOP_SEQUENCE", "MAX_TOKENS", "TOOL_CALL", "ERROR"})
ENDPOINTS = frozenset({"chat", "embed", "classify", "summarize", "rerank", "rate", "generate"})

#: The fake's model catalog: name -> endpoints it serves.
DEFAULT_MODELS: dict[str, list[str]] = {
    "command-a-03-2025": ["chat"],
    "command-r-plus-08-2024": ["chat", "generate"],
    "command-r-08-2024": ["chat", "generate"],
    "command-r7b-12-2024": ["chat"],
    "embed-english-v3.0": ["embed"],
    "rerank-v3.5": ["rerank"],
}

#: Prompt-template tokens Cohere counts in ``usage.tokens`` but does not bill.
TEMPLATE_TOKENS = 7


@dataclass
class Reply:
    """One scripted answer. Without one the fake echoes the last user message."""

    text: str = ""
    #: ``(function name, arguments)`` pairs; arguments is a dict (sent as a JSON string).
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tool_plan: str | None = None
    #: Forced finish reason (default: COMPLETE, TOOL_CALL, or what max_tokens/stop_sequences cause).
    finish_reason: str | None = None
    #: Seconds to wait before answering (or before the first event of a stream).
    delay: float = 0.0
    #: Drop the connection after this many stream events (a stream that breaks off).
    cut_after: int | None = None


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class _Failure:
    status: int
    message: str
    retry_after: str | None


class BadRequest(Exception):
    """A request the real API would refuse; ``status`` and ``message`` are its answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class FakeCohere:
    """The fake server: ``FakeCohere(api_key).app`` is an aiohttp app to serve on loopback."""

    def __init__(self, api_key: str = "co-test-key", models: dict[str, list[str]] | None = None) -> None:
        self.api_key = api_key
        self.models = dict(DEFAULT_MODELS if models is None else models)
        self.requests: list[Recorded] = []
        self.page_limit = 1000
        #: Write stream frames in small pieces, as a slow network would deliver them.
        self.fragment_writes = False
        self.base_url = ""  # set by whoever serves the app
        self._replies: deque[Reply] = deque()
        self._failures: deque[_Failure] = deque()
        self.app = web.Application()
        self.app.router.add_post("/v2/chat", self._chat)
        self.app.router.add_get("/v1/models", self._models)

    # ------------------------------------------------------------------ knobs

    def reply_with(self, *replies: Reply) -> None:
        """Answer the next chat requests with these replies, in order."""
        self._replies.extend(replies)

    def fail_next(self, count: int = 1, *, status: int = 500, message: str = "internal server error",
                  retry_after: str | int | None = None) -> None:
        """Make the next ``count`` requests (any endpoint) fail with ``status`` and ``{"message": message}``."""
        ra = None if retry_after is None else str(retry_after)
        self._failures.extend(_Failure(status, message, ra) for _ in range(count))

    @property
    def chat_bodies(self) -> list[Any]:
        """The JSON bodies of every ``POST /v2/chat`` received."""
        return [r.body for r in self.requests if r.path == "/v2/chat"]

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response({"id": str(uuid.uuid4()), "message": message}, status=status, headers=headers)

    async def _record(self, request: web.Request) -> Recorded:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        rec = Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        self.requests.append(rec)
        return rec

    def _gate(self, request: web.Request) -> web.Response | None:
        """Injected failures first, then authentication, as the real front door orders them."""
        if self._failures:
            f = self._failures.popleft()
            return self._error(f.status, f.message, {"Retry-After": f.retry_after} if f.retry_after else None)
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if not auth:
            return self._error(401, "no api key supplied")
        if scheme.lower() != "bearer" or token.strip() != self.api_key:
            return self._error(401, "invalid api token")
        return None

    # ------------------------------------------------------------------ GET /v1/models

    async def _models(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if (refused := self._gate(request)) is not None:
            return refused
        try:
            size = int(rec.query.get("page_size", "20"))
        except ValueError:
            return self._error(400, "invalid request: page_size must be a number")
        if not 1 <= size <= 1000:
            return self._error(400, "invalid request: page_size must be between 1 and 1000")
        endpoint = rec.query.get("endpoint")
        if endpoint is not None and endpoint not in ENDPOINTS:
            return self._error(400, f"invalid request: endpoint must be one of {', '.join(sorted(ENDPOINTS))}")
        names = [n for n, eps in self.models.items() if endpoint is None or endpoint in eps]
        start = 0
        if "page_token" in rec.query:
            try:
                start = int(rec.query["page_token"].removeprefix("page-"))
            except ValueError:
                return self._error(400, "invalid request: invalid page_token")
        size = min(size, self.page_limit)
        page = names[start : start + size]
        body: dict[str, Any] = {"models": [
            {"name": n, "endpoints": self.models[n], "finetuned": False, "context_length": 128000.0,
             "tokenizer_url": f"https://storage.googleapis.com/cohere-public/tokenizers/{n}.json",
             "default_endpoints": [], "features": ["tools", "json_mode"] if "chat" in self.models[n] else []}
            for n in page
        ]}
        if start + size < len(names):
            body["next_page_token"] = f"page-{start + size}"
        return web.json_response(body)

    # ------------------------------------------------------------------ POST /v2/chat

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if (refused := self._gate(request)) is not None:
            return refused
        if not request.content_type.startswith("application/json"):
            return self._error(400, "invalid request: Content-Type must be application/json")
        try:
            self._validate(rec.body)
        except BadRequest as exc:
            return self._error(exc.status, exc.message)
        body: dict[str, Any] = rec.body
        reply = self._replies.popleft() if self._replies else self._default_reply(body)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        result = self._answer(body, reply)
        if body.get("stream"):
            return await self._stream(request, result, reply)
        return web.json_response(result)

    def _validate(self, body: Any) -> None:
        """Refuse what the real Chat v2 endpoint refuses (a BadRequest with its status and message)."""
        if not isinstance(body, dict):
            raise BadRequest("invalid request: body must be a JSON object")
        for key in body:
            if key not in CHAT_FIELDS:
                raise BadRequest(f"invalid request: unknown field: parameter {key} is not a valid field")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("invalid request: model must be specified")
        if model not in self.models:
            raise BadRequest(f"model '{model}' not found, make sure the correct model ID was used "
                             "and that you have access to the model.", 404)
        if "chat" not in self.models[model]:
            raise BadRequest(f"invalid request: model '{model}' does not support the chat endpoint")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise BadRequest("invalid request: stream must be a boolean")
        self._validate_messages(body.get("messages"))
        self._validate_numbers(body)
        stops = body.get("stop_sequences")
        if stops is not None and (not isinstance(stops, list) or len(stops) > 5
                                  or not all(isinstance(s, str) for s in stops)):
            raise BadRequest("invalid request: stop_sequences must be a list of at most 5 strings")
        if body.get("safety_mode") not in (None, "CONTEXTUAL", "STRICT", "OFF"):
            raise BadRequest("invalid request: safety_mode must be one of CONTEXTUAL, STRICT, OFF")
        fmt = body.get("response_format")
        if fmt is not None:
            if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object"):
                raise BadRequest("invalid request: response_format.type must be one of text, json_object")
            if "json_schema" in fmt and (fmt["type"] != "json_object" or not isinstance(fmt["json_schema"], dict)):
                raise BadRequest("invalid request: response_format.json_schema must be an object "
                                 "and needs type json_object")
            unknown = sorted(set(fmt) - {"type", "json_schema"})
            if unknown:
                raise BadRequest(f"invalid request: unknown field: parameter response_format.{unknown[0]} "
                                 "is not a valid field")
        self._validate_tools(body)

    @staticmethod
    def _validate_numbers(body: dict[str, Any]) -> None:
        def number(name: str, low: float | None, high: float | None, integer: bool = False) -> None:
            if name not in body or body[name] is None:
                return
            value = body[name]
            kind = int if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise BadRequest(f"invalid request: {name} must be {'an integer' if integer else 'a number'}")
            if (low is not None and value < low) or (high is not None and value > high):
                bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
                raise BadRequest(f"invalid request: {name} must be {bounds}")

        number("temperature", 0, None)
        number("p", 0.01, 0.99)
        number("k", 0, 500, integer=True)
        number("frequency_penalty", 0, 1)
        number("presence_penalty", 0, 1)
        number("max_tokens", 1, None, integer=True)
        number("seed", None, None, integer=True)

    @staticmethod
    def _validate_messages(messages: Any) -> None:
        if not isinstance(messages, list) or not messages:
            raise BadRequest("invalid request: messages must be a non-empty list")
        call_ids: set[str] = set()
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            if role not in MESSAGE_FIELDS:
                raise BadRequest(f"invalid request: messages[{i}].role must be one of system, user, assistant, tool")
            extra = set(m) - MESSAGE_FIELDS[role]
            if extra:
                raise BadRequest(f"invalid request: unknown field: parameter messages[{i}].{sorted(extra)[0]} "
                                 "is not a valid field")
            content = m.get("content")
            if role in ("system", "user", "tool") and content is None:
                raise BadRequest(f"invalid request: messages[{i}].content is required")
            if content is not None and not isinstance(content, str | list):
                raise BadRequest(f"invalid request: messages[{i}].content must be a string or a list")
            if isinstance(content, list):
                allowed = {"system": {"text"}, "user": {"text", "image_url", "document"},
                           "assistant": {"text", "thinking"}, "tool": {"text", "document"}}[role]
                for part in content:
                    if not isinstance(part, dict) or part.get("type") not in allowed:
                        raise BadRequest(f"invalid request: messages[{i}].content has an invalid part")
            if role == "assistant":
                calls = m.get("tool_calls")
                if calls is None and content is None:
                    raise BadRequest(f"invalid request: messages[{i}] needs content or tool_calls")
                for call in calls or []:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if (not isinstance(call.get("id"), str) or call.get("type") != "function"
                            or not isinstance(fn, dict) or not isinstance(fn.get("name"), str)
                            or not isinstance(fn.get("arguments"), str)):
                        raise BadRequest(f"invalid request: messages[{i}].tool_calls is malformed")
                    try:
                        json.loads(fn["arguments"])
                    except ValueError:
                        raise BadRequest(f"invalid request: messages[{i}].tool_calls arguments are not JSON") from None
                    call_ids.add(call["id"])
            if role == "tool":
                if not isinstance(m.get("tool_call_id"), str):
                    raise BadRequest(f"invalid request: messages[{i}].tool_call_id is required")
                if m["tool_call_id"] not in call_ids:
                    raise BadRequest(f"invalid request: messages[{i}].tool_call_id '{m['tool_call_id']}' "
                                     "does not match any previous tool call")

    @staticmethod
    def _validate_tools(body: dict[str, Any]) -> None:
        tools = body.get("tools")
        if tools is not None:
            if not isinstance(tools, list):
                raise BadRequest("invalid request: tools must be a list")
            for i, tool in enumerate(tools):
                fn = tool.get("function") if isinstance(tool, dict) else None
                if tool.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise BadRequest(f"invalid request: tools[{i}] must be a function tool with a name")
                extra = set(fn) - {"name", "description", "parameters"}
                if extra:
                    raise BadRequest(f"invalid request: unknown field: parameter tools[{i}].function."
                                     f"{sorted(extra)[0]} is not a valid field")
                if "parameters" in fn and not isinstance(fn["parameters"], dict):
                    raise BadRequest(f"invalid request: tools[{i}].function.parameters must be an object")
        choice = body.get("tool_choice")
        if choice is not None:
            if choice not in ("REQUIRED", "NONE"):
                raise BadRequest("invalid request: tool_choice must be one of REQUIRED, NONE")
            if not tools:
                raise BadRequest("invalid request: tool_choice requires tools")
        if "strict_tools" in body and not isinstance(body["strict_tools"], bool):
            raise BadRequest("invalid request: strict_tools must be a boolean")

    # ------------------------------------------------------------------ answers

    @staticmethod
    def _user_text(body: dict[str, Any]) -> str:
        for m in reversed(body["messages"]):
            if m["role"] == "user":
                return _content_text(m["content"])
        return ""

    def _default_reply(self, body: dict[str, Any]) -> Reply:
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_object":
            schema = fmt.get("json_schema")
            sample: Any = _sample(schema) if schema else {"echo": self._user_text(body)}
            return Reply(text=json.dumps(sample))
        return Reply(text=f"Echo: {self._user_text(body)}")

    def _answer(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        """The non-streamed v2 response for ``reply``, with max_tokens and stop_sequences applied."""
        input_tokens = sum(len(_content_text(m.get("content")).split()) for m in body["messages"])
        text, finish = reply.text, "COMPLETE"
        for stop in body.get("stop_sequences") or []:
            if stop in text:
                text, finish = text[: text.index(stop)], "STOP_SEQUENCE"
        words = text.split(" ")
        if body.get("max_tokens") is not None and len(words) > body["max_tokens"]:
            text, finish = " ".join(words[: body["max_tokens"]]), "MAX_TOKENS"
        message: dict[str, Any] = {"role": "assistant"}
        if reply.tool_calls and body.get("tool_choice") != "NONE":
            message["tool_plan"] = reply.tool_plan or "I will use the tools."
            message["tool_calls"] = [
                {"id": f"{name}_{uuid.uuid4().hex[:12]}", "type": "function",
                 "function": {"name": name, "arguments": json.dumps(args)}}
                for name, args in reply.tool_calls
            ]
            finish = "TOOL_CALL"
            output_tokens = sum(len(json.dumps(a).split()) for _, a in reply.tool_calls)
        else:
            message["content"] = [{"type": "text", "text": text}]
            output_tokens = len(text.split())
        if reply.finish_reason is not None:
            finish = reply.finish_reason
        return {
            "id": str(uuid.uuid4()),
            "finish_reason": finish,
            "message": message,
            "usage": {"billed_units": {"input_tokens": input_tokens, "output_tokens": output_tokens},
                      "tokens": {"input_tokens": input_tokens + TEMPLATE_TOKENS, "output_tokens": output_tokens}},
        }

    @staticmethod
    def _events(result: dict[str, Any]) -> list[dict[str, Any]]:
        """The v2 stream events that carry ``result``, in Cohere's order."""
        message = result["message"]
        events: list[dict[str, Any]] = [{
            "id": result["id"], "type": "message-start",
            "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [],
                                  "citations": []}},
        }]
        if "tool_calls" in message:
            for piece in _pieces(message["tool_plan"]):
                events.append({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}})
            for i, call in enumerate(message["tool_calls"]):
                events.append({"type": "tool-call-start", "index": i, "delta": {"message": {"tool_calls": {
                    "id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}}}})
                args = call["function"]["arguments"]
                for start in range(0, len(args), 5):
                    events.append({"type": "tool-call-delta", "index": i, "delta": {"message": {
                        "tool_calls": {"function": {"arguments": args[start : start + 5]}}}}})
                events.append({"type": "tool-call-end", "index": i})
        else:
            events.append({"type": "content-start", "index": 0,
                           "delta": {"message": {"content": {"type": "text", "text": ""}}}})
            for piece in _pieces(message["content"][0]["text"]):
                events.append({"type": "content-delta", "index": 0,
                               "delta": {"message": {"content": {"text": piece}}}})
            events.append({"type": "content-end", "index": 0})
        events.append({"type": "message-end",
                       "delta": {"finish_reason": result["finish_reason"], "usage": result["usage"]}})
        return events

    async def _stream(self, request: web.Request, result: dict[str, Any], reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        for n, event in enumerate(self._events(result)):
            if reply.cut_after is not None and n >= reply.cut_after:
                # Drop the connection mid-stream, as a failing upstream would.
                assert request.transport is not None
                request.transport.close()
                return response
            frame = f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()
            if self.fragment_writes:
                for start in range(0, len(frame), 7):
                    await response.write(frame[start : start + 7])
                    await asyncio.sleep(0)
            else:
                await response.write(frame)
        await response.write_eof()
        return response


def _content_text(content: Any) -> str:
    """The text of a message's content (a string, or a list of parts whose text parts count)."""
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")


def _pieces(text: str) -> list[str]:
    """``text`` split into word-sized deltas that join back to it exactly."""
    pieces, current = [], ""
    for ch in text:
        if ch == " " and current:
            pieces.append(current)
            current = ""
        current += ch
    if current:
        pieces.append(current)
    return pieces


def _sample(schema: dict[str, Any]) -> Any:
    """A value that satisfies a simple JSON schema (what a schema-constrained model would emit)."""
    kind = schema.get("type")
    if kind == "object":
        return {k: _sample(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_sample(schema["items"])] if isinstance(schema.get("items"), dict) else []
    return {"string": "text", "integer": 1, "number": 1.5, "boolean": True}.get(str(kind))
