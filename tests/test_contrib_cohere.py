"""The sample third-party plugin ``cohere_chat``: discovery, config and behaviour against a fake Cohere."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiport.contrib_providers.cohere_chat import CohereChatProvider, CohereOptions
from aiport.contrib_providers.cohere_chat import translate as tr
from aiport.core.config import Config, PluginsConfig, ProviderConfig, Secret
from aiport.core.errors import ConfigError, ProviderError
from aiport.core.execution.providers import resolve_providers
from aiport.core.interfaces import ChatProvider
from aiport.core.plugins import build_plugin_manager, describe_plugins
from aiport.core.registry import ProviderContext, collect
from aiport.core.sdk import SSEEvent, iter_sse
from fakes.cohere_server import TEMPLATE_TOKENS, FakeCohere, Reply

KEY = "co-test-Zq81secret-key"
ROOT = Path(__file__).resolve().parent.parent
HELLO = {"model": "command-r-08-2024", "messages": [{"role": "user", "content": "hello there"}]}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def cohere(aiohttp_server: Any) -> FakeCohere:
    fake = FakeCohere(api_key=KEY)
    server = await aiohttp_server(fake.app)
    fake.base_url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
def make_provider(
    cohere: FakeCohere, http: aiohttp.ClientSession, make_config: Callable[..., Config]
) -> Callable[..., CohereChatProvider]:
    """A provider built the way the app builds one: config -> resolve_providers -> the type's factory."""

    def make(**entry: Any) -> CohereChatProvider:
        data = {"name": "co", "type": "cohere", "base_url": cohere.base_url, "api_key": KEY, **entry}
        config = make_config({"providers": [data]})
        registry = collect(build_plugin_manager(config.plugins, default_plugins=()), config)
        [resolved] = resolve_providers(config, registry, environ={})
        ctx = ProviderContext(provider=resolved.config, options=resolved.options, http=http, config=config)
        provider = registry.chat_providers["cohere"].factory(ctx)
        assert isinstance(provider, CohereChatProvider)
        return provider

    return make


@pytest.fixture
def provider(make_provider: Callable[..., CohereChatProvider]) -> CohereChatProvider:
    return make_provider()


async def collect_stream(provider: CohereChatProvider, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in provider.stream(body)]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# --------------------------------------------------------------------------- discovery


def test_entry_point_advertises_the_plugin() -> None:
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="aiport")}
    assert eps["cohere_chat"].value == "aiport.contrib_providers.cohere_chat"


def test_plugin_manager_finds_it_and_it_registers_the_cohere_type() -> None:
    pm = build_plugin_manager()
    assert pm.get_plugin("cohere_chat") is not None
    [info] = [i for i in describe_plugins(pm) if i.name == "cohere_chat"]
    assert info.source.startswith("entry point")
    assert info.hooks == ("register_chat_providers",)

    registry = collect(pm, Config())
    assert "cohere" in registry.chat_providers
    assert registry.chat_providers.owners["cohere"] == "cohere_chat"
    ptype = registry.chat_providers["cohere"]
    assert ptype.options is CohereOptions
    assert ptype.default_base_url == "https://api.cohere.com"
    assert ptype.api_models["command-a"] == "command-a-03-2025"
    assert ptype.api_models["command-r-plus"] == "command-r-plus-08-2024"


def test_core_never_imports_the_contrib_package() -> None:
    # It must be reachable only through its entry point, like any pip-installed plugin.
    importing = re.compile(r"^\s*(from|import)\s+(aiport\.)?contrib_providers\b|[\"']aiport\.contrib_providers",
                           re.MULTILINE)
    for folder in ("core", "plugins"):
        for path in (ROOT / folder).rglob("*.py"):
            assert not importing.search(path.read_text(encoding="utf-8")), path


