"""The chat gateway end to end against protocol-faithful fake backends (OpenAI, Anthropic, Gemini,
Ollama) on loopback, with the official ``openai`` SDK as the client: translation, failover,
recovery probes, client disconnects and accounting."""

from __future__ import annotations

import asyncio
import collections
import gc
from collections.abc import Callable
from typing import Any

import openai
import pytest
from aiohttp import web
from aiport.core import state
from aiport.core.execution.routing import ProviderManager
from fakes.anthropic_server import FakeAnthropic
from fakes.chat_fake import Reply
from fakes.gemini_server import FakeGemini
from fakes.ollama_server import FakeOllama
from fakes.openai_server import FakeOpenAI


def sdk(client: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="any", max_retries=0)


@pytest.fixture
async def fakes() -> Any:
    servers = {"openai": FakeOpenAI(), "anthropic": FakeAnthropic(), "gemini": FakeGemini(), "ollama": FakeOllama()}
    for server in servers.values():
        await server.start()
    yield servers
    for server in servers.values():
        await server.close()


def m(gateway_id: str, api_model: str) -> dict[str, str]:
    return {"model": gateway_id, "api_model": api_model}


def provider(name: str, type_: str, fake: Any, models: list[Any], **extra: Any) -> dict[str, Any]:
    key = {"api_key": fake.api_key} if getattr(fake, "api_key", None) else {}
    return {"name": name, "type": type_, "base_url": fake.base_url, "models": models, **key, **extra}


async def test_every_wire_format_answers_through_the_openai_sdk(make_client: Callable[..., Any],
                                                                fakes: dict[str, Any]) -> None:
    client = await make_client({"providers": [
        provider("oa", "openai", fakes["openai"], [m("m-openai", "gpt-4o-mini")]),
        provider("an", "anthropic", fakes["anthropic"], [m("m-claude", "claude-3-5-haiku-latest")]),
        provider("ge", "gemini", fakes["gemini"], [m("m-gemini", "gemini-2.0-flash")]),
        provider("ol", "ollama", fakes["ollama"], [m("m-llama", "llama3.1:8b")]),
    ]})
    api = sdk(client)
    for model, fake in (("m-openai", "openai"), ("m-claude", "anthropic"), ("m-gemini", "gemini"),
                        ("m-llama", "ollama")):
        fakes[fake].reply_with(Reply(text=f"hello from {fake}"))
        answer = await api.chat.completions.create(
            model=model, max_tokens=50,
            messages=[{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == f"hello from {fake}", model
        assert answer.usage is not None and answer.usage.completion_tokens > 0
        fakes[fake].reply_with(Reply(text=f"streamed from {fake}"))
        stream = await api.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                   max_tokens=50, stream=True,
                                                   stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"streamed from {fake}"
        assert chunks[-1].usage is not None, model
    system = fakes["anthropic"].requests[0].body["system"]  # the system prompt moved to Anthropic's field
    assert system == "be nice" or system == [{"type": "text", "text": "be nice"}]
    assert fakes["gemini"].requests[0].body["systemInstruction"]["parts"][0]["text"] == "be nice"


async def test_failover_on_503_refused_and_timeout_then_recovery(make_client: Callable[..., Any],
                                                                  fakes: dict[str, Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = fakes["openai"], FakeOpenAI()
    await second.start()
    try:
        client = await make_client({"providers": [
            provider("first", "openai-compatible", first, [m("m", "gpt-4o-mini")], priority=5, timeout="1s"),
            provider("second", "openai-compatible", second, [m("m", "gpt-4o-mini")]),
        ], "jobs": {"retry_backoff": "10ms"}})
        manager: ProviderManager = client.app[state.PROVIDERS]
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}

        first.fail_next(1, 503)
        second.reply_with("from second")
        resp = await client.post("/v1/chat/completions", json=body)
        assert resp.status == 200 and resp.headers["X-Aiport-Provider"] == "second"
        assert (await resp.json())["choices"][0]["message"]["content"] == "from second"
        assert manager.get("first").health.failures == 1  # cooling down, probed in the background

        # The probe finds it healthy again (its model list answers) and it rejoins.
        for _ in range(100):
            if manager.get("first").available:
                break
            await asyncio.sleep(0.1)
        assert manager.get("first").available, "the first provider was not probed back online"
        first.reply_with("from first")
        resp = await client.post("/v1/chat/completions", json=body)
        assert resp.headers["X-Aiport-Provider"] == "first"

        first.hang_next(1)  # a timeout also fails over
        second.reply_with("after a timeout")
        resp = await client.post("/v1/chat/completions", json=body)
        assert resp.headers["X-Aiport-Provider"] == "second"

        manager.set_online(manager.get("first"), True)
        await first.close()  # now its port refuses connections
        second.reply_with("after a refused connection")
        stream = await sdk(client).chat.completions.create(model="m", messages=body["messages"], stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "after a refused connection"
    finally:
        await second.close()


async def test_client_disconnect_cancels_the_upstream_request(make_client: Callable[..., Any],
                                                              fakes: dict[str, Any]) -> None:
    fake = fakes["anthropic"]
    fake.stream_delay = 0.1
    fake.reply_with(Reply(text=" ".join(f"word{i}" for i in range(60))))
    client = await make_client({"providers": [provider("an", "anthropic", fake, [m("m", "claude-3-5-haiku-latest")])]})
    resp = await client.post("/v1/chat/completions", json={
        "model": "m", "stream": True, "max_tokens": 200, "ref_id": "cut-1",
        "messages": [{"role": "user", "content": "talk"}]})
    await resp.content.readuntil(b"\n\n")
    resp.close()
    await fake.wait_cancelled(timeout=5)
    assert fake.cancelled == 1
    store = client.app[state.ENGINE].store
    for _ in range(100):
        rows = [r for r in await store.summary() if r["refId"] == "cut-1"]
        if rows:
            break
        await asyncio.sleep(0.02)
    assert rows[0]["state"] == "Cancelled" and rows[0]["provider"] == "an"


async def test_backend_errors_reach_the_client_in_both_shapes(make_client: Callable[..., Any],
                                                              fakes: dict[str, Any]) -> None:
    client = await make_client({"providers": [provider("oa", "openai", fakes["openai"], [m("m", "gpt-4o-mini")])],
                                "jobs": {"retry_backoff": "10ms", "retries": 0}})
    fakes["openai"].fail_next(1, 400, message="messages[0].content is too long")
    with pytest.raises(openai.BadRequestError, match="too long") as info:
        await sdk(client).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "UpstreamRejected"  # type: ignore[index]
    fakes["openai"].fail_next(1, 429, retry_after=7)
    resp = await client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user",
                                                                                        "content": "x"}]})
    body = await resp.json()
    assert resp.status == 429 and body["responseStatus"]["errorCode"] == "TooManyRequests"


async def test_json_the_fast_codec_refuses_still_passes_through(make_client: Callable[..., Any],
                                                                fakes: dict[str, Any]) -> None:
    """orjson refuses lone surrogates and reads integers past 64 bits as floats; the standard
    library does neither, and neither may aiport: such bodies reach the backend and the history intact."""
    client = await make_client({"providers": [provider("oa", "openai", fakes["openai"], [m("m", "gpt-4o-mini")])]})
    store = client.app[state.ENGINE].store
    big = 2**70 + 1  # not a power of two: a float cannot hold it
    bodies = {
        "big integer": ('{"model": "m", "messages": [{"role": "user", "content": "hi"}], '
                        f'"metadata": {{"trace": {big}}}}}', lambda b: b["metadata"] == {"trace": big}),
        "lone surrogate": ('{"model": "m", "messages": [{"role": "user", "content": "half an emoji: \\ud83d"}]}',
                           lambda b: b["messages"][0]["content"] == "half an emoji: \ud83d"),
    }
    for what, (raw, intact) in bodies.items():
        resp = await client.post("/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"})
        assert resp.status == 200, (what, await resp.text())
        assert intact(fakes["openai"].last.body), what
        await store.flush()  # written to SQLite, read back from it
        job = await store.get(job_id=int(resp.headers["X-Aiport-Job-Id"]))
        assert job.state.value == "Completed" and intact(job.request["body"]), what


