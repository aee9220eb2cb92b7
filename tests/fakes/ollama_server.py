"""A protocol-faithful fake of Ollama's native API (``/api/chat``, ``/api/tags``, ``/api/version``, ``/``).

Validation follows Ollama's Go server, with its error shape ``{"error": "..."}``:

* ``model`` is required (400) and must be pulled (404 ``model "x" not found,
  try pulling it first``);
* a message's ``content`` must be a string (Ollama has no content parts),
  ``images`` must be bare base64 (a ``data:`` prefix fails to decode), tool
  call ``arguments`` must be objects, and roles are system/user/assistant/tool;
* ``format`` is ``"json"`` or a JSON schema object; ``options`` values have
  their documented types;
* ``stream`` defaults to **true**, as in the real server.

Answers: ``{"model", "created_at", "message": {"role", "content",
"tool_calls"?}, "done": true, "done_reason", "total_duration", ...,
"prompt_eval_count", "eval_count"}``; streams are ``application/x-ndjson``, one
object per line with ``done: false`` and a final line with ``done: true``, the
reason and the counts. Ollama sends each tool call whole, in one line.
If :attr:`ChatFake.api_key` is set, ``Authorization: Bearer`` is required (as
behind an authenticating proxy).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .chat_fake import ChatFake, Reply

ROLES = frozenset({"system", "user", "assistant", "tool"})
INT_OPTIONS = frozenset({"num_predict", "seed", "top_k", "num_ctx", "num_keep", "repeat_last_n", "num_gpu"})
FLOAT_OPTIONS = frozenset({"temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty",
                           "repeat_penalty", "typical_p"})


class OllamaError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class FakeOllama(ChatFake):
    """Ollama's native API on loopback (see the module docs)."""

    default_models = ("llama3.1:8b", "qwen2.5:7b", "llava:7b")

    def __init__(self, *, api_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(api_key=api_key, **kwargs)

    def install(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self.chat)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_get("/api/version", self.version)
        app.router.add_get("/", self.root)

    def error_response(self, status: int, message: str, *, headers: dict[str, str] | None = None,
                       kind: str | None = None) -> web.Response:
        return web.json_response({"error": message}, status=status, headers=headers)

    def stream_error_frame(self, message: str) -> bytes:
        return (json.dumps({"error": message}) + "\n").encode()

    def _check_key(self, request: web.Request) -> web.Response | None:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self.error_response(401, "unauthorized")
        return None

    # ----------------------------------------------------------------- handlers

    async def root(self, request: web.Request) -> web.Response:
        await self.record(request)
        if (early := await self.intercept(request)) is not None:
            return early  # type: ignore[return-value]
        return web.Response(text="Ollama is running")

    async def version(self, request: web.Request) -> web.Response:
        await self.record(request)
        return web.json_response({"version": "0.6.5"})

    async def tags(self, request: web.Request) -> web.Response:
        await self.record(request)
        if (denied := self._check_key(request)) is not None:
            return denied
        if (early := await self.intercept(request)) is not None:
            return early  # type: ignore[return-value]
        return web.json_response({"models": [{
            "name": m, "model": m, "modified_at": "2025-01-01T00:00:00Z", "size": 4920753328,
            "digest": "sha256:" + "0" * 64,
            "details": {"parent_model": "", "format": "gguf", "family": m.split(":")[0], "families": None,
                        "parameter_size": "8.0B", "quantization_level": "Q4_K_M"},
        } for m in self.models]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        rec = await self.record(request)
        if (denied := self._check_key(request)) is not None:
            return denied
        if (early := await self.intercept(request)) is not None:
            return early
        if not isinstance(rec.body, dict):
            return self.error_response(400, "invalid character looking for beginning of value")
        try:
            prompt_text, last_user = self._validate(rec.body)
        except OllamaError as e:
            return self.error_response(e.status, e.message)
        body = rec.body
        default = Reply(text=json.dumps({"echo": last_user}) if body.get("format") else f"Echo: {last_user}")
        reply = self.next_reply(default)
        if body.get("stream", True):
            return await self.send_stream(request, self._lines(body["model"], reply, prompt_text),
                                          "application/x-ndjson")
        return web.json_response(self._final(body["model"], reply, prompt_text, reply.text or "", with_calls=True))

    # ----------------------------------------------------------------- validation

    def _validate(self, body: dict[str, Any]) -> tuple[str, str]:
        model = body.get("model")
        if not model:
            raise OllamaError(400, "model is required")
        if self.models and model not in self.models:
            raise OllamaError(404, f'model "{model}" not found, try pulling it first')
        texts, last_user = [], ""
        for msg in body.get("messages") or ():
            role = msg.get("role")
            if role not in ROLES:
                raise OllamaError(400, f"invalid role: {role!r}")
            content = msg.get("content", "")
            if not isinstance(content, str):
                raise OllamaError(400, "json: cannot unmarshal array into Go struct field Message.messages.content "
                                       "of type string")
            for image in msg.get("images") or ():
                try:
                    base64.b64decode(image, validate=True)
                except (binascii.Error, ValueError, TypeError):
                    raise OllamaError(400, "illegal base64 data at input byte 4") from None
            for call in msg.get("tool_calls") or ():
                if not isinstance((call.get("function") or {}).get("arguments"), dict):
                    raise OllamaError(400, "json: cannot unmarshal string into Go struct field "
                                           "ToolCallFunction.messages.tool_calls.function.arguments of type "
                                           "api.ToolCallFunctionArguments")
            texts.append(content)
            if role == "user":
                last_user = content
        fmt = body.get("format")
        if fmt is not None and fmt != "json" and not isinstance(fmt, dict):
            raise OllamaError(400, f"invalid format: {json.dumps(fmt)}; expected \"json\" or a valid JSON schema")
        for key, value in (body.get("options") or {}).items():
            if key in INT_OPTIONS and (not isinstance(value, int) or isinstance(value, bool)):
                raise OllamaError(400, f"option {key!r} must be of type integer")
            if key in FLOAT_OPTIONS and (not isinstance(value, int | float) or isinstance(value, bool)):
                raise OllamaError(400, f"option {key!r} must be of type float")
            if key == "stop" and not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
                raise OllamaError(400, "option 'stop' must be of type array")
        for tool in body.get("tools") or ():
            if tool.get("type") != "function" or not (tool.get("function") or {}).get("name"):
                raise OllamaError(400, "invalid tool: expected a function with a name")
        return "\n".join(texts), last_user

    # ----------------------------------------------------------------- rendering

    @staticmethod
    def _calls(reply: Reply) -> list[dict[str, Any]]:
        calls = []
        for i, call in enumerate(reply.tool_calls):
            rendered: dict[str, Any] = {"function": {"index": i, "name": call.name, "arguments": call.arguments}}
            if call.id:  # newer Ollama versions give tool calls an id
                rendered["id"] = call.id
            calls.append(rendered)
        return calls

    def _final(self, model: str, reply: Reply, prompt_text: str, content: str, with_calls: bool) -> dict[str, Any]:
        prompt, completion = reply.usage(prompt_text)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if with_calls and reply.tool_calls:
            message["tool_calls"] = self._calls(reply)
        return {
            "model": model, "created_at": _now(), "message": message,
            "done_reason": "length" if reply.finish_reason == "length" else "stop", "done": True,
            "total_duration": 5_000_000, "load_duration": 1_000_000, "prompt_eval_count": prompt,
            "prompt_eval_duration": 1_000_000, "eval_count": completion, "eval_duration": 3_000_000,
        }

    def _lines(self, model: str, reply: Reply, prompt_text: str) -> list[bytes]:
        def line(obj: dict[str, Any]) -> bytes:
            return (json.dumps(obj) + "\n").encode()

        lines = [line({"model": model, "created_at": _now(), "message": {"role": "assistant", "content": piece},
                       "done": False}) for piece in reply.text_pieces()]
        if reply.tool_calls:
            lines.append(line({"model": model, "created_at": _now(),
                               "message": {"role": "assistant", "content": "", "tool_calls": self._calls(reply)},
                               "done": False}))
        lines.append(line(self._final(model, reply, prompt_text, "", with_calls=False)))
        return lines
