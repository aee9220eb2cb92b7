"""The chat gateway over HTTP, with the official ``openai`` SDK as the client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
import scripted_provider
from aiport.core import state

SECRET = "admin-secret-for-chat-tests"


def config(providers: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "plugins": {"load": ["scripted_provider"]},
        "auth": {"admin_secret": SECRET},
        "providers": providers or [
            {"name": "alpha", "type": "scripted", "concurrency": 4, "models": ["echo-1", "llama3.1:8b"]}],
        "jobs": {"retry_backoff": "20ms"},
        **extra,
    }


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> Any:
    return await make_client(config())


def sdk(client: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)


async def test_openai_sdk_non_streaming(client: Any) -> None:
    completion = await sdk(client).chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "hi there"}])
    assert completion.choices[0].message.content == "alpha says hi there"
    assert completion.usage is not None and completion.usage.prompt_tokens == 3


async def test_openai_sdk_streaming_with_usage(client: Any) -> None:
    stream = await sdk(client).chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha says one two three "
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


async def test_stream_without_include_usage_has_no_usage_and_ends_with_done(client: Any) -> None:
    resp = await client.post("/v1/chat/completions", json={
        "model": "echo-1", "stream": True, "messages": [{"role": "user", "content": "a b"}]})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["X-Aiport-Provider"] == "alpha"
    raw = (await resp.read()).decode()
    events = [line[6:] for line in raw.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events[:-1])


async def test_bytes_flow_as_they_arrive(client: Any) -> None:
    resp = await client.post("/v1/chat/completions", json={
        "model": "echo-1", "stream": True, "messages": [{"role": "user", "content": "slowstream 10"}]})
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = await resp.content.readuntil(b"\n\n")
    assert b"w0" in first and loop.time() - started < 0.3, "the first chunk waited for the whole answer"
    rest = await resp.read()
    assert rest.endswith(b"data: [DONE]\n\n")


async def test_client_disconnect_cancels_upstream_and_is_recorded(client: Any) -> None:
    scripted_provider.STATS.setdefault("alpha", {})["stream_closed_early"] = 0
    resp = await client.post("/v1/chat/completions", json={
        "model": "echo-1", "stream": True, "ref_id": "gone-1",
        "messages": [{"role": "user", "content": "slowstream 100"}]})
    await resp.content.readuntil(b"\n\n")
    await resp.content.readuntil(b"\n\n")
    resp.close()  # the client goes away mid-stream
    store = client.app[state.ENGINE].store
    for _ in range(100):
        job = await store.get(ref_id="gone-1")
        if job is not None:
            break
        await asyncio.sleep(0.02)
    assert job is not None and job.state.value == "Cancelled"
    assert scripted_provider.STATS["alpha"]["stream_closed_early"] == 1
    (row,) = [r for r in await store.summary() if r["refId"] == "gone-1"]
    assert row["provider"] == "alpha" and row["completionTokens"] >= 2 and row["ttftMs"] is not None


async def test_upstream_dying_mid_stream_ends_with_an_error_event(client: Any) -> None:
    resp = await client.post("/v1/chat/completions", json={
        "model": "echo-1", "stream": True, "messages": [{"role": "user", "content": "midfail"}]})
    raw = (await resp.read()).decode()
    events = [e[6:] for e in raw.split("\n\n") if e.startswith("data: ")]
    error = json.loads(events[-2])
    assert events[-1] == "[DONE]" and error["error"]["message"] == "the backend connection dropped"
    stream = await sdk(client).chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "midfail"}], stream=True)
    with pytest.raises(openai.APIError, match="the backend connection dropped"):
        async for _ in stream:
            pass


async def test_stream_fails_over_before_the_first_byte(make_client: Callable[..., Any]) -> None:
    client = await make_client(config([
        {"name": "down", "type": "scripted", "priority": 9, "down": True, "models": ["echo-1"]},
        {"name": "up", "type": "scripted", "models": ["echo-1"]}]))
    resp = await client.post("/v1/chat/completions", json={
        "model": "echo-1", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert resp.status == 200 and resp.headers["X-Aiport-Provider"] == "up"
    raw = (await resp.read()).decode()
    chunks = [json.loads(e[6:]) for e in raw.split("\n\n") if e.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "up says x "


async def test_streamed_request_errors_before_streaming_are_json(client: Any) -> None:
    resp = await client.post("/v1/chat/completions", json={
        "model": "echo-1", "stream": True, "messages": [{"role": "user", "content": "reject"}]})
    body = await resp.json()
    assert resp.status == 400 and body["error"]["message"].startswith("the backend rejected")


async def test_bad_requests_get_both_error_shapes(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await sdk(client).chat.completions.create(model="echo-1", messages=[])
    assert info.value.body["code"] == "NotEmpty"  # type: ignore[index]
    resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    body = await resp.json()
    assert resp.status == 400 and body["responseStatus"]["errors"][0]["fieldName"] == "model"
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        await sdk(client).chat.completions.create(model="no-such-model",
                                                  messages=[{"role": "user", "content": "x"}])


async def test_family_names_resolve_to_the_latest_tag(client: Any) -> None:
    for name in ("llama3.1", "llama3.1:latest", "llama3.1:8b"):
        resp = await client.post("/v1/chat/completions", json={
            "model": name, "messages": [{"role": "user", "content": "x"}]})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["model"] == "llama3.1:8b"
    resp = await client.post("/v1/chat/completions", json={
        "model": "llama3.1:7b", "messages": [{"role": "user", "content": "x"}]})
    body = await resp.json()
    assert resp.status == 404 and "llama3.1:70b" in body["responseStatus"]["message"]


async def test_model_lists(client: Any) -> None:
    models = await sdk(client).models.list()
    assert sorted(m.id for m in models.data) == ["echo-1", "llama3.1:8b"]
    body = await (await client.get("/api/ActiveAiModels")).json()
    assert body == {"results": ["echo-1", "llama3.1:8b"]}
    body = await (await client.get("/api/ActiveAiModels?Vision=true")).json()
    assert body == {"results": []}


async def test_admin_can_force_a_provider_offline_and_probe_it(client: Any) -> None:
    admin = {"Authorization": f"Bearer {SECRET}"}
    resp = await client.post("/api/ChangeAiProviderStatus", json={"Provider": "alpha", "Online": False})
    assert resp.status == 401
    resp = await client.post("/api/ChangeAiProviderStatus", json={"Provider": "alpha", "Online": False},
                             headers=admin)
    assert (await resp.json()) == {"result": "alpha is offline"}
    resp = await client.post("/v1/chat/completions", json={"model": "echo-1",
                                                           "messages": [{"role": "user", "content": "x"}]})
    assert resp.status == 503
    resp = await client.get("/api/CheckAiProviderStatus?Provider=alpha", headers=admin)
    assert (await resp.json()) == {"result": True}
    await client.post("/api/ChangeAiProviderStatus", json={"Provider": "alpha", "Online": True}, headers=admin)
    resp = await client.post("/v1/chat/completions", json={"model": "echo-1",
                                                           "messages": [{"role": "user", "content": "x"}]})
    assert resp.status == 200


async def test_ollama_generate_sync_stream_and_queued(client: Any) -> None:
    resp = await client.post("/api/generate", json={"model": "echo-1", "prompt": "why", "system": "be brief"})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["response"] == "alpha says why" and body["done"] is True and body["eval_count"] == 3
    resp = await client.post("/api/generate", json={"model": "echo-1", "prompt": "a b", "stream": True})
    lines = [json.loads(line) for line in (await resp.read()).decode().splitlines()]
    assert "".join(line["response"] for line in lines) == "alpha says a b "
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 4
    queued = await (await client.post("/api/QueueOllamaGeneration", json={
        "Request": {"model": "echo-1", "prompt": "later"}, "RefId": "ol-1"})).json()
    assert queued["statusUrl"].endswith("/api/GetOllamaGenerationStatus?RefId=ol-1")
    for _ in range(200):
        status = await (await client.get("/api/GetOllamaGenerationStatus?RefId=ol-1")).json()
        if status["jobState"] == "Completed":
            break
        await asyncio.sleep(0.02)
    assert status["result"]["response"] == "alpha says later"