def test_cli_lists_it_as_an_entry_point_plugin(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AIPORT_CONFIG"}
    out = subprocess.run([sys.executable, "-m", "aiport", "plugins", "--json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    [entry] = [p for p in json.loads(out.stdout) if p["name"] == "cohere_chat"]
    assert entry["source"].startswith("entry point")
    assert "register_chat_providers" in entry["hooks"]


def test_plugins_disable_blocks_it(make_config: Callable[..., Config]) -> None:
    pm = build_plugin_manager(PluginsConfig(disable=["cohere_chat"]))
    assert "cohere_chat" not in [i.name for i in describe_plugins(pm)]
    config = make_config({"plugins": {"disable": ["cohere_chat"]},
                          "providers": [{"name": "co", "type": "cohere", "api_key": KEY}]})
    registry = collect(pm, config)
    assert "cohere" not in registry.chat_providers
    with pytest.raises(ConfigError) as err:
        resolve_providers(config, registry, environ={})
    assert "providers[0].type: no plugin provides the provider type 'cohere'" in str(err.value)


# --------------------------------------------------------------------------- config


def test_extra_provider_keys_are_structured_into_the_options_class(make_config: Callable[..., Config]) -> None:
    config = make_config({"providers": [{"name": "co", "type": "cohere", "api_key_env": "CO_KEY",
                                         "safety_mode": "STRICT", "strict_tools": "yes"}]})
    registry = collect(build_plugin_manager(default_plugins=()), config)
    [resolved] = resolve_providers(config, registry, environ={"CO_KEY": KEY})
    assert resolved.options == CohereOptions(safety_mode="strict", strict_tools=True)
    assert resolved.config.base_url == "https://api.cohere.com"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"safety_mode": "loud"}, "providers[0].safety_mode: expected one of 'contextual', 'strict', 'off'"),
        ({"safty_mode": "strict"}, "providers[0].safty_mode: unknown key; did you mean 'safety_mode'?"),
        ({"strict_tools": "maybe"}, "providers[0].strict_tools: expected true or false"),
    ],
)
def test_bad_option_is_a_config_error_with_its_path(
    make_config: Callable[..., Config], entry: dict[str, Any], problem: str
) -> None:
    config = make_config({"providers": [{"name": "co", "type": "cohere", "api_key": KEY, **entry}]})
    registry = collect(build_plugin_manager(default_plugins=()), config)
    with pytest.raises(ConfigError) as err:
        resolve_providers(config, registry, environ={})
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


async def test_factory_accepts_a_hand_built_context(cohere: FakeCohere, http: aiohttp.ClientSession) -> None:
    ctx = ProviderContext(
        provider=ProviderConfig(name="co", type="cohere", base_url=cohere.base_url + "/v2/", api_key=Secret(KEY)),
        options={"safety_mode": "off"}, http=http, config=Config(),
    )
    provider = CohereChatProvider.from_context(ctx)
    assert isinstance(provider, ChatProvider)
    assert provider.base_url == cohere.base_url  # a pasted /v2 suffix is dropped
    await provider.chat(HELLO)
    assert cohere.chat_bodies[-1]["safety_mode"] == "OFF"


# --------------------------------------------------------------------------- chat


