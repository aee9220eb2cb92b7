"""What the chat-backend fakes share: scripted replies, failure knobs, recording, cancellation.

Each fake (:mod:`fakes.openai_server`, :mod:`fakes.ollama_server`,
:mod:`fakes.anthropic_server`, :mod:`fakes.gemini_server`) is an aiohttp app
that speaks one provider's documented wire format, validates requests the way
the real API does (answering with that API's error shape), and renders a
provider-neutral :class:`Reply` in its own format, plain or streamed.

Usage::

    fake = FakeOpenAI(api_key="sk-test")
    await fake.start()                      # or: await aiohttp_server(fake.app); fake.base_url = ...
    fake.reply_with(Reply(text="Hi"), Reply(tool_calls=[ToolCall("get_weather", {"city": "Oslo"})]))
    fake.fail_next(2, status=429, retry_after="3")
    fake.die_mid_stream_next(after=2)       # "close" the socket, send an in-stream "error", or "stall"
    fake.hang_next()                        # never answer (until the client gives up)
    fake.respond_next({"any": "json"}, status=200)   # an exact body no knob produces
    fake.stream_delay = 0.05                # pace streamed frames (to cancel mid-stream)
    ...
    fake.requests[-1].body, fake.last.headers, fake.last.query
    await fake.wait_for_requests(1)         # a request has arrived
    await fake.wait_cancelled()             # the client hung up on a hanging or streaming request
    await fake.close()

Without a scripted reply a fake echoes the last user text (``"Echo: ..."``, or
``{"echo": ...}`` when JSON output was asked for). :func:`make_provider` builds
a provider through the real plugin/config path, for tests of the providers and
of the gateway alike.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict


def count_tokens(text: str) -> int:
    """A stand-in token count: words (at least one for non-empty text)."""
    words = len(text.split())
    return words or (1 if text else 0)


@dataclass
class ToolCall:
    """A tool call the fake model makes: function name and arguments (an object)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def argument_pieces(self) -> list[str]:
        """The arguments JSON cut in three, as streamed argument deltas arrive."""
        text = json.dumps(self.arguments)
        third = max(1, len(text) // 3)
        return [p for p in (text[:third], text[third:2 * third], text[2 * third:]) if p]


@dataclass
class Reply:
    """A provider-neutral answer; each fake renders it in its own wire format."""

    text: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: ``stop``, ``length`` or ``tool_calls``; by default ``tool_calls`` when there are calls.
    finish: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: How the text is cut when streamed (default: word by word).
    pieces: list[str] | None = None

    @property
    def finish_reason(self) -> str:
        return self.finish or ("tool_calls" if self.tool_calls else "stop")

    def text_pieces(self) -> list[str]:
        if self.pieces is not None:
            return list(self.pieces)
        if not self.text:
            return []
        words = self.text.split(" ")
        return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]

    def usage(self, prompt_text: str) -> tuple[int, int]:
        """(prompt, completion) token counts: the scripted ones, else word counts."""
        prompt = self.prompt_tokens if self.prompt_tokens is not None else count_tokens(prompt_text)
        if self.completion_tokens is not None:
            return prompt, self.completion_tokens
        completion = count_tokens(self.text or "") + sum(count_tokens(json.dumps(c.arguments))
                                                         for c in self.tool_calls)
        return prompt, completion


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    raw: bytes
    body: Any


@dataclass
class _Failure:
    status: int
    message: str | None
    retry_after: str | None


@dataclass
class _Disruption:
    after: int
    how: str


