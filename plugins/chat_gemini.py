"""Google Gemini (``generativelanguage.googleapis.com``), translated to and from OpenAI's format.

Calls ``POST {base}/v1beta/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``. The key travels in the ``x-goog-api-key``
header, never in the URL (AI Server put it in ``?key=``, where it ends up in
access logs and error messages).

Translation:

- ``system``/``developer`` messages -> ``systemInstruction``; user -> ``user``
  contents, assistant -> ``model`` contents (consecutive turns of one role merged);
- text parts -> ``text``; ``data:`` image URLs, ``input_audio`` and ``file``
  parts with ``data:`` file data -> ``inlineData`` (Gemini cannot fetch
  arbitrary ``http`` URLs, so those are refused with a 400);
- ``tools`` -> ``functionDeclarations`` (parameters reduced to Gemini's schema
  subset, local ``$ref``s inlined); assistant ``tool_calls`` -> ``functionCall``
  parts; ``tool`` messages -> ``functionResponse`` parts (named after the call
  they answer; a JSON-object result is passed as the response, anything else as
  ``{"result": text}``); ``tool_choice`` -> ``toolConfig.functionCallingConfig``;
- ``response_format`` json_object -> ``responseMimeType: application/json``,
  json_schema -> that plus ``responseSchema``;
- ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``stop``, ``seed``,
  ``n``, ``presence_penalty``, ``frequency_penalty`` -> ``generationConfig``.

Responses: each candidate becomes a choice; ``finishReason`` STOP -> ``stop``
(``tool_calls`` when the candidate calls functions), MAX_TOKENS -> ``length``,
SAFETY / RECITATION / BLOCKLIST / PROHIBITED_CONTENT / SPII -> ``content_filter``;
``usageMetadata`` -> usage (thinking tokens count as completion tokens).
Gemini's function calls carry no ids, so ids are made up (``call_...``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import attrs
from aiport.core.sdk import (
    ChatProviderType,
    HttpOptions,
    ProviderContext,
    hookimpl,
    is_retryable_status,
    iter_sse,
    rejected,
)

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
    tool_names_by_id,
    usage,
)

TYPE_NAME = "gemini"
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

_VERSIONED = re.compile(r"/v\d+[a-z0-9]*$")
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
#: The JSON-schema keywords Gemini's ``Schema`` object knows; the rest are dropped.
_SCHEMA_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example",
    "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum",
})
_REF = re.compile(r"^#/(?:\$defs|definitions)/(?P<name>.+)$")


@attrs.frozen
class GeminiOptions(HttpOptions):
    """Extra config keys of the ``gemini`` type."""

    #: API version path segment.
    api_version: str = "v1beta"


def gemini_schema(provider: str, schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> JSON:
    """A JSON schema reduced to Gemini's OpenAPI-style ``Schema`` subset.

    Local ``$ref``s are inlined, ``type: [X, "null"]`` becomes ``nullable``,
    ``oneOf`` becomes ``anyOf``, ``const`` a one-value ``enum``, and keywords
    Gemini rejects (``additionalProperties``, ``$schema``, ``strict``...) are dropped.
    """
    if depth > 40:
        raise rejected(provider, "the JSON schema nests too deeply for Gemini (a recursive $ref?)")
    if not isinstance(schema, dict):
        raise rejected(provider, "a JSON schema must be an object")
    if defs is None:
        defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    if "$ref" in schema:
        m = _REF.match(str(schema["$ref"]))
        if not m or m.group("name") not in defs:
            raise rejected(provider, f"cannot resolve the JSON schema reference {schema['$ref']!r} for Gemini")
        merged = {**defs[m.group("name")], **{k: v for k, v in schema.items() if k != "$ref"}}
        return gemini_schema(provider, merged, defs, depth + 1)
    out: JSON = {}
    for key, value in schema.items():
        if key == "type":
            types = value if isinstance(value, list) else [value]
            real = [str(t).upper() for t in types if t != "null"]
            if "null" in types:
                out["nullable"] = True
            if len(real) == 1:
                out["type"] = real[0]
            elif real:
                out["anyOf"] = [{"type": t} for t in real]
        elif key == "properties" and isinstance(value, dict):
            out[key] = {k: gemini_schema(provider, v, defs, depth + 1) for k, v in value.items()}
        elif key == "items":
            out[key] = gemini_schema(provider, value, defs, depth + 1)
        elif key in ("anyOf", "oneOf") and isinstance(value, list):
            options = []
            for option in value:
                if isinstance(option, dict) and option.get("type") == "null" and len(option) == 1:
                    out["nullable"] = True
                else:
                    options.append(gemini_schema(provider, option, defs, depth + 1))
            if len(options) == 1:
                out.update({k: v for k, v in options[0].items() if k not in out})
            elif options:
                out["anyOf"] = options
        elif key == "const":
            out["enum"] = [value]
        elif key in _SCHEMA_KEYS:
            out[key] = value
    return out


def _retry_delay(data: Any) -> float | None:
    """``retryDelay`` ("37s") of a ``google.rpc.RetryInfo`` error detail."""
    err = data.get("error") if isinstance(data, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(detail.get("retryDelay", "")))
            if m:
                return float(m.group(1))
    return None


class GeminiChatProvider(HttpChatProvider):
    """A provider speaking the Gemini API's ``generateContent``."""

    options_class = GeminiOptions

    def __init__(self, ctx: ProviderContext, *, type_name: str, default_base_url: str | None = None) -> None:
        super().__init__(ctx, type_name=type_name, default_base_url=default_base_url)
        base = self.base_url
        self.api_root = base if _VERSIONED.search(base) else f"{base}/{self.options.api_version}"

    def auth_headers(self) -> dict[str, str]:
        return self.key_headers("x-goog-api-key")

    def probe_url(self) -> str:
        return f"{self.api_root}/models?pageSize=1"

    def error_message(self, data: Any) -> str | None:
        # {"error": {"code": 400, "message": "...", "status": "INVALID_ARGUMENT"}}; streams without
        # alt=sse wrap it in a list.
        if isinstance(data, list) and data:
            data = data[0]
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            err = data["error"]
            if err.get("message"):
                return f"{err.get('status') or 'ERROR'}: {err['message']}"
        return super().error_message(data)

    def body_retry_after(self, data: Any) -> float | None:
        return _retry_delay(data)

    def _model_url(self, body: dict[str, Any], method: str) -> str:
        model = str(body.get("model") or "")
        if not model:
            raise rejected(self.name, "'model' is required")
        path = model if "/" in model else f"models/{model}"  # tunedModels/... are addressed as they are
        return f"{self.api_root}/{quote(path, safe='/')}:{method}"

    # ----------------------------------------------------------------- request

    def _payload(self, body: dict[str, Any]) -> JSON:
        name = self.name
        refuse_untranslatable(name, body, allow_n=True)
        messages = require_messages(name, body)
        system, contents = self._contents(messages)
        payload: JSON = {"contents": contents}
        if system:
            payload["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}

        config: JSON = {}
        for key, target in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"),
                            ("seed", "seed"), ("presence_penalty", "presencePenalty"),
                            ("frequency_penalty", "frequencyPenalty"), ("n", "candidateCount")):
            if body.get(key) is not None:
                config[target] = body[key]
        if (max_tokens := max_tokens_of(body)) is not None:
            config["maxOutputTokens"] = max_tokens
        if (stop := stop_list(body)) is not None:
            config["stopSequences"] = stop
        kind, schema, _ = response_format_of(name, body)
        if kind in ("json_object", "json_schema"):
            config["responseMimeType"] = "application/json"
        if kind == "json_schema":
            config["responseSchema"] = gemini_schema(name, schema)
        if config:
            payload["generationConfig"] = config

        tools = function_tools(name, body)
        if tools:
            declarations = []
            for tool in tools:
                declaration: JSON = {"name": tool["name"]}
                if tool["description"]:
                    declaration["description"] = tool["description"]
                params = tool["parameters"]
                # Gemini rejects an OBJECT without properties: a function without parameters has none.
                if isinstance(params, dict) and params.get("properties"):
                    declaration["parameters"] = gemini_schema(name, params)
                declarations.append(declaration)
            payload["tools"] = [{"functionDeclarations": declarations}]
            choice = tool_choice_of(name, body)
            if choice is not None:
                mode, fn = choice
                calling: JSON = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY",
                                          "function": "ANY"}[mode]}
                if fn:
                    calling["allowedFunctionNames"] = [fn]
                payload["toolConfig"] = {"functionCallingConfig": calling}
        return payload

    def _contents(self, messages: list[JSON]) -> tuple[list[str], list[JSON]]:
        system: list[str] = []
        contents: list[JSON] = []
        names = tool_names_by_id(messages)

        def push(role: str, parts: list[JSON]) -> None:
            if not parts:
                return
            if contents and contents[-1]["role"] == role:
                contents[-1]["parts"].extend(parts)
            else:
                contents.append({"role": role, "parts": list(parts)})

        for i, message in enumerate(messages):
            where = f"messages[{i}]"
            role = message.get("role")
            if role in ("system", "developer"):
                text = text_only(self.name, message, where)
                if text:
                    system.append(text)
            elif role == "user":
                push("user", self._user_parts(message, where))
            elif role == "assistant":
                text = text_only(self.name, message, where)
                parts: list[JSON] = [{"text": text}] if text else []
                for j, call in enumerate(message.get("tool_calls") or ()):
                    fn = call.get("function") or {}
                    parts.append({"functionCall": {
                        "name": fn.get("name"),
                        "args": parse_arguments(self.name, fn.get("arguments"), f"{where}.tool_calls[{j}]"),
                    }})
                push("model", parts)
            elif role == "tool":
                call_id = str(message.get("tool_call_id") or "")
                fn_name = names.get(call_id) or message.get("name")
                if not fn_name:
                    raise rejected(self.name, f"{where}: tool_call_id {call_id!r} answers no earlier tool call; "
                                              "Gemini needs the function's name")
                push("user", [{"functionResponse": {
                    "name": fn_name, "response": _tool_response(text_only(self.name, message, where)),
                }}])
            else:
                raise rejected(self.name, f"{where}.role {role!r} is not supported")
        if not contents:
            raise rejected(self.name, "Gemini needs at least one user or assistant message "
                                      "besides the system prompt")
        return system, contents

    def _user_parts(self, message: JSON, where: str) -> list[JSON]:
        parts: list[JSON] = []
        for part in message_parts(self.name, message, where):
            kind = part["type"]
            if kind == "text":
                if part.get("text"):
                    parts.append({"text": str(part["text"])})
            elif kind == "image_url":
                data = parse_data_url(image_url_of(part))
                if data is None:
                    raise rejected(self.name, f"{where}: Gemini takes images as data: URLs only, "
                                              "not links it would have to download")
                parts.append({"inlineData": {"mimeType": data[0], "data": data[1]}})
            elif kind == "input_audio":
                audio = part.get("input_audio") or {}
                parts.append({"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}",
                                             "data": str(audio.get("data") or "")}})
            elif kind == "file":
                data = parse_data_url(str((part.get("file") or {}).get("file_data") or ""))
                if data is None:
                    raise rejected(self.name, f"{where}: Gemini takes files as data: URLs in file_data only")
                parts.append({"inlineData": {"mimeType": data[0], "data": data[1]}})
            else:
                raise rejected(self.name, f"{where}: {kind!r} content parts are not supported by Gemini")
        return parts

    # ----------------------------------------------------------------- response

    @staticmethod
    def _usage(meta: JSON | None) -> JSON | None:
        if not meta:
            return None
        prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
        completion_tokens = int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0)
        return usage(prompt, completion_tokens)

    @staticmethod
    def _finish(reason: str | None, has_tool_calls: bool) -> str:
        finish = _FINISH.get(str(reason), "stop")
        return "tool_calls" if has_tool_calls and finish == "stop" else finish

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """``generateContent``, answered as a ``chat.completion`` (one choice per candidate)."""
        data = await self.request_json("POST", self._model_url(body, "generateContent"),
                                       json_body=self._payload(body))
        if not isinstance(data, dict):
            raise self.malformed("the answer is not a JSON object")
        choices = []
        for i, candidate in enumerate(data.get("candidates") or ()):
            texts, calls = [], []
            for part in (candidate.get("content") or {}).get("parts") or ():
                if "text" in part and not part.get("thought"):
                    texts.append(str(part["text"]))
                elif "functionCall" in part:
                    fn = part["functionCall"]
                    calls.append(function_call(str(fn.get("id") or tool_call_id()), str(fn.get("name")),
                                               dumps(fn.get("args") or {})))
            choices.append({"index": candidate.get("index", i), "message": assistant_message("".join(texts), calls),
                            "logprobs": None, "finish_reason": self._finish(candidate.get("finishReason"),
                                                                            bool(calls))})
        if not choices:
            # The prompt itself was blocked (promptFeedback.blockReason): nothing was generated.
            choices.append({"index": 0, "message": assistant_message("", []), "logprobs": None,
                            "finish_reason": "content_filter"})
        return completion(str(data.get("modelVersion") or body.get("model")), choices,
                          self._usage(data.get("usageMetadata")))

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """``streamGenerateContent?alt=sse``; each SSE event is a partial ``GenerateContentResponse``."""
        url = self._model_url(body, "streamGenerateContent") + "?alt=sse"
        maker = ChunkMaker(str(body.get("model")))
        started: set[int] = set()
        tool_counts: dict[int, int] = {}
        finishes: dict[int, str] = {}
        meta: JSON | None = None
        async with self.open("POST", url, json_body=self._payload(body), stream=True) as resp:
            async for event in iter_sse(resp.content):
                data = self.parse_json(event.data)
                if not isinstance(data, dict):
                    raise self.malformed("a stream event is not a JSON object")
                if isinstance(data.get("error"), dict):
                    code = data["error"].get("code")
                    status = code if isinstance(code, int) else 500
                    raise self.stream_error(self.error_message(data) or "error in the stream", status=status,
                                            retryable=is_retryable_status(status))
                if data.get("modelVersion"):
                    maker.model = str(data["modelVersion"])
                meta = data.get("usageMetadata") or meta
                for candidate in data.get("candidates") or ():
                    index = int(candidate.get("index", 0))
                    if index not in started:
                        started.add(index)
                        yield maker.chunk({"role": "assistant", "content": ""}, index=index)
                    for part in (candidate.get("content") or {}).get("parts") or ():
                        if part.get("text") and not part.get("thought"):
                            yield maker.chunk({"content": part["text"]}, index=index)
                        elif "functionCall" in part:
                            fn = part["functionCall"]
                            n = tool_counts.get(index, 0)
                            tool_counts[index] = n + 1
                            yield maker.chunk({"tool_calls": [{
                                "index": n, "id": str(fn.get("id") or tool_call_id()), "type": "function",
                                "function": {"name": fn.get("name"), "arguments": dumps(fn.get("args") or {})},
                            }]}, index=index)
                    if candidate.get("finishReason"):
                        finishes[index] = candidate["finishReason"]
                if not data.get("candidates") and (data.get("promptFeedback") or {}).get("blockReason"):
                    finishes[0] = "SAFETY"
        if not finishes:
            raise self.stream_error("the stream ended before a finishReason")
        if 0 not in started:
            yield maker.chunk({"role": "assistant", "content": ""})
        last = max(finishes)
        for index in sorted(finishes):
            yield maker.chunk(index=index, finish_reason=self._finish(finishes[index], index in tool_counts),
                              usage_=self._usage(meta) if index == last else None)

    async def list_models(self) -> list[str]:
        """``GET /v1beta/models`` (every page), the models that can ``generateContent``."""
        ids: list[str] = []
        token = ""
        while True:
            url = f"{self.api_root}/models?pageSize=1000" + (f"&pageToken={quote(token)}" if token else "")
            data = await self.request_json("GET", url)
            if not isinstance(data, dict):
                raise self.malformed("the model list is not a JSON object")
            for model in data.get("models") or ():
                methods = model.get("supportedGenerationMethods")
                if methods is None or "generateContent" in methods:
                    ids.append(str(model.get("name", "")).removeprefix("models/"))
            token = str(data.get("nextPageToken") or "")
            if not token:
                return ids


def _tool_response(text: str) -> JSON:
    """A tool result as ``functionResponse.response`` (which must be an object)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


@hookimpl
def register_chat_providers(register: Callable[[ChatProviderType], None]) -> None:
    """Register the ``gemini`` chat provider type."""
    register(ChatProviderType(
        name=TYPE_NAME,
        factory=functools.partial(GeminiChatProvider, type_name=TYPE_NAME, default_base_url=DEFAULT_BASE_URL),
        options=GeminiOptions,
        description="Google Gemini API (generateContent)",
        default_base_url=DEFAULT_BASE_URL,
        api_models=api_models(TYPE_NAME),
    ))
