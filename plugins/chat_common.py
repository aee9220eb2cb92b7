"""What the chat provider plugins share: HTTP calls, error mapping, stream parsing, OpenAI shapes.

Every chat provider (:mod:`.chat_openai`, :mod:`.chat_ollama`,
:mod:`.chat_anthropic`, :mod:`.chat_gemini`) subclasses :class:`HttpChatProvider`,
which owns the parts that must behave the same whatever the wire format:

- requests go through the app's shared :class:`aiohttp.ClientSession` with the
  provider's ``timeout`` (the whole call for a plain request; time to connect
  and the longest silence between two reads for a stream, so a long answer that
  keeps arriving is not cut off);
- every failure becomes one :class:`~aiport.core.errors.ProviderError`:
  connection errors, timeouts, 408, 429 and 5xx are ``retryable`` (with
  ``retry_after`` from ``Retry-After``, in seconds or as an HTTP date), other
  4xx are not and carry the upstream's own message;
- the API key is only ever put in a request header, and is scrubbed from any
  text that could reach a client or a log line;
- a stream the consumer stops reading early (client gone, job cancelled) closes
  its upstream connection at once, so the backend sees the cancellation.

This module is not a plugin itself: it implements no hook.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.utils
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from datetime import UTC
from typing import Any, ClassVar
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import aiohttp
import attrs
import structlog
from aiport.core import jsoncodec
from aiport.core.config import structure
from aiport.core.errors import ConfigError, ProviderError
from aiport.core.registry import ProviderContext
from yarl import URL

from .chat_catalog import API_MODELS

log = structlog.get_logger("aiport.plugins.chat")

JSON = dict[str, Any]

#: How much of an error body is read; error bodies are small, a misbehaving proxy's may not be.
_MAX_ERROR_BODY = 64 * 1024
#: The longest upstream message an error carries (a whole HTML error page helps no one).
_MAX_MESSAGE = 500


# --------------------------------------------------------------------------- options and catalog


@attrs.frozen
class HttpOptions:
    """Options every chat provider type accepts (as extra keys of its ``providers:`` entry)."""

    #: Extra headers sent with every request (e.g. OpenRouter's ``HTTP-Referer`` and ``X-Title``).
    extra_headers: dict[str, str] = attrs.field(factory=dict)



def options_of(ctx: ProviderContext, cls: type[Any]) -> Any:
    """The provider's options as an instance of ``cls``.

    Core structures them already; a plain dict (or ``None``) is accepted too, so a
    provider built by hand, in a test or a script, gets the same validation.
    """
    if isinstance(ctx.options, cls):
        return ctx.options
    return structure(dict(ctx.options or {}), cls, f"providers[{ctx.provider.name}]")


def api_models(type_name: str) -> dict[str, str]:
    """Catalog data: gateway model id -> ``type_name``'s own model id (see :mod:`.chat_catalog`)."""
    return dict(API_MODELS.get(type_name, {}))


# --------------------------------------------------------------------------- errors


def rejected(provider: str, message: str) -> ProviderError:
    """A request the backend cannot serve as asked (a feature or content part it lacks): 400, not retryable."""
    return ProviderError(f"{provider}: {message}", provider=provider, upstream_status=400, retryable=False)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_retryable_status(status: int) -> bool:
    """408, 429 and 5xx may succeed when tried again; other 4xx will not."""
    return status in (408, 429) or status >= 500


# --------------------------------------------------------------------------- stream parsing

_EOL = re.compile(r"\r\n|\r|\n")


@attrs.frozen
class SSEEvent:
    """One server-sent event: its ``event:`` name (``message`` when absent) and its joined ``data:`` lines."""

    event: str
    data: str


