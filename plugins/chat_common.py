"""What the chat provider plugins share on top of the SDK: OpenAI shapes and request helpers.

Every chat provider (:mod:`.chat_openai`, :mod:`.chat_ollama`,
:mod:`.chat_anthropic`, :mod:`.chat_gemini`) subclasses :class:`HttpChatProvider`,
the SDK's :class:`~aiport.core.sdk.HttpProvider` (requests, timeouts, error
mapping, key handling, probing: the same for chat and media backends) with the
chat contract on top. This module adds what only chat needs: OpenAI response
shapes (:func:`completion`, :class:`ChunkMaker`, ...), the checks and readers of
an OpenAI request (messages, content parts, tools, ``response_format``), and
:func:`api_models`, the catalog data of :mod:`.chat_catalog`.

This module is not a plugin itself: it implements no hook.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from aiport.core import jsoncodec
from aiport.core.sdk import HttpProvider, rejected

from .chat_catalog import API_MODELS

JSON = dict[str, Any]


def api_models(type_name: str) -> dict[str, str]:
    """Catalog data: gateway model id -> ``type_name``'s own model id (see :mod:`.chat_catalog`)."""
    return dict(API_MODELS.get(type_name, {}))


# --------------------------------------------------------------------------- OpenAI shapes


def completion_id() -> str:
    """A fresh id in OpenAI's ``chatcmpl-...`` style, for backends that have none of their own."""
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def tool_call_id() -> str:
    """A fresh tool-call id, for backends whose tool calls come without one."""
    return "call_" + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int | None, completion_tokens: int | None) -> JSON | None:
    """An OpenAI ``usage`` object, or ``None`` when the backend reported no counts."""
    if prompt_tokens is None and completion_tokens is None:
        return None
    p, c = int(prompt_tokens or 0), int(completion_tokens or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def assistant_message(text: str | None, tool_calls: list[JSON]) -> JSON:
    """An OpenAI assistant message; ``content`` is ``null`` when it only calls tools (as OpenAI does)."""
    message: JSON = {"role": "assistant", "content": text if (text or not tool_calls) else None}
    if not message["content"] and not tool_calls:
        message["content"] = ""
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def completion(model: str, choices: list[JSON], usage_: JSON | None, *, id_: str | None = None,
               created: int | None = None) -> JSON:
    """An OpenAI ``chat.completion`` object."""
    body: JSON = {
        "id": id_ or completion_id(),
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage_ is not None:
        body["usage"] = usage_
    return body


def dumps(value: Any) -> str:
    """Compact JSON, as tool-call ``arguments`` are sent."""
    return jsoncodec.dumps(value)


def function_call(id_: str, name: str, arguments: str) -> JSON:
    """An OpenAI ``tool_calls`` entry."""
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


class ChunkMaker:
    """Builds the ``chat.completion.chunk`` objects of one stream (same id, model and created throughout)."""

    def __init__(self, model: str) -> None:
        self.id = completion_id()
        self.model = model
        self.created = int(time.time())

    def chunk(self, delta: JSON | None = None, *, index: int = 0, finish_reason: str | None = None,
              usage_: JSON | None = None) -> JSON:
        """One chunk with one choice."""
        body: JSON = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta or {}, "logprobs": None,
                         "finish_reason": finish_reason}],
        }
        if usage_ is not None:
            body["usage"] = usage_
        return body


def completion_to_chunks(body: Mapping[str, Any]) -> list[JSON]:
    """A whole ``chat.completion`` as the chunks a stream of it would have sent.

    For OpenAI-compatible servers that ignore ``stream: true`` and answer in one piece.
    """
    maker = ChunkMaker(str(body.get("model") or ""))
    maker.id = str(body.get("id") or maker.id)
    chunks: list[JSON] = []
    choices = body.get("choices") or []
    for position, choice in enumerate(choices):
        index = int(choice.get("index", position))
        message = choice.get("message") or {}
        delta: JSON = {"role": "assistant", "content": message.get("content") or ""}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        chunks.append(maker.chunk(delta, index=index))
        chunks.append(maker.chunk(index=index, finish_reason=choice.get("finish_reason") or "stop"))
    if chunks and body.get("usage"):
        chunks[-1]["usage"] = body["usage"]
    return chunks