@pytest.mark.parametrize("strategy", ["least-busy", "weighted", "latency"])
async def test_routing_strategies_spread_or_prefer(make_client: Callable[..., Any], fakes: dict[str, Any],
                                                   strategy: str) -> None:
    a, b = fakes["openai"], FakeOpenAI()
    await b.start()
    try:
        client = await make_client({"routing": {"strategy": strategy}, "providers": [
            provider("a", "openai-compatible", a, [m("m", "gpt-4o")], weight=9, concurrency=4),
            provider("b", "openai-compatible", b, [m("m", "gpt-4o")], weight=1, concurrency=4)]})
        served = []
        for _ in range(20):
            resp = await client.post("/v1/chat/completions", json={"model": "m", "messages": [
                {"role": "user", "content": "x"}]})
            served.append(resp.headers["X-Aiport-Provider"])
        assert set(served) <= {"a", "b"} and len(served) == 20
        if strategy == "weighted":
            assert served.count("a") > served.count("b")
    finally:
        await b.close()


async def test_chat_requests_leave_no_reference_cycles(make_client: Callable[..., Any],
                                                       fakes: dict[str, Any]) -> None:
    """A request's objects must be freed by reference counting: ``aiport serve`` raises the
    young-generation GC threshold on that premise (core/cli.py), and a cycle per request
    would also make every collection slower under load."""
    client = await make_client({"providers": [provider("oa", "openai", fakes["openai"], [m("m", "gpt-4o-mini")])]})
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    async def requests(count: int) -> None:
        for _ in range(count):
            resp = await client.post("/v1/chat/completions", json=body)
            assert resp.status == 200, await resp.text()
            stream = await client.post("/v1/chat/completions", json={**body, "stream": True})
            assert (await stream.read()).endswith(b"data: [DONE]\n\n")

    await requests(5)  # warm caches and pools first
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        await requests(50)
        gc.collect()
        cyclic = [type(o).__qualname__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert len(cyclic) < 50, collections.Counter(cyclic).most_common(10)


async def test_cookies_a_backend_sets_are_not_sent_back(make_client: Callable[..., Any]) -> None:
    """One outbound session serves every caller, so it keeps no cookies (a host name, not an IP
    address: aiohttp's default jar ignores cookies from IP addresses anyway)."""
    seen: list[str | None] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.json_response({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": "hi"}}]})
        response.set_cookie("session", "caller-one-secret")
        return response

    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(upstream)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client = await make_client({"providers": [{"name": "up", "type": "openai-compatible", "api_key": "k",
                                                   "base_url": f"http://localhost:{port}", "models": ["m"]}]})
        for _ in range(2):
            resp = await client.post("/v1/chat/completions", json={"model": "m", "messages": [
                {"role": "user", "content": "hi"}]})
            assert resp.status == 200, await resp.text()
        assert seen == [None, None]
    finally:
        await runner.cleanup()