async def iter_lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """Lines of a streamed body, whatever their ending (``\\r\\n``, ``\\n`` or ``\\r``).

    Reads chunks as they come rather than aiohttp's ``readline`` (which caps a
    line at the reader's buffer size; one SSE line can hold a whole tool call).
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    skip_lf = False  # a chunk ended in "\r": a "\n" starting the next one belongs to the same line end
    async for raw in content.iter_any():
        text = decoder.decode(raw)
        if not text:
            continue
        if skip_lf and text.startswith("\n"):
            text = text[1:]
        skip_lf = False
        pending += text
        parts = _EOL.split(pending)
        pending = parts.pop()
        if not pending and text.endswith("\r"):
            skip_lf = True
        for line in parts:
            yield line
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


async def iter_sse(content: aiohttp.StreamReader) -> AsyncIterator[SSEEvent]:
    """Server-sent events as the HTML standard frames them (comments skipped, ``data:`` lines joined).

    An event cut short by the end of the body is still dispatched; a truncated
    JSON payload then fails to parse, which the caller reports.
    """
    event = ""
    data: list[str] = []
    async for line in iter_lines(content):
        if not line:
            if data:
                yield SSEEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue  # a comment / keep-alive (OpenRouter sends ": OPENROUTER PROCESSING")
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
    if data:
        yield SSEEvent(event or "message", "\n".join(data))


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


class HttpChatProvider:
    """Base of the HTTP chat providers: calls, error mapping, probing. Subclasses translate.

    Subclasses set :attr:`options_class`, implement :meth:`chat`, :meth:`stream` and
    :meth:`list_models`, and may override :meth:`auth_headers`,
    :meth:`error_message`, :meth:`body_retry_after` and :meth:`probe_url`.
    """

    #: The attrs class of the type's options (a subclass of :class:`HttpOptions`).
    options_class: ClassVar[type[HttpOptions]] = HttpOptions

    def __init__(self, ctx: ProviderContext, *, type_name: str, default_base_url: str | None = None) -> None:
        cfg = ctx.provider
        base = cfg.base_url or default_base_url
        if not base:
            raise ConfigError([f"provider {cfg.name!r}: base_url is required for the {type_name!r} type"])
        if not urlsplit(base).scheme.startswith("http"):
            raise ConfigError([f"provider {cfg.name!r}: base_url must be an http(s) URL, got {base!r}"])
        self.name: str = cfg.name
        self.type_name = type_name
        self.base_url = base.rstrip("/")
        self.options = options_of(ctx, self.options_class)
        self.timeout = float(cfg.timeout)
        # Made once: these are on every request's path.
        self._call_timeout = aiohttp.ClientTimeout(total=self.timeout)
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout)
        self.heartbeat_url: str | None = cfg.heartbeat_url
        self._http: aiohttp.ClientSession = ctx.http
        self._key_header: str | None = cfg.api_key_header
        # The one place the key is revealed; it only ever goes into a request header.
        self._key: str | None = cfg.api_key.reveal() if cfg.api_key else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.base_url}>"

    # ----------------------------------------------------------------- headers and URLs

    def key_headers(self, default_header: str = "Authorization") -> dict[str, str]:
        """The key in ``api_key_header`` when configured, else in ``default_header``.

        The ``Authorization`` header gets the ``Bearer`` scheme; any other header the bare key.
        """
        if not self._key:
            return {}
        header = self._key_header or default_header
        value = f"Bearer {self._key}" if header.lower() == "authorization" else self._key
        return {header: value}

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a request (OpenAI style by default)."""
        return self.key_headers()

    def headers(self) -> dict[str, str]:
        """Every header of an API request: the configured extras, then authentication."""
        return {**self.options.extra_headers, **self.auth_headers()}

    def _default_headers(self) -> dict[str, str]:
        # Built on first use (subclasses set what auth_headers needs in their __init__),
        # then reused: the same for every request of this provider.
        cached: dict[str, str] | None = getattr(self, "_headers_cache", None)
        if cached is None:
            cached = self._headers_cache = self.headers()
        return cached

    def _json_headers(self) -> dict[str, str]:
        cached: dict[str, str] | None = getattr(self, "_json_headers_cache", None)
        if cached is None:
            cached = self._json_headers_cache = {**self._default_headers(), "Content-Type": "application/json"}
        return cached

    def url(self, path: str) -> str:
        """``path`` under the base URL."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def redact(self, text: str) -> str:
        """``text`` with the API key masked: upstreams echo keys back, and error text reaches clients."""
        if self._key and len(self._key) >= 4:
            text = text.replace(self._key, "****")
        return text

    # ----------------------------------------------------------------- errors

    def error_message(self, data: Any) -> str | None:
        """The upstream's message from an error body (override per documented error shape)."""
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict) and err.get("message"):
                return str(err["message"])
            if isinstance(err, str) and err:
                return err
            for key in ("message", "detail"):
                if isinstance(data.get(key), str) and data[key]:
                    return str(data[key])
        return None

    def body_retry_after(self, data: Any) -> float | None:
        """A retry delay an error body carries (override; e.g. Gemini's ``RetryInfo``)."""
        return None

    def error(self, message: str, *, status: int | None = None, retryable: bool = False,
              retry_after: float | None = None, error_code: str | None = None) -> ProviderError:
        """A :class:`ProviderError` from this provider, with the key scrubbed from its message."""
        text = self.redact(message)
        if len(text) > _MAX_MESSAGE:
            text = text[:_MAX_MESSAGE] + "..."
        return ProviderError(f"{self.name}: {text}", provider=self.name, upstream_status=status,
                             retryable=retryable, retry_after=retry_after, error_code=error_code)

    def http_error(self, status: int, headers: Mapping[str, str], text: str, reason: str | None = None
                   ) -> ProviderError:
        """The :class:`ProviderError` for an upstream answer with an error status."""
        data: Any = None
        with suppress(ValueError):
            data = jsoncodec.loads(text) if text else None
        message = self.error_message(data)
        if not message:
            message = " ".join(text.split())[:200] or reason or "no error message"
        retryable = is_retryable_status(status)
        retry_after = None
        if retryable:
            retry_after = parse_retry_after(headers)
            if retry_after is None:
                retry_after = self.body_retry_after(data)
        log.debug("provider answered with an error", provider=self.name, status=status,
                  upstream_message=self.redact(message))
        return self.error(f"upstream returned HTTP {status}: {message}", status=status,
                          retryable=retryable, retry_after=retry_after)

    def stream_error(self, message: str, *, status: int | None = 500, retryable: bool = True) -> ProviderError:
        """An error the upstream reported, or a fault found, after the stream began."""
        return self.error(message, status=status, retryable=retryable)

    def transport_error(self, exc: BaseException) -> ProviderError:
        """A connection error or timeout: retryable."""
        if isinstance(exc, TimeoutError):
            return self.error(f"no answer within {self.timeout:g}s (timeout)", retryable=True,
                              error_code="Timeout")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return self.error("the connection broke before the answer was complete", retryable=True)
        # str(exc) names host and port at most; never a header, so never the key.
        detail = str(exc) or type(exc).__name__
        return self.error(f"cannot reach the backend: {detail}", retryable=True)

    def malformed(self, what: str) -> ProviderError:
        """An answer that is not what the wire format documents (retryable: often a cut-off body)."""
        return self.error(f"malformed answer from the backend: {what}", status=502, retryable=True)

    # ----------------------------------------------------------------- requests

    def _prepared(self, url: str, json_body: Any, data: Any, headers: Mapping[str, str] | None
                  ) -> tuple[URL, Any, Mapping[str, str]]:
        """The parsed URL, the body and the headers of a request."""
        # Parsed once per URL: parsing the string costs more than the rest of building a request,
        # and a provider sends to a handful of URLs all its life.
        urls: dict[str, URL] | None = getattr(self, "_url_cache", None)
        if urls is None:
            urls = self._url_cache = {}
        target = urls.get(url)
        if target is None:
            if len(urls) > 1024:
                urls.clear()
            target = urls[url] = URL(url)
        if json_body is not None and data is None:
            # Encoded here rather than by aiohttp's json=: faster, and the headers stay one cached dict.
            data = jsoncodec.dumpb(json_body)
            if headers is None:
                headers = self._json_headers()
            elif not any(name.lower() == "content-type" for name in headers):
                headers = {**headers, "Content-Type": "application/json"}
        elif headers is None:
            headers = self._default_headers()
        return target, data, headers

    @asynccontextmanager
    async def open(self, method: str, url: str, *, json_body: Any = None, stream: bool = False,
                   headers: Mapping[str, str] | None = None, data: Any = None
                   ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request and yield its (successful) response; map every failure to a ProviderError.

        ``data`` is a non-JSON body (e.g. an :class:`aiohttp.FormData` upload), sent instead of ``json_body``.

        If the block is left before the body was read to the end (the consumer
        stopped, or was cancelled), the connection is closed rather than reused,
        which is how the upstream learns that the client went away.
        """
        timeout = self._stream_timeout if stream else self._call_timeout
        target, data, headers = self._prepared(url, json_body, data, headers)
        try:
            async with self._http.request(method, target, data=data, timeout=timeout, headers=headers) as resp:
                if resp.status >= 400:
                    text = await _read_limited(resp.content, _MAX_ERROR_BODY)
                    raise self.http_error(resp.status, resp.headers, text, resp.reason)
                finished = False
                try:
                    yield resp
                    finished = True
                finally:
                    if not finished:
                        resp.close()
        except TimeoutError as exc:
            raise self.transport_error(exc) from None
        except aiohttp.ClientError as exc:
            raise self.transport_error(exc) from None

    async def request_json(self, method: str, url: str, *, json_body: Any = None,
                           headers: Mapping[str, str] | None = None) -> Any:
        """A non-streamed call whose answer is JSON."""
        # What open() does, without its generator-based context manager: this is every
        # non-streamed chat's path.
        target, data, sent_headers = self._prepared(url, json_body, None, headers)
        try:
            async with self._http.request(method, target, data=data, timeout=self._call_timeout,
                                          headers=sent_headers) as resp:
                if resp.status >= 400:
                    text = await _read_limited(resp.content, _MAX_ERROR_BODY)
                    raise self.http_error(resp.status, resp.headers, text, resp.reason)
                raw = await resp.read()
        except TimeoutError as exc:
            raise self.transport_error(exc) from None
        except aiohttp.ClientError as exc:
            raise self.transport_error(exc) from None
        try:
            return jsoncodec.loads(raw)  # JSON is UTF-8 (RFC 8259): no charset sniffing
        except ValueError:
            raise self.malformed("the body is not JSON") from None

    def parse_json(self, text: str) -> Any:
        """One JSON document of a stream (an SSE ``data:`` or an NDJSON line)."""
        try:
            return jsoncodec.loads(text)
        except ValueError:
            raise self.malformed(f"a stream event is not JSON: {text[:80]!r}") from None

    # ----------------------------------------------------------------- health

    def probe_url(self) -> str:
        """What :meth:`probe` GETs when no ``heartbeat_url`` is configured (override)."""
        return self.base_url

    async def probe(self) -> None:
        """GET the ``heartbeat_url`` (relative URLs are under the base URL) or :meth:`probe_url`.

        The key is only sent when the URL is on the provider's own origin, so a
        heartbeat pointing elsewhere never receives it.
        """
        url = urljoin(self.base_url + "/", self.heartbeat_url) if self.heartbeat_url else self.probe_url()
        same_origin = urlsplit(url)[:2] == urlsplit(self.base_url)[:2]
        headers = self.headers() if same_origin else dict(self.options.extra_headers)
        async with self.open("GET", url, headers=headers) as resp:
            await resp.read()

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is the app's and the app closes it."""


async def _read_limited(content: aiohttp.StreamReader, limit: int) -> str:
    """At most ``limit`` bytes of a body, as text."""
    data = bytearray()
    while len(data) < limit:
        chunk = await content.read(limit - len(data))
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace")