# --------------------------------------------------------------------------- OpenAI request helpers

#: OpenAI request fields that change what comes back and that only OpenAI-compatible backends
#: honour; translating backends refuse them rather than silently answering something else.
_NOT_TRANSLATABLE: dict[str, Callable[[Any], bool]] = {
    "logprobs": lambda v: bool(v),
    "top_logprobs": lambda v: v is not None,
    "audio": lambda v: v is not None,
    "modalities": lambda v: bool(v) and any(m != "text" for m in v),
    "prediction": lambda v: v is not None,
    "web_search_options": lambda v: v is not None,
    "functions": lambda v: bool(v),
    "function_call": lambda v: v is not None,
}


def refuse_untranslatable(provider: str, body: Mapping[str, Any], *, allow_n: bool = False) -> None:
    """Raise a 400 :class:`ProviderError` for OpenAI features a translating backend cannot honour."""
    for key, applies in _NOT_TRANSLATABLE.items():
        if key in body and applies(body[key]):
            hint = " (use tools / tool_choice)" if key.startswith("function") else ""
            raise rejected(provider, f"the {key!r} request field is not supported by this backend{hint}")
    n = body.get("n")
    if not allow_n and n not in (None, 1):
        raise rejected(provider, "only n=1 is supported by this backend")


def require_messages(provider: str, body: Mapping[str, Any]) -> list[JSON]:
    """The body's ``messages``, checked to be a non-empty list of objects."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise rejected(provider, "'messages' must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise rejected(provider, f"messages[{i}] must be an object")
    return messages


def max_tokens_of(body: Mapping[str, Any]) -> int | None:
    """``max_completion_tokens`` (the newer name) or ``max_tokens``."""
    value = body.get("max_completion_tokens")
    if value is None:
        value = body.get("max_tokens")
    return int(value) if value is not None else None


def stop_list(body: Mapping[str, Any]) -> list[str] | None:
    """``stop`` as a list (OpenAI takes a string or a list)."""
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    return [str(s) for s in stop]


def content_parts(provider: str, content: Any, where: str) -> list[JSON]:
    """A message's ``content`` as a list of parts (a string is one text part, ``null`` none)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        parts: list[JSON] = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                parts.append({"type": "text", "text": part})
            elif isinstance(part, dict) and isinstance(part.get("type"), str):
                parts.append(part)
            else:
                raise rejected(provider, f"{where}.content[{i}] must be a content part with a 'type'")
        return parts
    raise rejected(provider, f"{where}.content must be a string or a list of content parts")


def message_parts(provider: str, message: Mapping[str, Any], where: str) -> list[JSON]:
    """``content`` parts plus AI Server's ``images`` extension (base64 or URLs) as ``image_url`` parts."""
    parts = content_parts(provider, message.get("content"), where)
    images = message.get("images")
    if images:
        if not isinstance(images, list):
            raise rejected(provider, f"{where}.images must be a list")
        parts += [{"type": "image_url", "image_url": {"url": as_image_url(str(img))}} for img in images]
    return parts


def text_only(provider: str, message: Mapping[str, Any], where: str) -> str:
    """The text of a message that may only hold text (system prompts, tool results on some backends)."""
    texts = []
    for part in message_parts(provider, message, where):
        if part["type"] != "text":
            raise rejected(provider, f"{where}: {part['type']!r} content is not supported in a "
                                     f"{message.get('role')!r} message by this backend")
        texts.append(str(part.get("text") or ""))
    return "\n".join(texts)


def image_url_of(part: Mapping[str, Any]) -> str:
    """The URL of an ``image_url`` part (``{"url": ...}`` or a bare string)."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    return str(url or "")


_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*?),(?P<data>.*)$", re.DOTALL)


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``(mime type, base64 data)`` of a ``data:`` URL, or ``None`` for any other URL."""
    m = _DATA_URL.match(url)
    if not m:
        return None
    mime = m.group("mime").strip().lower() or "application/octet-stream"
    data = m.group("data")
    if ";base64" in m.group("params").lower():
        return mime, "".join(data.split())
    return mime, base64.b64encode(unquote_to_bytes(data)).decode("ascii")


