"""The ``ollama`` chat provider against a protocol-faithful fake Ollama."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiport.core.errors import ProviderError
from aiport.core.registry import ChatProviderType
from aiport.plugins import chat_ollama
from fakes.chat_fake import Reply, ToolCall, collect_stream, joined_text, joined_tool_calls, make_provider
from fakes.ollama_server import FakeOllama

PLUGIN = "aiport.plugins.chat_ollama"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as f:
        yield f  # type: ignore[misc]


@pytest.fixture
def provider(fake: FakeOllama, http: aiohttp.ClientSession) -> Any:
    return make_provider(PLUGIN, "ollama", http, base_url=fake.base_url)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "Hello there"}], **extra}


def test_registers_the_ollama_type() -> None:
    types: list[ChatProviderType] = []
    chat_ollama.register_chat_providers(types.append)
    [t] = types
    assert t.name == "ollama" and t.default_base_url == "http://localhost:11434"
    assert t.options is chat_ollama.OllamaOptions
    assert t.api_models["qwen2.5:7b"] == "qwen2.5:7b" and len(t.api_models) >= 10


async def test_plain_chat_translates_both_ways(fake: FakeOllama, http: aiohttp.ClientSession) -> None:
    provider = make_provider(PLUGIN, "ollama", http, base_url=fake.base_url, keep_alive="10m", num_ctx=8192)
    fake.reply_with(Reply(text="Hi!", prompt_tokens=12, completion_tokens=3))
    result = await provider.chat(body(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
        temperature=0.3, top_p=0.9, seed=42, stop="END", max_tokens=64, frequency_penalty=0.5, stream=True))
    sent = fake.last.body
    assert fake.last.path == "/api/chat"
    assert sent == {
        "model": "llama3.1:8b",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
        "stream": False,  # Ollama streams unless told not to
        "options": {"temperature": 0.3, "top_p": 0.9, "seed": 42, "frequency_penalty": 0.5, "stop": ["END"],
                    "num_predict": 64, "num_ctx": 8192},
        "keep_alive": "10m",
    }
    assert result["object"] == "chat.completion" and result["id"].startswith("chatcmpl-")
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "Hi!"}
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


async def test_done_reason_length(fake: FakeOllama, provider: Any) -> None:
    fake.reply_with(Reply(text="cut", finish="length"))
    result = await provider.chat(body(max_tokens=1))
    assert result["choices"][0]["finish_reason"] == "length"


async def test_streaming_ndjson_becomes_chunks(fake: FakeOllama, provider: Any) -> None:
    fake.reply_with(Reply(text="One two three", prompt_tokens=4, completion_tokens=3))
    chunks = await collect_stream(provider.stream(body()))
    assert fake.last.body["stream"] is True
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert joined_text(chunks) == "One two three"
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    assert all("usage" not in c for c in chunks[:-1])


async def test_tool_calls_round_trip(fake: FakeOllama, provider: Any) -> None:
    fake.reply_with(Reply(tool_calls=[ToolCall("get_weather", {"city": "Oslo"})]))
    result = await provider.chat(body(tools=TOOLS, tool_choice="auto"))
    assert fake.last.body["tools"] == TOOLS
    choice = result["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}

    # The answer goes back: arguments as objects, the tool result named after its function.
    await provider.chat(body(tools=TOOLS, messages=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]))
    assert fake.last.body["messages"][1:] == [
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]


async def test_tool_call_ids_from_newer_ollama_are_kept(fake: FakeOllama, provider: Any) -> None:
    fake.reply_with(Reply(tool_calls=[ToolCall("get_weather", {"city": "Rome"}, id="call_xyz")]))
    result = await provider.chat(body(tools=TOOLS))
    assert result["choices"][0]["message"]["tool_calls"][0]["id"] == "call_xyz"


async def test_streamed_tool_calls(fake: FakeOllama, provider: Any) -> None:
    fake.reply_with(Reply(text="Let me check.", tool_calls=[ToolCall("get_weather", {"city": "Oslo"}),
                                                            ToolCall("get_weather", {"city": "Bergen"})]))
    chunks = await collect_stream(provider.stream(body(tools=TOOLS)))
    assert joined_text(chunks) == "Let me check."
    calls = joined_tool_calls(chunks)
    assert [json.loads(c["arguments"]) for c in calls] == [{"city": "Oslo"}, {"city": "Bergen"}]
    assert all(c["id"] and c["name"] == "get_weather" for c in calls)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_choice_none_drops_the_tools(fake: FakeOllama, provider: Any) -> None:
    await provider.chat(body(tools=TOOLS, tool_choice="none"))
    assert "tools" not in fake.last.body


async def test_a_forced_tool_choice_is_refused(fake: FakeOllama, provider: Any) -> None:
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        with pytest.raises(ProviderError) as info:
            await provider.chat(body(tools=TOOLS, tool_choice=choice))
        assert info.value.status == 400 and not info.value.retryable
        assert "cannot force a tool call" in info.value.message
    assert fake.requests == []


async def test_images_become_base64_lists(fake: FakeOllama, provider: Any) -> None:
    await provider.chat(body(model="llava:7b", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in"}, {"type": "text", "text": "this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]}]))
    assert fake.last.body["messages"] == [
        {"role": "user", "content": "What is in\nthis picture?", "images": [PNG]}]

    await provider.chat(body(messages=[{"role": "user", "content": "And this?", "images": [PNG]}]))
    assert fake.last.body["messages"][0]["images"] == [PNG]


@pytest.mark.parametrize(("extra", "needle"), [
    ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                 "image_url": {"url": "https://example.com/cat.png"}}]}]},
     "not links"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio",
                                                 "input_audio": {"data": "AAAA", "format": "wav"}}]}]},
     "'input_audio' content parts are not supported"),
    ({"n": 2}, "only n=1"),
    ({"logprobs": True}, "'logprobs'"),
    ({"tools": [{"type": "web_search"}]}, "only function tools"),
    ({"messages": []}, "non-empty list"),
])
async def test_what_ollama_cannot_do_is_a_400(fake: FakeOllama, provider: Any, extra: dict[str, Any],
                                              needle: str) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.chat(body(**extra))
    assert info.value.upstream_status == 400 and info.value.status == 400 and not info.value.retryable
    assert needle in info.value.message
    assert fake.requests == []


async def test_response_format(fake: FakeOllama, provider: Any) -> None:
    result = await provider.chat(body(response_format={"type": "json_object"}))
    assert fake.last.body["format"] == "json"
    assert json.loads(result["choices"][0]["message"]["content"]) == {"echo": "Hello there"}
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
    await provider.chat(body(response_format={"type": "json_schema",
                                              "json_schema": {"name": "x", "schema": schema}}))
    assert fake.last.body["format"] == schema


async def test_upstream_errors(fake: FakeOllama, provider: Any) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.chat(body(model="nope:1b"))
    assert info.value.status == 404 and not info.value.retryable
    assert 'model "nope:1b" not found, try pulling it first' in info.value.message

    fake.fail_next(status=503, retry_after="4", message="server busy")
    with pytest.raises(ProviderError) as info:
        await collect_stream(provider.stream(body()))
    assert info.value.retryable and info.value.retry_after == 4.0 and "server busy" in info.value.message


async def test_errors_inside_the_stream(fake: FakeOllama, provider: Any) -> None:
    fake.die_mid_stream_next(after=1, how="error")
    with pytest.raises(ProviderError) as info:
        await collect_stream(provider.stream(body()))
    assert "fake upstream error mid-stream" in info.value.message and info.value.retryable

    fake.die_mid_stream_next(after=1, how="close")
    with pytest.raises(ProviderError) as info:
        await collect_stream(provider.stream(body()))
    assert info.value.retryable


async def test_stopping_a_stream_early_closes_the_upstream(fake: FakeOllama, provider: Any) -> None:
    fake.stream_delay = 0.05
    fake.reply_with(" ".join(["word"] * 50))
    stream = provider.stream(body())
    async for chunk in stream:
        if joined_text([chunk]):
            break
    await stream.aclose()
    await fake.wait_cancelled()


async def test_list_models_and_probe(fake: FakeOllama, http: aiohttp.ClientSession, provider: Any) -> None:
    assert await provider.list_models() == list(FakeOllama.default_models)
    await provider.probe()
    assert fake.last.path == "/api/tags"
    beating = make_provider(PLUGIN, "ollama", http, base_url=fake.base_url, heartbeat_url="/")
    await beating.probe()
    assert fake.last.path == "/"
    fake.fail_next(status=500)
    with pytest.raises(ProviderError):
        await beating.probe()


async def test_a_key_behind_a_proxy_is_sent_as_bearer(http: aiohttp.ClientSession) -> None:
    async with FakeOllama(api_key="proxy-secret") as fake:
        provider = make_provider(PLUGIN, "ollama", http, base_url=fake.base_url, api_key="proxy-secret")
        await provider.chat(body())
        assert fake.last.headers["Authorization"] == "Bearer proxy-secret"