async def test_chat_translates_the_request_and_the_answer(
    cohere: FakeCohere, make_provider: Callable[..., CohereChatProvider]
) -> None:
    provider = make_provider(safety_mode="strict")
    cohere.reply_with(Reply(text="Hi! How can I help?"))
    body = {
        "model": "command-r-08-2024",
        "messages": [{"role": "developer", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "hello"}]}],
        "max_completion_tokens": 50, "temperature": 0.4, "top_p": 1, "top_k": 40, "seed": 7, "stop": "###",
        "frequency_penalty": -0.5, "presence_penalty": 0.3, "user": "u-1", "logit_bias": {}, "n": 1,
    }
    result = await provider.chat(body)

    sent = cohere.chat_bodies[-1]
    assert sent == {
        "model": "command-r-08-2024", "stream": False,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "hello"}]}],
        "max_tokens": 50, "temperature": 0.4, "p": 0.99, "k": 40, "seed": 7, "stop_sequences": ["###"],
        "frequency_penalty": 0.0, "presence_penalty": 0.3, "safety_mode": "STRICT",
    }
    headers = cohere.requests[-1].headers
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["X-Client-Name"] == "aiport"

    assert result["object"] == "chat.completion"
    assert result["model"] == "command-r-08-2024"
    [choice] = result["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Hi! How can I help?"}
    assert choice["finish_reason"] == "stop"
    # usage.tokens (what the model processed) wins over usage.billed_units
    assert result["usage"]["prompt_tokens"] == 3 + TEMPLATE_TOKENS
    assert result["usage"]["completion_tokens"] == 5
    assert result["usage"]["total_tokens"] == 8 + TEMPLATE_TOKENS


async def test_custom_key_header(cohere: FakeCohere, make_provider: Callable[..., CohereChatProvider]) -> None:
    provider = make_provider(api_key_header="X-Api-Key")
    with pytest.raises(ProviderError) as err:
        await provider.chat(HELLO)
    assert cohere.requests[-1].headers["X-Api-Key"] == KEY
    assert "Authorization" not in cohere.requests[-1].headers
    assert err.value.upstream_status == 401  # the fake, like Cohere, wants a Bearer token


@pytest.mark.parametrize(
    ("extra", "finish"),
    [({"max_tokens": 2}, "length"), ({"stop": ["three"]}, "stop")],
)
async def test_finish_reasons(
    cohere: FakeCohere, provider: CohereChatProvider, extra: dict[str, Any], finish: str
) -> None:
    cohere.reply_with(Reply(text="one two three four"))
    result = await provider.chat({**HELLO, **extra})
    assert result["choices"][0]["finish_reason"] == finish
    assert result["choices"][0]["message"]["content"] in ("one two", "one two ")


