"""The ``anthropic`` chat provider against a protocol-faithful fake Messages API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiport.core.errors import ProviderError
from aiport.core.registry import ChatProviderType
from aiport.plugins import chat_anthropic
from fakes.anthropic_server import FakeAnthropic
from fakes.chat_fake import Reply, ToolCall, collect_stream, joined_text, joined_tool_calls, make_provider

PLUGIN = "aiport.plugins.chat_anthropic"
KEY = "sk-ant-test-secret-0001"
MODEL = "claude-3-5-haiku-latest"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
SCHEMA = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=KEY) as f:
        yield f  # type: ignore[misc]


@pytest.fixture
def provider(fake: FakeAnthropic, http: aiohttp.ClientSession) -> Any:
    return make_provider(PLUGIN, "anthropic", http, base_url=fake.base_url, api_key=KEY)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hello there"}], **extra}


def test_registers_the_anthropic_type() -> None:
    types: list[ChatProviderType] = []
    chat_anthropic.register_chat_providers(types.append)
    [t] = types
    assert t.name == "anthropic" and t.default_base_url == "https://api.anthropic.com"
    assert t.api_models["claude-3-5-haiku"] == "claude-3-5-haiku-latest" and len(t.api_models) >= 10


async def test_the_fake_rejects_a_missing_max_tokens_like_the_api(fake: FakeAnthropic,
                                                                  http: aiohttp.ClientSession) -> None:
    async with http.post(f"{fake.base_url}/v1/messages", json=body(),
                         headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}) as resp:
        assert resp.status == 400
        assert await resp.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                                "message": "max_tokens: Field required"}}
        assert resp.headers["request-id"].startswith("req_")


async def test_plain_chat_translates_both_ways(fake: FakeAnthropic, provider: Any) -> None:
    fake.reply_with(Reply(text="Hi!", prompt_tokens=10, completion_tokens=2))
    result = await provider.chat(body(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Be kind."},
                  {"role": "user", "content": "Hello there"}],
        temperature=0.5, top_p=0.9, stop=["END"], seed=1, presence_penalty=0.2, user="user-7"))
    sent = fake.last
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY and sent.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in sent.headers
    assert sent.body == {
        "model": MODEL, "max_tokens": 4096, "system": "Be brief.\n\nBe kind.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}],
        "temperature": 0.5, "top_p": 0.9, "stop_sequences": ["END"], "metadata": {"user_id": "user-7"},
    }
    assert result["object"] == "chat.completion" and result["id"].startswith("msg_")
    assert result["model"] == MODEL
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "Hi!"}
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}


async def test_max_tokens_and_its_default(fake: FakeAnthropic, http: aiohttp.ClientSession) -> None:
    provider = make_provider(PLUGIN, "anthropic", http, base_url=fake.base_url, api_key=KEY,
                             default_max_tokens=1000, beta=["prompt-caching-2024-07-31"])
    await provider.chat(body())
    assert fake.last.body["max_tokens"] == 1000
    assert fake.last.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    await provider.chat(body(max_completion_tokens=50))
    assert fake.last.body["max_tokens"] == 50
    fake.reply_with(Reply(text="cut", finish="length"))
    result = await provider.chat(body(max_tokens=1))
    assert result["choices"][0]["finish_reason"] == "length"


async def test_streaming(fake: FakeAnthropic, provider: Any) -> None:
    fake.reply_with(Reply(text="One two three", prompt_tokens=7, completion_tokens=3))
    chunks = await collect_stream(provider.stream(body()))
    assert fake.last.body["stream"] is True
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert joined_text(chunks) == "One two three"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["object"] == "chat.completion.chunk"


@pytest.mark.parametrize(("choice", "expected"), [
    (None, None),
    ("auto", {"type": "auto"}),
    ("none", {"type": "none"}),
    ("required", {"type": "any"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
])
async def test_tools_and_tool_choice(fake: FakeAnthropic, provider: Any, choice: Any, expected: Any) -> None:
    await provider.chat(body(tools=TOOLS, **({"tool_choice": choice} if choice else {})))
    assert fake.last.body["tools"] == [{"name": "get_weather", "description": "Weather for a city",
                                        "input_schema": TOOLS[0]["function"]["parameters"]}]
    assert fake.last.body.get("tool_choice") == expected


async def test_parallel_tool_calls_false(fake: FakeAnthropic, provider: Any) -> None:
    await provider.chat(body(tools=TOOLS, parallel_tool_calls=False))
    assert fake.last.body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    await provider.chat(body(tools=TOOLS, tool_choice="required", parallel_tool_calls=False))
    assert fake.last.body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


async def test_tool_calls_round_trip(fake: FakeAnthropic, provider: Any) -> None:
    fake.reply_with(Reply(text="Checking.", tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, id="toolu_1"),
                                                        ToolCall("get_weather", {"city": "Rome"}, id="toolu_2")]))
    result = await provider.chat(body(tools=TOOLS))
    choice = result["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    calls = choice["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("toolu_1", "get_weather", {"city": "Oslo"}), ("toolu_2", "get_weather", {"city": "Rome"})]

    # Both results and a new question end up in one user turn, tool results first (the fake checks it).
    await provider.chat(body(tools=TOOLS, messages=[
        {"role": "user", "content": "Weather in Oslo and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "rainy"},
        {"role": "user", "content": "Thanks!"},
    ]))
    assert fake.last.body["messages"][1:] == [
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "rainy"},
            {"type": "text", "text": "Thanks!"},
        ]},
    ]


async def test_streamed_tool_calls(fake: FakeAnthropic, provider: Any) -> None:
    fake.reply_with(Reply(text="Let me look.", tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, id="toolu_a"),
                                                           ToolCall("get_weather", {"city": "Bergen"}, id="toolu_b")],
                          prompt_tokens=20, completion_tokens=30))
    chunks = await collect_stream(provider.stream(body(tools=TOOLS)))
    assert joined_text(chunks) == "Let me look."
    calls = joined_tool_calls(chunks)
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("toolu_a", "get_weather", {"city": "Oslo"}), ("toolu_b", "get_weather", {"city": "Bergen"})]
    starts = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls") or () if "id" in d]
    assert [d["index"] for d in starts] == [0, 1] and all(d["type"] == "function" for d in starts)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 30


async def test_images(fake: FakeAnthropic, provider: Any) -> None:
    await provider.chat(body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]}]))
    assert fake.last.body["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    await provider.chat(body(messages=[{"role": "user", "content": "this", "images": [PNG]}]))
    assert fake.last.body["messages"][0]["content"][1]["source"]["media_type"] == "image/png"


@pytest.mark.parametrize(("extra", "needle"), [
    ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                 "image_url": {"url": "data:image/bmp;base64,Qk0="}}]}]},
     "not image/bmp"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio",
                                                 "input_audio": {"data": "AAAA", "format": "wav"}}]}]},
     "'input_audio' content parts are not supported"),
    ({"response_format": {"type": "json_object"}, "tools": TOOLS}, "cannot be combined with tools"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}}},
     "top level is an object"),
    ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "at least one user"),
    ({"n": 3}, "only n=1"),
])
async def test_what_anthropic_cannot_do_is_a_400(fake: FakeAnthropic, provider: Any, extra: dict[str, Any],
                                                 needle: str) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.chat(body(**extra))
    assert info.value.status == 400 and not info.value.retryable
    assert needle in info.value.message
    assert fake.requests == []


async def test_json_output_is_emulated_with_a_forced_tool(fake: FakeAnthropic, provider: Any) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
    result = await provider.chat(body(response_format=fmt))
    sent = fake.last.body
    assert sent["tools"][0]["name"] == chat_anthropic.JSON_TOOL and sent["tools"][0]["input_schema"] == SCHEMA
    assert sent["tool_choice"] == {"type": "tool", "name": chat_anthropic.JSON_TOOL}
    choice = result["choices"][0]
    assert json.loads(choice["message"]["content"]) == {"echo": "Hello there"}
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]

    chunks = await collect_stream(provider.stream(body(response_format={"type": "json_object"})))
    assert fake.last.body["tools"][0]["input_schema"] == {"type": "object"}
    assert json.loads(joined_text(chunks)) == {"echo": "Hello there"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert joined_tool_calls(chunks) == []


async def test_upstream_errors(fake: FakeAnthropic, provider: Any) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.chat(body(model="claude-9"))
    assert info.value.status == 404 and not info.value.retryable
    assert "not_found_error: model: claude-9" in info.value.message

    with pytest.raises(ProviderError) as info:
        await provider.chat(body(temperature=1.5))
    assert info.value.status == 400 and "temperature" in info.value.message

    fake.fail_next(status=429, retry_after="12", message="Number of requests has exceeded your rate limit")
    with pytest.raises(ProviderError) as info:
        await provider.chat(body())
    assert info.value.retryable and info.value.retry_after == 12.0 and info.value.status == 429
    assert "rate_limit_error: Number of requests" in info.value.message

    fake.fail_next(status=529, message="Overloaded")
    with pytest.raises(ProviderError) as info:
        await collect_stream(provider.stream(body()))
    assert info.value.retryable and info.value.upstream_status == 529 and info.value.status == 502


async def test_errors_inside_the_stream(fake: FakeAnthropic, provider: Any) -> None:
    fake.die_mid_stream_next(after=3, how="error")
    with pytest.raises(ProviderError) as info:
        await collect_stream(provider.stream(body()))
    assert info.value.retryable and info.value.upstream_status == 529
    assert "overloaded_error: fake upstream error mid-stream" in info.value.message

    fake.die_mid_stream_next(after=3, how="close")
    with pytest.raises(ProviderError) as info:
        await collect_stream(provider.stream(body()))
    assert info.value.retryable


async def test_the_key_never_reaches_an_error(fake: FakeAnthropic, http: aiohttp.ClientSession) -> None:
    wrong = "sk-ant-wrong-secret-777"
    provider = make_provider(PLUGIN, "anthropic", http, base_url=fake.base_url, api_key=wrong)
    with pytest.raises(ProviderError) as info:
        await provider.chat(body())
    assert info.value.upstream_status == 401 and "invalid x-api-key" in info.value.message
    assert wrong not in str(info.value) and wrong not in json.dumps(info.value.to_wire())


async def test_stopping_a_stream_early_closes_the_upstream(fake: FakeAnthropic, provider: Any) -> None:
    fake.stream_delay = 0.05
    fake.reply_with(" ".join(["word"] * 50))
    stream = provider.stream(body())
    async for chunk in stream:
        if joined_text([chunk]):
            break
    await stream.aclose()
    await fake.wait_cancelled()


async def test_list_models_follows_pages_and_probe(fake: FakeAnthropic, provider: Any) -> None:
    fake.page_limit = 2
    assert await provider.list_models() == list(FakeAnthropic.default_models)
    assert [r.query.get("after_id") for r in fake.requests] == [None, "claude-sonnet-4-20250514"]
    await provider.probe()
    assert fake.last.path == "/v1/models" and fake.last.headers["x-api-key"] == KEY
