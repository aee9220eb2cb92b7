"""The OpenAI-compatible chat providers against a protocol-faithful fake OpenAI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiport.core.errors import ConfigError, ProviderError
from aiport.core.interfaces import ChatProvider
from aiport.core.registry import ChatProviderType
from aiport.plugins import chat_openai
from fakes.chat_fake import Reply, ToolCall, collect_stream, joined_text, joined_tool_calls, make_provider
from fakes.openai_server import FakeOpenAI

PLUGIN = "aiport.plugins.chat_openai"
KEY = "sk-test-secret-key-1234"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=KEY) as f:
        yield f  # type: ignore[misc]


@pytest.fixture
def provider(fake: FakeOpenAI, http: aiohttp.ClientSession) -> Any:
    return make_provider(PLUGIN, "openai", http, base_url=fake.base_url, api_key=KEY)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}], **extra}


def test_registers_the_openai_compatible_types() -> None:
    types: list[ChatProviderType] = []
    chat_openai.register_chat_providers(types.append)
    by_name = {t.name: t for t in types}
    assert set(by_name) == {"openai", "groq", "mistral", "openrouter", "openai-compatible"}
    assert by_name["groq"].default_base_url == "https://api.groq.com/openai"
    assert by_name["openrouter"].default_base_url == "https://openrouter.ai/api"
    assert by_name["openai-compatible"].default_base_url is None
    assert by_name["openrouter"].api_models["llama3.1:70b"] == "meta-llama/llama-3.1-70b-instruct"
    assert by_name["groq"].api_models["llama3.3:70b"] == "llama-3.3-70b-versatile"
    assert all(len(t.api_models) >= 10 for t in types if t.name != "openai-compatible")
    assert all(t.options is chat_openai.OpenAIOptions and t.description for t in types)


async def test_plain_chat_passes_the_body_through(fake: FakeOpenAI, provider: Any) -> None:
    assert isinstance(provider, ChatProvider)
    fake.reply_with(Reply(text="Hi, how can I help?", prompt_tokens=9, completion_tokens=6))
    result = await provider.chat(body(temperature=0.2, seed=7, stream=False, user="u1"))
    assert result["object"] == "chat.completion"
    assert result["choices"][0]["message"]["content"] == "Hi, how can I help?"
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"] == {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}
    sent = fake.last
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.body == body(temperature=0.2, seed=7, user="u1")  # "stream": false dropped, nothing added


async def test_streaming_asks_for_usage_and_yields_openai_chunks(fake: FakeOpenAI, provider: Any) -> None:
    fake.reply_with(Reply(text="One two three"))
    chunks = await collect_stream(provider.stream(body(stream_options={"foo": 1})))
    assert fake.last.body["stream"] is True
    assert fake.last.body["stream_options"] == {"foo": 1, "include_usage": True}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert joined_text(chunks) == "One two three"
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finish == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


async def test_stream_usage_can_be_turned_off(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    provider = make_provider(PLUGIN, "openai-compatible", http, base_url=fake.base_url, api_key=KEY,
                             stream_usage=False)
    chunks = await collect_stream(provider.stream(body()))
    assert "stream_options" not in fake.last.body
    assert joined_text(chunks) == "Echo: Hello there"


async def test_tool_calls_round_trip(fake: FakeOpenAI, provider: Any) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    fake.reply_with(Reply(tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, id="call_1")]))
    result = await provider.chat(body(tools=tools, tool_choice="required", parallel_tool_calls=False))
    assert fake.last.body["tools"] == tools and fake.last.body["tool_choice"] == "required"
    message = result["choices"][0]["message"]
    assert result["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] is None
    assert message["tool_calls"] == [{"id": "call_1", "type": "function",
                                      "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]

    # The tool's answer goes back (the fake rejects a tool message that answers no call).
    fake.reply_with("It is sunny in Oslo.")
    follow_up = body(tools=tools, messages=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": message["tool_calls"]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'},
    ])
    result = await provider.chat(follow_up)
    assert result["choices"][0]["message"]["content"] == "It is sunny in Oslo."
    assert fake.last.body["messages"] == follow_up["messages"]


async def test_streamed_tool_calls(fake: FakeOpenAI, provider: Any) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    fake.reply_with(Reply(tool_calls=[ToolCall("lookup", {"q": "aiport"}, id="call_a"),
                                      ToolCall("lookup", {"q": "pluggy"}, id="call_b")]))
    chunks = await collect_stream(provider.stream(body(tools=tools)))
    calls = joined_tool_calls(chunks)
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("call_a", "lookup", {"q": "aiport"}), ("call_b", "lookup", {"q": "pluggy"})]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


async def test_image_parts_and_ai_server_images(fake: FakeOpenAI, provider: Any) -> None:
    parts = [{"type": "text", "text": "What is this?"},
             {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}}]
    await provider.chat(body(messages=[{"role": "user", "content": parts}]))
    assert fake.last.body["messages"][0]["content"] == parts

    # AI Server's "images" (bare base64) become image_url parts; OpenAI itself rejects the field.
    await provider.chat(body(messages=[{"role": "user", "content": "And this?", "images": [PNG]}]))
    assert fake.last.body["messages"][0]["content"] == [
        {"type": "text", "text": "And this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]


async def test_response_format_is_passed_through(fake: FakeOpenAI, provider: Any) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
        "type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"],
        "additionalProperties": False}}}
    result = await provider.chat(body(response_format=fmt))
    assert fake.last.body["response_format"] == fmt
    assert json.loads(result["choices"][0]["message"]["content"]) == {"echo": "Hello there"}


async def test_upstream_4xx_is_not_retryable_and_carries_its_message(provider: Any) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.chat(body(model="gpt-9"))
    err = info.value
    assert err.upstream_status == 404 and err.status == 404 and not err.retryable
    assert "The model `gpt-9` does not exist" in err.message
    assert err.provider == "test"

    with pytest.raises(ProviderError) as info:
        await provider.chat(body(response_format={"type": "json_object"}))
    assert info.value.status == 400
    assert "must contain the word 'json'" in info.value.message


@pytest.mark.parametrize(("status", "retry_after", "expected"), [
    (429, "7", 7.0),
    (503, None, None),
    (500, "1.5", 1.5),
])
async def test_429_and_5xx_are_retryable(fake: FakeOpenAI, provider: Any, status: int, retry_after: str | None,
                                         expected: float | None) -> None:
    fake.fail_next(status=status, retry_after=retry_after, message="slow down")
    with pytest.raises(ProviderError) as info:
        await provider.chat(body())
    err = info.value
    assert err.retryable and err.upstream_status == status and err.retry_after == expected
    assert "slow down" in err.message
    if status == 429:
        assert err.status == 429 and err.headers["Retry-After"] == "7"
    else:
        assert err.status == 502


async def test_retry_after_as_an_http_date(fake: FakeOpenAI, provider: Any) -> None:
    fake.fail_next(status=429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")  # in the past: no wait
    with pytest.raises(ProviderError) as info:
        await provider.chat(body())
    assert info.value.retry_after == 0.0


async def test_streaming_errors_before_the_first_chunk_raise(fake: FakeOpenAI, provider: Any) -> None:
    fake.fail_next(status=429, retry_after="2")
    with pytest.raises(ProviderError) as info:
        await collect_stream(provider.stream(body()))
    assert info.value.retryable and info.value.retry_after == 2.0


async def test_the_key_never_reaches_an_error(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    wrong = "sk-wrong-but-still-secret-999"
    provider = make_provider(PLUGIN, "openai", http, base_url=fake.base_url, api_key=wrong)
    with pytest.raises(ProviderError) as info:
        await provider.chat(body())
    err = info.value
    assert err.upstream_status == 401 and not err.retryable
    assert "Incorrect API key provided: ****" in err.message  # the fake echoed the key whole
    assert wrong not in str(err) and wrong not in repr(err) and wrong not in json.dumps(err.to_wire())
    assert wrong not in repr(provider)


async def test_api_key_header_replaces_bearer(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    fake.key_header = "api-key"
    provider = make_provider(PLUGIN, "openai-compatible", http, base_url=fake.base_url, api_key=KEY,
                             api_key_header="api-key", extra_headers={"X-Title": "aiport"})
    await provider.chat(body())
    assert fake.last.headers["api-key"] == KEY
    assert "Authorization" not in fake.last.headers
    assert fake.last.headers["X-Title"] == "aiport"


async def test_connection_errors_are_retryable(http: aiohttp.ClientSession) -> None:
    provider = make_provider(PLUGIN, "openai", http, base_url="http://127.0.0.1:9", api_key=KEY)
    with pytest.raises(ProviderError) as info:
        await provider.chat(body())
    assert info.value.retryable and info.value.upstream_status is None
    assert KEY not in info.value.message


async def test_a_hanging_upstream_times_out_and_sees_the_hang_up(fake: FakeOpenAI,
                                                                 http: aiohttp.ClientSession) -> None:
    provider = make_provider(PLUGIN, "openai", http, base_url=fake.base_url, api_key=KEY, timeout=1)
    fake.hang_next()
    with pytest.raises(ProviderError) as info:
        await provider.chat(body())
    assert info.value.retryable and info.value.status == 504 and info.value.error_code == "Timeout"
    await fake.wait_cancelled()


async def test_a_stream_cut_off_mid_way_is_a_retryable_error(fake: FakeOpenAI, provider: Any) -> None:
    fake.reply_with("a b c d e f")
    fake.die_mid_stream_next(after=3)
    seen: list[dict[str, Any]] = []
    with pytest.raises(ProviderError) as info:
        async for chunk in provider.stream(body()):
            seen.append(chunk)
    assert info.value.retryable
    assert 1 <= len(seen) <= 3


async def test_an_error_event_in_the_stream_raises(fake: FakeOpenAI, provider: Any) -> None:
    fake.die_mid_stream_next(after=2, how="error")
    with pytest.raises(ProviderError) as info:
        await collect_stream(provider.stream(body()))
    assert "fake upstream error mid-stream" in info.value.message


async def test_a_stalled_stream_times_out(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    provider = make_provider(PLUGIN, "openai", http, base_url=fake.base_url, api_key=KEY, timeout=1)
    fake.die_mid_stream_next(after=2, how="stall")
    with pytest.raises(ProviderError) as info:
        await collect_stream(provider.stream(body()))
    assert info.value.error_code == "Timeout" and info.value.retryable


async def test_stopping_a_stream_early_closes_the_upstream(fake: FakeOpenAI, provider: Any) -> None:
    fake.stream_delay = 0.05
    fake.reply_with(" ".join(["word"] * 50))
    stream = provider.stream(body())
    async for chunk in stream:
        if joined_text([chunk]):
            break
    await stream.aclose()
    await fake.wait_cancelled()


async def test_list_models_and_probe(fake: FakeOpenAI, provider: Any) -> None:
    assert await provider.list_models() == list(FakeOpenAI.default_models)
    await provider.probe()
    assert fake.last.path == "/v1/models" and fake.last.headers["Authorization"] == f"Bearer {KEY}"
    fake.fail_next(status=503)
    with pytest.raises(ProviderError) as info:
        await provider.probe()
    assert info.value.retryable


async def test_heartbeat_url_gets_the_key_only_on_its_own_origin(fake: FakeOpenAI,
                                                                  http: aiohttp.ClientSession) -> None:
    provider = make_provider(PLUGIN, "openai", http, base_url=fake.base_url, api_key=KEY,
                             heartbeat_url="/v1/models")
    await provider.probe()
    assert fake.last.headers["Authorization"] == f"Bearer {KEY}"

    other = fake.base_url.replace("127.0.0.1", "localhost")  # same server, another origin
    provider = make_provider(PLUGIN, "openai", http, base_url=fake.base_url, api_key=KEY,
                             heartbeat_url=f"{other}/v1/models")
    with pytest.raises(ProviderError) as info:
        await provider.probe()
    assert info.value.upstream_status == 401
    assert "Authorization" not in fake.last.headers


@pytest.mark.parametrize("suffix", ["", "/v1", "/v1/chat/completions"])
async def test_base_url_forms(fake: FakeOpenAI, http: aiohttp.ClientSession, suffix: str) -> None:
    provider = make_provider(PLUGIN, "openai-compatible", http, base_url=fake.base_url + suffix, api_key=KEY)
    await provider.chat(body())
    assert fake.last.path == "/v1/chat/completions"
    assert await provider.list_models()


def test_openai_compatible_needs_a_base_url(http: Any = None) -> None:
    with pytest.raises(ConfigError, match="base_url is required"):
        make_provider(PLUGIN, "openai-compatible", http)


async def test_openrouter_errors_inside_a_200_are_errors(fake: FakeOpenAI, http: aiohttp.ClientSession) -> None:
    provider = make_provider(PLUGIN, "openrouter", http, base_url=fake.base_url, api_key=KEY)
    fake.respond_next({"error": {"message": "Provider returned error", "code": 502}})
    with pytest.raises(ProviderError) as info:
        await provider.chat(body())
    assert info.value.retryable and "Provider returned error" in info.value.message


async def test_a_server_that_cannot_stream_is_replayed_as_chunks(fake: FakeOpenAI, provider: Any) -> None:
    fake.respond_next({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": "whole"}}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
    chunks = await collect_stream(provider.stream(body()))
    assert joined_text(chunks) == "whole"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["total_tokens"] == 2


async def test_cancelling_a_call_hangs_up_on_the_upstream(fake: FakeOpenAI, provider: Any) -> None:
    fake.hang_next()
    task = asyncio.create_task(provider.chat(body()))
    await fake.wait_for_requests(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake.wait_cancelled()