def test_finish_reason_and_usage_mapping() -> None:
    assert {r: tr.finish_reason(r) for r in tr.FINISH_REASONS} == {
        "COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length", "TOOL_CALL": "tool_calls"}
    with pytest.raises(tr.UpstreamFailure):
        tr.finish_reason("ERROR")
    assert tr.usage_from({"billed_units": {"input_tokens": 4, "output_tokens": 6}}) == {
        "prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    assert tr.usage_from({}) is None


async def test_an_error_finish_is_a_retryable_failure(cohere: FakeCohere, provider: CohereChatProvider) -> None:
    cohere.reply_with(Reply(text="half an ans", finish_reason="ERROR"),
                      Reply(text="half an ans", finish_reason="ERROR"))
    with pytest.raises(ProviderError) as err:
        await provider.chat(HELLO)
    assert err.value.retryable
    with pytest.raises(ProviderError) as err:
        await collect_stream(provider, HELLO)
    assert err.value.retryable


# --------------------------------------------------------------------------- stream


@pytest.mark.parametrize("fragmented", [False, True])
async def test_stream_yields_openai_chunks_and_usage_last(
    cohere: FakeCohere, provider: CohereChatProvider, fragmented: bool
) -> None:
    cohere.fragment_writes = fragmented
    cohere.reply_with(Reply(text="Streaming works, one word at a time."))
    chunks = await collect_stream(provider, HELLO)

    assert cohere.chat_bodies[-1]["stream"] is True
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert text_of(chunks) == "Streaming works, one word at a time."
    assert len(chunks) > 4  # really incremental
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["usage"] == {"prompt_tokens": 2 + TEMPLATE_TOKENS, "completion_tokens": 7,
                             "total_tokens": 9 + TEMPLATE_TOKENS}
    assert all("usage" not in c for c in chunks[:-1])
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


async def test_stream_that_breaks_off_raises_after_its_chunks(
    cohere: FakeCohere, provider: CohereChatProvider
) -> None:
    cohere.reply_with(Reply(text="this answer will not finish", cut_after=4))
    received: list[dict[str, Any]] = []
    with pytest.raises(ProviderError) as err:
        async for chunk in provider.stream(HELLO):
            received.append(chunk)
    assert received  # the client already got part of the answer
    assert err.value.retryable
    assert err.value.provider == "co"


async def test_sse_parsing_follows_the_event_stream_rules() -> None:
    """The SDK's parser, as the Cohere provider uses it (an unterminated last event dropped)."""
    async def pieces() -> AsyncIterator[bytes]:
        raw = (b": keep-alive\r\n\r\nevent: content-delta\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n"
               b"data:{\"type\":\"message-end\"}\n\nevent: x\ndata: tail")
        for i in range(0, len(raw), 3):  # split mid-line, mid-CRLF
            yield raw[i : i + 3]

    events = [e async for e in iter_sse(pieces(), dispatch_unterminated=False)]
    # the last event never got its blank line, so it is incomplete and dropped
    assert events == [SSEEvent("content-delta", '{"a":\n1}'), SSEEvent("message", '{"type":"message-end"}')]


# --------------------------------------------------------------------------- tools


async def test_tool_calls_from_cohere(cohere: FakeCohere, provider: CohereChatProvider) -> None:
    cohere.reply_with(Reply(tool_calls=[("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})],
                            tool_plan="I will look up both cities."))
    result = await provider.chat({**HELLO, "tools": [WEATHER_TOOL]})
    [choice] = result["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "I will look up both cities."
    assert [json.loads(c["function"]["arguments"]) for c in message["tool_calls"]] == [
        {"city": "Paris"}, {"city": "Oslo"}]
    assert all(c["type"] == "function" and c["id"].startswith("get_weather_") for c in message["tool_calls"])
    assert cohere.chat_bodies[-1]["tools"] == [{"type": "function", "function": WEATHER_TOOL["function"]}]


async def test_tool_calls_streamed(cohere: FakeCohere, provider: CohereChatProvider) -> None:
    cohere.fragment_writes = True
    cohere.reply_with(Reply(tool_calls=[("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})],
                            tool_plan="Checking."))
    chunks = await collect_stream(provider, {**HELLO, "tools": [WEATHER_TOOL]})

    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for part in chunk["choices"][0]["delta"].get("tool_calls", []):
            call = calls.setdefault(part["index"], {"id": None, "name": "", "arguments": ""})
            call["id"] = part.get("id") or call["id"]
            call["name"] += part.get("function", {}).get("name") or ""
            call["arguments"] += part.get("function", {}).get("arguments") or ""
    assert sorted(calls) == [0, 1]
    assert [json.loads(calls[i]["arguments"]) for i in (0, 1)] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert all(c["name"] == "get_weather" and c["id"] for c in calls.values())
    assert text_of(chunks) == "Checking."
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] > 0


async def test_tool_results_and_tool_options_to_cohere(cohere: FakeCohere, provider: CohereChatProvider) -> None:
    strict_tool = {"type": "function", "function": {**WEATHER_TOOL["function"], "strict": True}}
    other = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    body = {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
        ],
        "tools": [strict_tool, other],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    cohere.reply_with(Reply(text="It is 21 °C in Paris."))
    result = await provider.chat(body)
    assert result["choices"][0]["message"]["content"] == "It is 21 °C in Paris."

    sent = cohere.chat_bodies[-1]
    assert sent["messages"][1] == {"role": "assistant", "tool_plan": "Let me check.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'}
    # A named tool_choice becomes "only that tool, and a call is required"; strict moves to strict_tools.
    assert sent["tools"] == [{"type": "function", "function": WEATHER_TOOL["function"]}]
    assert sent["tool_choice"] == "REQUIRED"
    assert sent["strict_tools"] is True


async def test_tool_choice_none_and_strict_tools_option(
    cohere: FakeCohere, make_provider: Callable[..., CohereChatProvider]
) -> None:
    provider = make_provider(strict_tools=False)
    strict_tool = {"type": "function", "function": {**WEATHER_TOOL["function"], "strict": True}}
    await provider.chat({**HELLO, "tools": [strict_tool], "tool_choice": "none"})
    sent = cohere.chat_bodies[-1]
    assert sent["tool_choice"] == "NONE"
    assert "strict_tools" not in sent  # the config's strict_tools: false overrides the request


# --------------------------------------------------------------------------- response_format


async def test_response_format_json_object(cohere: FakeCohere, provider: CohereChatProvider) -> None:
    result = await provider.chat({**HELLO, "response_format": {"type": "json_object"}})
    assert cohere.chat_bodies[-1]["response_format"] == {"type": "json_object"}
    assert json.loads(result["choices"][0]["message"]["content"]) == {"echo": "hello there"}


async def test_response_format_json_schema(cohere: FakeCohere, provider: CohereChatProvider) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    body = {**HELLO, "response_format": {"type": "json_schema",
                                         "json_schema": {"name": "person", "strict": True, "schema": schema}}}
    result = await provider.chat(body)
    assert cohere.chat_bodies[-1]["response_format"] == {"type": "json_object", "json_schema": schema}
    assert json.loads(result["choices"][0]["message"]["content"]) == {"name": "text", "age": 1}
    # "text" is Cohere's default and is simply not sent
    await provider.chat({**HELLO, "response_format": {"type": "text"}})
    assert "response_format" not in cohere.chat_bodies[-1]


# --------------------------------------------------------------------------- errors


async def test_rejected_request_carries_coheres_message(cohere: FakeCohere, provider: CohereChatProvider) -> None:
    with pytest.raises(ProviderError) as err:
        await provider.chat({**HELLO, "temperature": -1})
    e = err.value
    assert "temperature must be at least 0" in e.message
    assert (e.upstream_status, e.status, e.retryable, e.provider) == (400, 400, False, "co")

    with pytest.raises(ProviderError) as err:
        await provider.chat({**HELLO, "model": "command-nope"})
    assert err.value.status == 404
    assert "model 'command-nope' not found" in err.value.message


async def test_rate_limit_is_retryable_with_retry_after(cohere: FakeCohere, provider: CohereChatProvider) -> None:
    cohere.fail_next(2, status=429, message="You are using a Trial key, which is limited to 10 API calls / minute.",
                     retry_after=7)
    with pytest.raises(ProviderError) as err:
        await provider.chat(HELLO)
    e = err.value
    assert (e.upstream_status, e.status, e.retryable, e.retry_after) == (429, 429, True, 7.0)
    assert e.headers["Retry-After"] == "7"
    assert "limited to 10 API calls" in e.message

    with pytest.raises(ProviderError) as err:  # before the first chunk, a stream raises the same way
        await collect_stream(provider, HELLO)
    assert err.value.retryable and err.value.retry_after == 7.0
    assert (await provider.chat(HELLO))["choices"][0]["message"]["content"] == "Echo: hello there"


async def test_server_errors_are_retryable(cohere: FakeCohere, provider: CohereChatProvider) -> None:
    cohere.fail_next(status=503, message="service unavailable")
    with pytest.raises(ProviderError) as err:
        await provider.chat(HELLO)
    assert (err.value.upstream_status, err.value.status, err.value.retryable) == (503, 502, True)


async def test_bad_key_is_not_retryable_and_never_leaks(
    cohere: FakeCohere, make_provider: Callable[..., CohereChatProvider]
) -> None:
    provider = make_provider(api_key="co-wrong-key-ABCDEFG")
    with pytest.raises(ProviderError) as err:
        await provider.chat(HELLO)
    e = err.value
    assert (e.upstream_status, e.status, e.retryable) == (401, 502, False)
    assert "invalid api token" in e.message
    assert "co-wrong-key-ABCDEFG" not in f"{e} {e.message} {e.to_wire()} {provider!r}"


async def test_key_echoed_by_upstream_is_scrubbed(cohere: FakeCohere, provider: CohereChatProvider) -> None:
    cohere.fail_next(status=400, message=f"invalid request: token {KEY} cannot be used here")
    with pytest.raises(ProviderError) as err:
        await provider.chat(HELLO)
    assert KEY not in err.value.message
    assert "token **** cannot be used" in err.value.message


async def test_account_statuses_are_not_shown_to_clients_as_their_own_4xx(
    cohere: FakeCohere, provider: CohereChatProvider
) -> None:
    cohere.fail_next(status=498, message="invalid token")
    with pytest.raises(ProviderError) as err:
        await provider.chat(HELLO)
    assert err.value.status == 502 and "498" in err.value.message


async def test_connection_refused_is_retryable(http: aiohttp.ClientSession) -> None:
    with socket.socket() as s:  # a port that was just free, so nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = CohereChatProvider(name="co", base_url=f"http://127.0.0.1:{port}", api_key=Secret(KEY), http=http)
    with pytest.raises(ProviderError) as err:
        await provider.chat(HELLO)
    assert err.value.retryable and err.value.upstream_status is None
    assert KEY not in err.value.message


async def test_timeout_is_retryable_gateway_timeout(cohere: FakeCohere, http: aiohttp.ClientSession) -> None:
    # Built directly: the config's timeout has a 1 s minimum, too slow for a unit test.
    provider = CohereChatProvider(name="co", base_url=cohere.base_url, api_key=Secret(KEY), timeout=0.2, http=http)
    cohere.reply_with(Reply(text="too late", delay=1.0))
    with pytest.raises(ProviderError) as err:
        await provider.chat(HELLO)
    assert (err.value.status, err.value.error_code, err.value.retryable) == (504, "Timeout", True)


async def test_unsupported_request_is_a_client_error_and_sends_nothing(
    cohere: FakeCohere, provider: CohereChatProvider
) -> None:
    for body in ({**HELLO, "n": 2},
                 {**HELLO, "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
                 {**HELLO, "response_format": {"type": "grammar"}}):
        with pytest.raises(ProviderError) as err:
            await provider.chat(body)
        assert err.value.status == 400 and not err.value.retryable
    assert cohere.chat_bodies == []


# --------------------------------------------------------------------------- probe, models, close


async def test_probe(cohere: FakeCohere, provider: CohereChatProvider,
                     make_provider: Callable[..., CohereChatProvider]) -> None:
    await provider.probe()
    assert cohere.requests[-1].path == "/v1/models"
    assert cohere.requests[-1].query == {"page_size": "1"}
    with pytest.raises(ProviderError) as err:
        await make_provider(api_key="nope-nope-nope").probe()
    assert err.value.upstream_status == 401


async def test_list_models_follows_pages_and_keeps_chat_models(
    cohere: FakeCohere, provider: CohereChatProvider
) -> None:
    cohere.page_limit = 2
    assert await provider.list_models() == [
        "command-a-03-2025", "command-r-plus-08-2024", "command-r-08-2024", "command-r7b-12-2024"]
    queries = [r.query for r in cohere.requests]
    assert [q.get("page_token") for q in queries] == [None, "page-2"]
    assert all(q["endpoint"] == "chat" for q in queries)


async def test_aclose_closes_only_a_session_the_provider_opened(
    cohere: FakeCohere, http: aiohttp.ClientSession, provider: CohereChatProvider
) -> None:
    own = CohereChatProvider(name="solo", base_url=cohere.base_url, api_key=Secret(KEY))
    await own.chat(HELLO)
    session = own._sessions.get()
    assert session is not http and not session.closed
    await own.aclose()
    assert session.closed

    await provider.aclose()
    assert not http.closed  # the app's shared session is the app's to close
