"""Reading response bodies: capped reads, and the lines and server-sent events of a stream.

Lines are split here rather than with aiohttp's ``readline``, which refuses a
line longer than the reader's buffer (one SSE ``data:`` line can hold a whole
tool call). Bodies arrive as an :class:`aiohttp.StreamReader` (a response's
``content``) or any async iterable of byte pieces.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterable, AsyncIterator

import aiohttp
import attrs

__all__ = ["MAX_ERROR_BODY", "SSEEvent", "iter_lines", "iter_sse", "read_capped", "read_error_text"]

#: How much of an error body is read; error bodies are small, a misbehaving proxy's may not be.
MAX_ERROR_BODY = 64 * 1024

_EOL = re.compile(r"\r\n|\r|\n")

Body = aiohttp.StreamReader | AsyncIterable[bytes]


async def read_capped(content: aiohttp.StreamReader, limit: int) -> bytes:
    """At most ``limit`` bytes of a body (``read(n)`` alone may return just the first piece to arrive)."""
    data = bytearray()
    while len(data) < limit:
        chunk = await content.read(limit - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def read_error_text(content: aiohttp.StreamReader, limit: int = MAX_ERROR_BODY) -> str:
    """The first ``limit`` bytes of an error answer's body, as text."""
    return (await read_capped(content, limit)).decode("utf-8", "replace")


def _pieces(body: Body) -> AsyncIterable[bytes]:
    return body.iter_any() if isinstance(body, aiohttp.StreamReader) else body


async def iter_lines(body: Body) -> AsyncIterator[str]:
    """Lines of a streamed body, whatever their ending (``\\r\\n``, ``\\n`` or ``\\r``), even split across pieces."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    skip_lf = False  # a piece ended in "\r": a "\n" starting the next one belongs to the same line end
    async for raw in _pieces(body):
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


@attrs.frozen
class SSEEvent:
    """One server-sent event: its ``event:`` name (``message`` when absent) and its joined ``data:`` lines."""

    event: str
    data: str


async def iter_sse(body: Body, *, dispatch_unterminated: bool = True) -> AsyncIterator[SSEEvent]:
    """Server-sent events as the HTML standard frames them (comments skipped, ``data:`` lines joined).

    An event cut short by the end of the body (no closing blank line) is still
    dispatched by default, so a truncated JSON payload fails to parse and the
    caller reports it; with ``dispatch_unterminated=False`` it is dropped, as the
    standard says, for a caller that detects a cut-off stream by its missing
    final event instead.
    """
    event = ""
    data: list[str] = []
    async for line in iter_lines(body):
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
    if data and dispatch_unterminated:
        yield SSEEvent(event or "message", "\n".join(data))
