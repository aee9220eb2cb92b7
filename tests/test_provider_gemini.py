"""The ``gemini`` chat provider against a protocol-faithful fake Gemini API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiport.core.errors import ProviderError
from aiport.core.registry import ChatProviderType
from aiport.plugins import chat_gemini
from fakes.chat_fake import Reply, ToolCall, collect_stream, joined_text, joined_tool_calls, make_provider
from fakes.gemini_server import FakeGemini

PLUGIN = "aiport.plugins.chat_gemini"
KEY = "AIzaSy-test-secret-key-42"
MODEL = "gemini-2.0-flash"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
        "additionalProperties": False}}},
    {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=KEY) as f:
        yield f  # type: ignore[misc]


@pytest.fixture
def provider(fake: FakeGemini, http: aiohttp.ClientSession) -> Any:
    return make_provider(PLUGIN, "gemini", http, base_url=fake.base_url, api_key=KEY)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hello there"}], **extra}


def test_registers_the_gemini_type() -> None:
    types: list[ChatProviderType] = []
    chat_gemini.register_chat_providers(types.append)
    [t] = types
    assert t.name == "gemini" and t.default_base_url == "https://generativelanguage.googleapis.com"
    assert t.api_models["gemini-2.0-flash"] == "gemini-2.0-flash" and len(t.api_models) >= 10


async def test_plain_chat_translates_both_ways(fake: FakeGemini, provider: Any) -> None:
    fake.reply_with(Reply(text="Hi!", prompt_tokens=8, completion_tokens=2))
    result = await provider.chat(body(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"},
                  {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "How are you?"}],
        max_tokens=100, temperature=0.4, top_p=0.8, stop="END", seed=3))
    sent = fake.last
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.headers["x-goog-api-key"] == KEY and "key" not in sent.query  # never in the URL
    assert sent.body == {
        "contents": [{"role": "user", "parts": [{"text": "Hello there"}]},
                     {"role": "model", "parts": [{"text": "Hello!"}]},
                     {"role": "user", "parts": [{"text": "How are you?"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 0.4, "topP": 0.8, "seed": 3, "maxOutputTokens": 100,
                             "stopSequences": ["END"]},
    }
    assert result["object"] == "chat.completion" and result["model"] == MODEL
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "Hi!"}
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"] == {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}


async def test_streaming(fake: FakeGemini, provider: Any) -> None:
    fake.reply_with(Reply(text="One two three", prompt_tokens=5, completion_tokens=3, finish="length"))
    chunks = await collect_stream(provider.stream(body()))
    assert fake.last.path == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert fake.last.query == {"alt": "sse"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert joined_text(chunks) == "One two three"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


async def test_tools_are_declared_in_gemini_s_schema_subset(fake: FakeGemini, provider: Any) -> None:
    await provider.chat(body(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}))
    assert fake.last.body["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather for a city", "parameters": {
            "type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}},
        {"name": "now"},  # Gemini refuses an OBJECT without properties
    ]}]
    assert fake.last.body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY",
                                                                      "allowedFunctionNames": ["get_weather"]}}
    for choice, mode in (("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")):
        await provider.chat(body(tools=TOOLS, tool_choice=choice))
        assert fake.last.body["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


async def test_tool_calls_round_trip(fake: FakeGemini, provider: Any) -> None:
    fake.reply_with(Reply(tool_calls=[ToolCall("get_weather", {"city": "Oslo"}), ToolCall("now")]))
    result = await provider.chat(body(tools=TOOLS))
    choice = result["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Oslo"}), ("now", {})]
    assert all(c["id"].startswith("call_") for c in calls) and calls[0]["id"] != calls[1]["id"]

    await provider.chat(body(tools=TOOLS, messages=[
        {"role": "user", "content": "Weather in Oslo, and the time?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"sky": "sunny"}'},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "12:00"},
    ]))
    assert fake.last.body["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
                                    {"functionCall": {"name": "now", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "sunny"}}},
                                   {"functionResponse": {"name": "now", "response": {"result": "12:00"}}}]},
    ]


async def test_a_tool_result_for_no_call_is_refused(fake: FakeGemini, provider: Any) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.chat(body(messages=[{"role": "user", "content": "hi"},
                                           {"role": "tool", "tool_call_id": "call_zzz", "content": "x"}]))
    assert info.value.status == 400 and "answers no earlier tool call" in info.value.message
    assert fake.requests == []


async def test_streamed_tool_calls(fake: FakeGemini, provider: Any) -> None:
    fake.reply_with(Reply(text="Checking.", tool_calls=[ToolCall("get_weather", {"city": "Oslo"}),
                                                        ToolCall("get_weather", {"city": "Rome"})]))
    chunks = await collect_stream(provider.stream(body(tools=TOOLS)))
    assert joined_text(chunks) == "Checking."
    calls = joined_tool_calls(chunks)
    assert [json.loads(c["arguments"]) for c in calls] == [{"city": "Oslo"}, {"city": "Rome"}]
    assert all(c["id"] and c["name"] == "get_weather" for c in calls)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_images_audio_and_files_become_inline_data(fake: FakeGemini, provider: Any) -> None:
    await provider.chat(body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
    ]}]))
    assert fake.last.body["contents"][0]["parts"] == [
        {"text": "Describe"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]
    await provider.chat(body(messages=[{"role": "user", "content": "this", "images": [PNG]}]))
    assert fake.last.body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}


@pytest.mark.parametrize(("extra", "needle"), [
    ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                 "image_url": {"url": "https://example.com/cat.png"}}]}]},
     "not links"),
    ({"messages": [{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}]},
     "'refusal' content parts are not supported"),
    ({"logprobs": True}, "'logprobs'"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object", "properties": {
            "next": {"$ref": "#/$defs/Node"}}}}}}}}, "nests too deeply"),
])
async def test_what_gemini_cannot_do_is_a_400(fake: FakeGemini, provider: Any, extra: dict[str, Any],
                                              needle: str) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.chat(body(**extra))
    assert info.value.status == 400 and not info.value.retryable and needle in info.value.message
    assert fake.requests == []


async def test_response_format(fake: FakeGemini, provider: Any) -> None:
    result = await provider.chat(body(response_format={"type": "json_object"}))
    assert fake.last.body["generationConfig"] == {"responseMimeType": "application/json"}
    assert json.loads(result["choices"][0]["message"]["content"]) == {"echo": "Hello there"}

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "properties": {"echo": {"type": "string"}, "city": {"$ref": "#/$defs/City"},
                             "note": {"type": ["string", "null"]},
                             "tag": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
              "required": ["echo"], "additionalProperties": False,
              "$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}}}}}
    await provider.chat(body(response_format={"type": "json_schema",
                                              "json_schema": {"name": "answer", "strict": True, "schema": schema}}))
    assert fake.last.body["generationConfig"] == {"responseMimeType": "application/json", "responseSchema": {
        "type": "OBJECT", "required": ["echo"], "properties": {
            "echo": {"type": "STRING"},
            "city": {"type": "OBJECT", "properties": {"name": {"type": "STRING"}}},
            "note": {"type": "STRING", "nullable": True},
            "tag": {"type": "STRING", "nullable": True},
        }}}


async def test_n_candidates_become_choices(fake: FakeGemini, provider: Any) -> None:
    result = await provider.chat(body(n=2))
    assert fake.last.body["generationConfig"] == {"candidateCount": 2}
    assert [c["index"] for c in result["choices"]] == [0, 1]
    assert all(c["message"]["content"] == "Echo: Hello there" for c in result["choices"])


async def test_upstream_errors(fake: FakeGemini, provider: Any) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.chat(body(model="gemini-9"))
    assert info.value.status == 404 and not info.value.retryable
    assert "NOT_FOUND: models/gemini-9 is not found" in info.value.message

    fake.fail_next(status=429, retry_after=37, message="Resource has been exhausted (e.g. check quota).")
    with pytest.raises(ProviderError) as info:
        await provider.chat(body())
    assert info.value.retryable and info.value.retry_after == 37.0 and info.value.status == 429
    assert "RESOURCE_EXHAUSTED: Resource has been exhausted" in info.value.message

    fake.fail_next(status=503, message="The model is overloaded.")
    with pytest.raises(ProviderError) as info:
        await collect_stream(provider.stream(body()))
    assert info.value.retryable and info.value.upstream_status == 503


async def test_the_key_never_reaches_an_error_or_a_url(fake: FakeGemini, http: aiohttp.ClientSession) -> None:
    wrong = "AIzaSy-wrong-secret-key-13"
    provider = make_provider(PLUGIN, "gemini", http, base_url=fake.base_url, api_key=wrong)
    with pytest.raises(ProviderError) as info:
        await provider.chat(body())
    assert info.value.upstream_status == 400 and not info.value.retryable
    assert "API key not valid" in info.value.message
    assert wrong not in str(info.value) and wrong not in json.dumps(info.value.to_wire())
    assert all(wrong not in r.path and "key" not in r.query for r in fake.requests)


async def test_errors_inside_the_stream(fake: FakeGemini, provider: Any) -> None:
    fake.die_mid_stream_next(after=1, how="error")
    with pytest.raises(ProviderError) as info:
        await collect_stream(provider.stream(body()))
    assert "fake upstream error mid-stream" in info.value.message and info.value.retryable

    fake.die_mid_stream_next(after=1, how="close")
    with pytest.raises(ProviderError) as info:
        await collect_stream(provider.stream(body()))
    assert info.value.retryable


async def test_stopping_a_stream_early_closes_the_upstream(fake: FakeGemini, provider: Any) -> None:
    fake.stream_delay = 0.05
    fake.reply_with(" ".join(["word"] * 50))
    stream = provider.stream(body())
    async for chunk in stream:
        if joined_text([chunk]):
            break
    await stream.aclose()
    await fake.wait_cancelled()


async def test_list_models_and_probe(fake: FakeGemini, provider: Any) -> None:
    fake.page_limit = 2
    assert await provider.list_models() == list(FakeGemini.default_models)  # embedding models left out
    assert [r.query.get("pageToken") for r in fake.requests] == [None, "2"]
    await provider.probe()
    assert fake.last.path == "/v1beta/models" and fake.last.query == {"pageSize": "1"}
    assert fake.last.headers["x-goog-api-key"] == KEY