_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"))


def sniff_image_type(b64: str) -> str:
    """The image type of base64 data from its first bytes (PNG when unknown)."""
    try:
        head = base64.b64decode(b64[:24] + "=" * (-len(b64[:24]) % 4))
    except (binascii.Error, ValueError):
        return "image/png"
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def as_image_url(image: str) -> str:
    """An image given as a URL, data URL or bare base64 (AI Server's ``images``) as a URL."""
    if image.startswith(("data:", "http://", "https://")):
        return image
    b64 = "".join(image.split())
    return f"data:{sniff_image_type(b64)};base64,{b64}"


def parse_arguments(provider: str, raw: Any, where: str) -> JSON:
    """A tool call's ``arguments`` (a JSON string in OpenAI's format) as an object."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        raise rejected(provider, f"{where}: tool call arguments must be a JSON object") from None
    if not isinstance(value, dict):
        raise rejected(provider, f"{where}: tool call arguments must be a JSON object")
    return value


def tool_names_by_id(messages: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Tool call id -> function name, from the assistant messages' ``tool_calls``.

    Backends that match tool results by function name (Ollama, Gemini) need it,
    because an OpenAI ``tool`` message only names the call's id.
    """
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                names[str(call.get("id"))] = str(call["function"].get("name") or "")
    return names


def function_tools(provider: str, body: Mapping[str, Any]) -> list[JSON]:
    """The body's ``tools`` as ``{"name", "description", "parameters"}`` (only function tools exist here)."""
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise rejected(provider, "'tools' must be a list")
    result = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise rejected(provider, f"tools[{i}]: only function tools are supported by this backend, "
                                     f"not {kind!r}")
        fn = tool.get("function")
        if not isinstance(fn, dict) or not fn.get("name"):
            raise rejected(provider, f"tools[{i}].function.name is required")
        result.append({"name": str(fn["name"]), "description": fn.get("description"),
                       "parameters": fn.get("parameters")})
    return result


def tool_choice_of(provider: str, body: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """``tool_choice`` as ``(mode, function name)``: mode is ``auto``, ``none``, ``required`` or ``function``."""
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise rejected(provider, f"unknown tool_choice {choice!r}")
        return choice, None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if name:
            return "function", str(name)
    raise rejected(provider, "tool_choice must be 'auto', 'none', 'required' or "
                             "{'type': 'function', 'function': {'name': ...}}")


def response_format_of(provider: str, body: Mapping[str, Any]) -> tuple[str, JSON | None, str | None]:
    """``response_format`` as ``(kind, schema, name)``; kind is ``text``, ``json_object`` or ``json_schema``."""
    fmt = body.get("response_format")
    if fmt is None:
        return "text", None, None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return kind, None, None
    if kind == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise rejected(provider, "response_format.json_schema.schema must be a JSON schema object")
        return kind, schema, spec.get("name")
    raise rejected(provider, f"unsupported response_format type {kind!r}")


# --------------------------------------------------------------------------- the provider base


class HttpChatProvider(HttpProvider, abc.ABC):
    """Base of the HTTP chat providers: :class:`~aiport.core.sdk.HttpProvider` plus the chat contract.

    Subclasses set :attr:`options_class`, translate in :meth:`chat`, :meth:`stream`
    and :meth:`list_models` (the methods of :class:`aiport.core.interfaces.ChatProvider`),
    and may override the SDK's :meth:`auth_headers`, :meth:`error_message`,
    :meth:`body_retry_after` and :meth:`probe_url`.
    """

    @abc.abstractmethod
    async def chat(self, body: JSON) -> JSON:
        """A non-streamed completion: an OpenAI ``chat.completion``."""

    @abc.abstractmethod
    def stream(self, body: JSON) -> AsyncIterator[JSON]:
        """A streamed completion (an async generator): OpenAI ``chat.completion.chunk`` dicts, ``usage`` on the last."""

    @abc.abstractmethod
    async def list_models(self) -> list[str]:
        """The backend's own model ids."""