class ChatFake:
    """Base of the chat fakes: knobs, recording and stream writing. Subclasses add routes.

    Subclasses implement :meth:`install` (routes), :meth:`error_response` (the
    API's error shape) and :meth:`stream_error_frame` (how the API reports an
    error inside a stream).
    """

    #: Models the fake serves unless told otherwise.
    default_models: tuple[str, ...] = ()

    def __init__(self, *, api_key: str | None = "test-key", models: list[str] | None = None,
                 stream_delay: float = 0.0) -> None:
        self.api_key = api_key
        self.models = list(self.default_models if models is None else models)
        #: Seconds between streamed frames (set it to let a test cancel mid-stream).
        self.stream_delay = stream_delay
        self.requests: list[Recorded] = []
        self.replies: deque[Reply] = deque()
        self.cancelled = 0
        self.base_url = ""
        self.server: TestServer | None = None
        self._failures: deque[_Failure] = deque()
        self._hangs = 0
        self._raw: deque[tuple[int, Any, dict[str, str] | None]] = deque()
        self._disruptions: deque[_Disruption] = deque()
        self._cancel_event: asyncio.Event | None = None
        self._request_event: asyncio.Event | None = None
        self.app = web.Application()
        self.install(self.app)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> str:
        """Serve the app on a free loopback port; returns (and sets) :attr:`base_url`."""
        self.server = TestServer(self.app, host="127.0.0.1")
        await self.server.start_server()
        self.base_url = str(self.server.make_url("")).rstrip("/")
        return self.base_url

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def __aenter__(self) -> ChatFake:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- knobs

    def reply_with(self, *replies: Reply | str) -> None:
        """Queue the next answers (a string is a plain text reply)."""
        self.replies.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)

    def fail_next(self, n: int = 1, status: int = 500, *, message: str | None = None,
                  retry_after: str | float | None = None) -> None:
        """Answer the next ``n`` API requests with ``status`` in the API's error shape (+ ``Retry-After``)."""
        for _ in range(n):
            self._failures.append(_Failure(status, message,
                                           None if retry_after is None else str(retry_after)))

    def respond_next(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        """Answer the next API request with this exact JSON ``body`` (for shapes no knob produces)."""
        self._raw.append((status, body, headers))

    def hang_next(self, n: int = 1) -> None:
        """Never answer the next ``n`` API requests (the handler waits until the client hangs up)."""
        self._hangs += n

    def die_mid_stream_next(self, after: int = 1, *, how: str = "close") -> None:
        """Break the next streamed answer after ``after`` frames.

        ``how``: ``close`` drops the connection, ``error`` sends the API's in-stream
        error and ends, ``stall`` stops sending but keeps the connection open.
        """
        if how not in ("close", "error", "stall"):
            raise ValueError(how)
        self._disruptions.append(_Disruption(after, how))

    def reset(self) -> None:
        """Forget recorded requests and pending knobs."""
        self.requests.clear()
        self.replies.clear()
        self._failures.clear()
        self._raw.clear()
        self._disruptions.clear()
        self._hangs = 0
        self.cancelled = 0

    @property
    def last(self) -> Recorded:
        """The last request received."""
        return self.requests[-1]

    async def wait_cancelled(self, timeout: float = 2.0) -> None:
        """Wait until the fake has seen a client hang up on a hanging or streaming request."""
        if self.cancelled:
            return
        await asyncio.wait_for(self._event().wait(), timeout)

    async def wait_for_requests(self, n: int = 1, timeout: float = 2.0) -> None:
        """Wait until the fake has received ``n`` requests in all."""
        if self._request_event is None:
            self._request_event = asyncio.Event()
        async with asyncio.timeout(timeout):
            while len(self.requests) < n:
                self._request_event.clear()
                await self._request_event.wait()

    # ----------------------------------------------------------------- for subclasses

    def install(self, app: web.Application) -> None:
        raise NotImplementedError

    def error_response(self, status: int, message: str, *, headers: dict[str, str] | None = None,
                       kind: str | None = None) -> web.Response:
        raise NotImplementedError

    def stream_error_frame(self, message: str) -> bytes:
        raise NotImplementedError

    def _event(self) -> asyncio.Event:
        if self._cancel_event is None:
            self._cancel_event = asyncio.Event()
        return self._cancel_event

    def note_cancelled(self) -> None:
        self.cancelled += 1
        self._event().set()

    async def record(self, request: web.Request) -> Recorded:
        """Read and remember a request (its body as JSON, or ``None`` when it is not JSON)."""
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = Recorded(request.method, request.path, dict(request.query), CIMultiDict(request.headers), raw, body)
        self.requests.append(rec)
        if self._request_event is not None:
            self._request_event.set()
        return rec

    async def intercept(self, request: web.Request) -> web.StreamResponse | None:
        """Apply the pending ``fail_next`` / ``respond_next`` / ``hang_next`` knobs; ``None`` to proceed."""
        if self._raw:
            status, body, headers = self._raw.popleft()
            return web.json_response(body, status=status, headers=headers)
        if self._failures:
            failure = self._failures.popleft()
            headers = {"Retry-After": failure.retry_after} if failure.retry_after is not None else None
            return self.error_response(failure.status, failure.message or f"fake failure {failure.status}",
                                       headers=headers)
        if self._hangs:
            self._hangs -= 1
            await self.wait_for_hangup(request)
            return web.Response(status=499)
        return None

    def next_reply(self, default: Reply) -> Reply:
        return self.replies.popleft() if self.replies else default

    async def wait_for_hangup(self, request: web.Request) -> None:
        """Block until the client closes the connection, and count it as a cancellation."""
        try:
            while True:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                await asyncio.sleep(0.01)
        finally:
            self.note_cancelled()

    async def send_stream(self, request: web.Request, frames: list[bytes], content_type: str) -> web.StreamResponse:
        """Write ``frames`` as a streamed (chunked) body, applying any ``die_mid_stream_next``."""
        resp = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        await resp.prepare(request)
        disruption = self._disruptions.popleft() if self._disruptions else None
        try:
            for i, frame in enumerate(frames):
                if disruption is not None and i == disruption.after:
                    if disruption.how == "close":
                        # Drop the connection mid-body: the client sees an incomplete payload.
                        if request.transport is not None:
                            request.transport.close()
                        return resp
                    if disruption.how == "error":
                        await resp.write(self.stream_error_frame("fake upstream error mid-stream"))
                        await resp.write_eof()
                        return resp
                    await self.wait_for_hangup(request)
                    return resp
                transport = request.transport
                if transport is None or transport.is_closing():
                    self.note_cancelled()
                    return resp
                await resp.write(frame)
                if self.stream_delay:
                    await asyncio.sleep(self.stream_delay)
            await resp.write_eof()
        except ConnectionResetError:
            self.note_cancelled()  # the client hung up while we were writing
        except asyncio.CancelledError:
            self.note_cancelled()  # the server cancelled the handler because the client hung up
            raise
        return resp


def make_provider(plugin: str, type_name: str, http: Any, **provider: Any) -> Any:
    """Build a provider the way the app does: config -> plugin registry -> resolve -> the type's factory.

    ``plugin`` is the plugin's dotted name (``aiport.plugins.chat_openai``);
    ``provider`` holds the ``providers:`` entry's keys (``base_url``, ``api_key``, options...).
    """
    from aiport.core.config import parse_config
    from aiport.core.execution.providers import resolve_providers
    from aiport.core.plugins import build_plugin_manager
    from aiport.core.registry import ProviderContext, collect

    entry = {"name": provider.pop("name", "test"), "type": type_name, **provider}
    config = parse_config({"providers": [entry]}, environ={})
    registry = collect(build_plugin_manager(config.plugins, default_plugins=(plugin,), entry_points=False), config)
    [resolved] = resolve_providers(config, registry, environ={})
    ctx = ProviderContext(provider=resolved.config, options=resolved.options, http=http, config=config)
    return resolved.type.factory(ctx)


async def collect_stream(stream: Any) -> list[dict[str, Any]]:
    """Every chunk of a provider's ``stream(...)``."""
    return [chunk async for chunk in stream]


def joined_text(chunks: list[dict[str, Any]]) -> str:
    """The streamed content of choice 0."""
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def joined_tool_calls(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Streamed tool-call deltas of choice 0 assembled by ``index`` (as OpenAI clients do)."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for delta in choice["delta"].get("tool_calls") or ():
                call = calls.setdefault(delta["index"], {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.get("id") or call["id"]
                fn = delta.get("function") or {}
                call["name"] += fn.get("name") or ""
                call["arguments"] += fn.get("arguments") or ""
    return [calls[i] for i in sorted(calls)]
