"""The pieces the chat providers share: stream framing, Retry-After, data URLs."""

from __future__ import annotations

import asyncio
import email.utils
from unittest import mock

import aiohttp
import pytest
from aiport.core.sdk import SSEEvent, iter_lines, iter_sse, parse_retry_after
from aiport.plugins.chat_common import as_image_url, completion_to_chunks, parse_data_url

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def reader(*chunks: bytes) -> aiohttp.StreamReader:
    """A body that arrives in exactly these chunks."""
    stream = aiohttp.StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
    for chunk in chunks:
        stream.feed_data(chunk)
    stream.feed_eof()
    return stream


async def test_lines_split_on_every_line_ending_even_across_chunks() -> None:
    chunks = (b"one\r", b"\ntwo\rthr", b"ee\n\xc3", b"\xa9t\xc3\xa9\r\n", b"last")
    assert [line async for line in iter_lines(reader(*chunks))] == ["one", "two", "three", "été", "last"]


async def test_sse_framing() -> None:
    body = (b": keep-alive comment\n\n"
            b"event: content_block_delta\ndata: {\"a\":\ndata: 1}\n\n"
            b"data:no-space\r\n\r\n"
            b"id: 7\nretry: 100\n\n"          # no data: not dispatched
            b"data: cut short")               # no blank line at the end: still dispatched
    events = [e async for e in iter_sse(reader(body[:30], body[30:31], body[31:]))]
    assert events == [SSEEvent("content_block_delta", '{"a":\n1}'), SSEEvent("message", "no-space"),
                      SSEEvent("message", "cut short")]


def test_retry_after() -> None:
    assert parse_retry_after({"Retry-After": "30"}) == 30.0
    assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 20, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now) == pytest.approx(20.0)


def test_data_urls() -> None:
    assert parse_data_url(f"data:image/png;base64,{PNG}") == ("image/png", PNG)
    assert parse_data_url("data:text/plain,hi%20there") == ("text/plain", "aGkgdGhlcmU=")
    assert parse_data_url("https://example.com/x.png") is None
    assert as_image_url(PNG) == f"data:image/png;base64,{PNG}"
    assert as_image_url("/9j/4AAQSkZJRg==").startswith("data:image/jpeg;base64,")
    assert as_image_url("https://example.com/x.png") == "https://example.com/x.png"


def test_a_whole_completion_as_chunks() -> None:
    chunks = completion_to_chunks({"id": "c1", "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]})
    assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert {c["id"] for c in chunks} == {"c1"}
