"""A protocol-faithful fake of the Gemini API (``generateContent``, ``streamGenerateContent``, ``models``).

Validation follows the real API, with Google's error shape ``{"error": {"code",
"message", "status", "details"?}}``:

* the key comes in ``x-goog-api-key`` or ``?key=`` (both recorded, so a test
  can check which); none is a 403 ``PERMISSION_DENIED``, a wrong one a 400
  ``INVALID_ARGUMENT`` "API key not valid" with an ``API_KEY_INVALID`` detail;
* proto-JSON strictness: unknown fields are refused (``Invalid JSON payload
  received. Unknown name "x" at '...': Cannot find field.``), including JSON
  schema keywords Gemini's ``Schema`` lacks (``additionalProperties``...);
* ``contents`` is required, roles are ``user``/``model``, parts are non-empty
  and hold exactly one of text / inlineData (valid base64) / fileData /
  functionCall / functionResponse; an OBJECT schema in a function declaration
  needs properties; ``responseSchema`` needs ``responseMimeType:
  application/json``; an unknown model is a 404 ``NOT_FOUND``;
* 429s carry a ``google.rpc.RetryInfo`` detail (``retryDelay``) rather than a
  ``Retry-After`` header, as Gemini does.

Answers: ``{"candidates": [{"content": {"parts", "role": "model"},
"finishReason", "index"}], "usageMetadata": {...}, "modelVersion",
"responseId"}``, one candidate per ``candidateCount``. ``streamGenerateContent``
with ``alt=sse`` sends ``data: <partial response>\\r\\n\\r\\n`` events (no
``[DONE]``; the last one has the ``finishReason`` and full usage); without
``alt=sse`` it answers a JSON array of the partial responses.
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

STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
TOP_LEVEL = frozenset({"contents", "systemInstruction", "tools", "toolConfig", "generationConfig",
                       "safetySettings", "cachedContent"})
GENERATION_CONFIG = frozenset({
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "candidateCount",
    "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty", "frequencyPenalty",
    "responseLogprobs", "logprobs", "thinkingConfig", "responseModalities", "mediaResolution",
})
PART_DATA = frozenset({"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
                       "codeExecutionResult"})
PART_KEYS = PART_DATA | {"thought", "thoughtSignature", "videoMetadata"}
SCHEMA_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum",
})
TYPES = frozenset({"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"})
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
_FN_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]{0,63}$")


class GeminiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _unknown(name: str, at: str) -> GeminiError:
    return GeminiError(400, f"Invalid JSON payload received. Unknown name \"{name}\" at '{at}': Cannot find field.")


class FakeGemini(ChatFake):
    """The Gemini API on loopback (see the module docs)."""

    default_models = ("gemini-2.0-flash", "gemini-2.5-flash", "gemini-1.5-pro")
    #: Models listed but unable to ``generateContent`` (providers should leave them out).
    embedding_models = ("text-embedding-004",)
    #: Largest model-list page served whatever ``pageSize`` asks (shrink it to exercise paging).
    page_limit = 1000

    def install(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{model_action}", self.generate)
        app.router.add_get("/v1beta/models", self.list_models)

    def error_response(self, status: int, message: str, *, headers: dict[str, str] | None = None,
                       kind: str | None = None, details: list[dict[str, Any]] | None = None) -> web.Response:
        headers = dict(headers or {})
        error: dict[str, Any] = {"code": status, "message": message,
                                 "status": kind or STATUS_NAMES.get(status, "UNKNOWN")}
        retry_after = headers.pop("Retry-After", None)
        if retry_after is not None:  # Gemini says when to retry in the body, not in a header
            details = [*(details or []), {"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                          "retryDelay": f"{retry_after}s"}]
        if details:
            error["details"] = details
        return web.json_response({"error": error}, status=status, headers=headers)

    def stream_error_frame(self, message: str) -> bytes:
        return b"data: " + json.dumps({"error": {"code": 500, "message": message, "status": "INTERNAL"}}).encode() \
            + b"\r\n\r\n"

    def _check_key(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return self.error_response(403, "Method doesn't allow unregistered callers (callers without established "
                                            "identity). Please use API Key or other form of API consumer identity "
                                            "to call this API.")
        if key != self.api_key:
            return self.error_response(400, "API key not valid. Please pass a valid API key.", details=[{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}])
        return None

    # ----------------------------------------------------------------- handlers

    async def list_models(self, request: web.Request) -> web.Response:
        await self.record(request)
        if (denied := self._check_key(request)) is not None:
            return denied
        if (early := await self.intercept(request)) is not None:
            return early  # type: ignore[return-value]
        entries = [(m, ["generateContent", "countTokens"]) for m in self.models]
        entries += [(m, ["embedContent"]) for m in self.embedding_models]
        size = min(int(request.query.get("pageSize", "50")), self.page_limit)
        start = int(request.query.get("pageToken") or 0)
        page = entries[start:start + size]
        body: dict[str, Any] = {"models": [{
            "name": f"models/{m}", "version": "001", "displayName": m, "description": m,
            "inputTokenLimit": 1048576, "outputTokenLimit": 8192, "supportedGenerationMethods": methods,
        } for m, methods in page]}
        if start + size < len(entries):
            body["nextPageToken"] = str(start + size)
        return web.json_response(body)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        rec = await self.record(request)
        if (denied := self._check_key(request)) is not None:
            return denied
        model, _, method = request.match_info["model_action"].partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            return self.error_response(404, f"Method not found: {method!r}")
        if (early := await self.intercept(request)) is not None:
            return early
        if self.models and model not in self.models:
            return self.error_response(404, f"models/{model} is not found for API version v1beta, or is not "
                                            "supported for generateContent. Call ListModels to see the list of "
                                            "available models and their supported methods.")
        if not isinstance(rec.body, dict):
            return self.error_response(400, "Invalid JSON payload received. Unexpected token.")
        try:
            prompt_text, last_user = self._validate(rec.body)
        except GeminiError as e:
            return self.error_response(e.status, e.message)
        reply = self.next_reply(self._default_reply(rec.body, last_user))
        config = rec.body.get("generationConfig") or {}
        n = int(config.get("candidateCount") or 1)
        responses = self._responses(model, reply, prompt_text, n)
        if method == "generateContent":
            return web.json_response(self._merge(responses))
        if request.query.get("alt") == "sse":
            frames = [b"data: " + json.dumps(r).encode() + b"\r\n\r\n" for r in responses]
            return await self.send_stream(request, frames, "text/event-stream")
        return web.json_response(responses)  # without alt=sse: one JSON array

    @staticmethod
    def _default_reply(body: dict[str, Any], last_user: str) -> Reply:
        calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        if calling.get("mode") == "ANY":
            names = calling.get("allowedFunctionNames") or [
                d["name"] for t in body.get("tools") or () for d in t.get("functionDeclarations") or ()]
            return Reply(tool_calls=[ToolCall(names[0], {"echo": last_user})])
        if (body.get("generationConfig") or {}).get("responseMimeType") == "application/json":
            return Reply(text=json.dumps({"echo": last_user}))
        return Reply(text=f"Echo: {last_user}")

    # ----------------------------------------------------------------- validation

    def _validate(self, body: dict[str, Any]) -> tuple[str, str]:
        for key in body:
            if key not in TOP_LEVEL:
                raise _unknown(key, "")
        contents = body.get("contents")
        if not contents:
            raise GeminiError(400, "* GenerateContentRequest.contents: contents is not specified")
        texts: list[str] = []
        last_user = ""
        system = body.get("systemInstruction")
        if system is not None:
            texts += self._parts(system.get("parts"), "system_instruction", "user")
        for i, content in enumerate(contents):
            role = content.get("role", "user")
            if role not in ("user", "model"):
                raise GeminiError(400, "Please use a valid role: user, model.")
            found = self._parts(content.get("parts"), f"contents[{i}]", role)
            texts += found
            if role == "user" and found:
                last_user = found[-1]
        config = body.get("generationConfig") or {}
        for key in config:
            if key not in GENERATION_CONFIG:
                raise _unknown(key, "generation_config")
        if "responseSchema" in config:
            if config.get("responseMimeType") != "application/json":
                raise GeminiError(400, "* GenerateContentRequest.generation_config.response_schema: "
                                       "response_mime_type must be application/json when response_schema is set")
            self._schema(config["responseSchema"], "generation_config.response_schema")
        temperature = config.get("temperature")
        if temperature is not None and not 0 <= temperature <= 2:
            raise GeminiError(400, "* GenerateContentRequest.generation_config.temperature: temperature must be "
                                   "in [0.0, 2.0]")
        for t, tool in enumerate(body.get("tools") or ()):
            for d, decl in enumerate(tool.get("functionDeclarations") or ()):
                where = f"tools[{t}].function_declarations[{d}]"
                if not _FN_NAME.match(str(decl.get("name", ""))):
                    raise GeminiError(400, f"* GenerateContentRequest.{where}.name: Invalid function name.")
                for key in decl:
                    if key not in ("name", "description", "parameters", "parametersJsonSchema", "behavior"):
                        raise _unknown(key, where)
                if "parameters" in decl:
                    self._schema(decl["parameters"], f"{where}.parameters", function=True)
        calling = (body.get("toolConfig") or {}).get("functionCallingConfig")
        if calling is not None:
            if calling.get("mode") not in ("AUTO", "ANY", "NONE", "VALIDATED"):
                raise GeminiError(400, "Invalid value at 'tool_config.function_calling_config.mode'")
            if calling.get("allowedFunctionNames") and calling["mode"] != "ANY":
                raise GeminiError(400, "* GenerateContentRequest.tool_config.function_calling_config."
                                       "allowed_function_names: only allowed when mode is ANY")
        return "\n".join(texts), last_user

    def _parts(self, parts: Any, where: str, role: str) -> list[str]:
        if not parts:
            raise GeminiError(400, f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
        texts = []
        for j, part in enumerate(parts):
            at = f"{where}.parts[{j}]"
            for key in part:
                if key not in PART_KEYS:
                    raise _unknown(key, at)
            data = [k for k in part if k in PART_DATA]
            if len(data) != 1:
                raise GeminiError(400, f"* GenerateContentRequest.{at}.data: required oneof field 'data' must "
                                       "have one initialized field")
            kind = data[0]
            if kind == "text":
                texts.append(str(part["text"]))
            elif kind == "inlineData":
                inline = part["inlineData"]
                if not inline.get("mimeType"):
                    raise GeminiError(400, f"* GenerateContentRequest.{at}.inline_data.mime_type: mime_type is "
                                           "not specified")
                try:
                    base64.b64decode(inline.get("data", ""), validate=True)
                except (binascii.Error, ValueError):
                    raise GeminiError(400, f"Invalid value at '{at}.inline_data.data' (TYPE_BYTES), Base64 "
                                           "decoding failed") from None
            elif kind == "functionCall":
                if role != "model" or not part["functionCall"].get("name"):
                    raise GeminiError(400, f"* GenerateContentRequest.{at}.function_call: a function call needs a "
                                           "name and belongs to a model turn")
            elif kind == "functionResponse":
                response = part["functionResponse"]
                if role != "user" or not response.get("name") or not isinstance(response.get("response"), dict):
                    raise GeminiError(400, f"* GenerateContentRequest.{at}.function_response: a function response "
                                           "needs a name and an object response, in a user turn")
                texts.append(json.dumps(response["response"]))
        return texts

    def _schema(self, schema: Any, at: str, function: bool = False) -> None:
        if not isinstance(schema, dict):
            raise GeminiError(400, f"Invalid value at '{at}': expected a Schema object")
        for key, value in schema.items():
            if key not in SCHEMA_KEYS:
                raise _unknown(key, at)
            if key == "type" and str(value).upper() not in TYPES:
                raise GeminiError(400, f"Invalid value at '{at}.type' (type.googleapis.com/google.ai."
                                       f"generativelanguage.v1beta.Type), \"{value}\"")
        if function and str(schema.get("type", "")).upper() == "OBJECT" and not schema.get("properties"):
            raise GeminiError(400, f"* GenerateContentRequest.{at}.properties: should be non-empty for OBJECT type")
        for name, sub in (schema.get("properties") or {}).items():
            self._schema(sub, f"{at}.properties[{name}].value")
        if "items" in schema:
            self._schema(schema["items"], f"{at}.items")
        for k, sub in enumerate(schema.get("anyOf") or ()):
            self._schema(sub, f"{at}.any_of[{k}]")

    # ----------------------------------------------------------------- rendering

    def _responses(self, model: str, reply: Reply, prompt_text: str, n: int) -> list[dict[str, Any]]:
        """The partial responses a stream sends; :meth:`_merge` makes the one-shot answer from them."""
        prompt, completion = reply.usage(prompt_text)
        response_id = uuid.uuid4().hex[:22]
        pieces: list[list[dict[str, Any]]] = [[{"text": p}] for p in reply.text_pieces()]
        if reply.tool_calls:
            pieces.append([{"functionCall": {"name": c.name, "args": c.arguments}} for c in reply.tool_calls])
        if not pieces:
            pieces.append([{"text": ""}])
        out = []
        for k, parts in enumerate(pieces):
            last = k == len(pieces) - 1
            candidates = []
            for index in range(n):
                candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": index}
                if last:
                    candidate["finishReason"] = FINISH[reply.finish_reason]
                candidates.append(candidate)
            usage = {"promptTokenCount": prompt, "totalTokenCount": prompt + (completion * n if last else 0)}
            if last:
                usage["candidatesTokenCount"] = completion * n
            out.append({"candidates": candidates, "usageMetadata": usage, "modelVersion": model,
                        "responseId": response_id})
        return out

    @staticmethod
    def _merge(responses: list[dict[str, Any]]) -> dict[str, Any]:
        merged = json.loads(json.dumps(responses[-1]))
        for index, candidate in enumerate(merged["candidates"]):
            parts: list[dict[str, Any]] = []
            for response in responses:
                for part in response["candidates"][index]["content"]["parts"]:
                    if "text" in part and parts and "text" in parts[-1]:
                        parts[-1] = {"text": parts[-1]["text"] + part["text"]}
                    else:
                        parts.append(dict(part))
            candidate["content"]["parts"] = parts
        return merged
