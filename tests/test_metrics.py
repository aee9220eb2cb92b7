"""``GET /metrics``: parsed with prometheus_client's own parser; counters move with traffic."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiport import __version__
from prometheus_client.parser import text_string_to_metric_families

SECRET = "admin-secret-for-metrics-tests"


def config(**metrics: Any) -> dict[str, Any]:
    return {
        "plugins": {"load": ["scripted_provider"]},
        "auth": {"admin_secret": SECRET},
        "providers": [{"name": "alpha", "type": "scripted", "concurrency": 2, "models": ["echo-1"]}],
        "jobs": {"retry_backoff": "20ms", "allow_private_callbacks": True},
        "metrics": metrics,
    }


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "echo-1", "messages": [{"role": "user", "content": text}], **extra}


async def scrape(client: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Every sample as {(name, frozenset(labels)): value}, plus the families' types."""
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[Any, float] = {}
    types = {}
    for family in text_string_to_metric_families(await resp.text()):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return {"samples": samples, "types": types}


def value(page: dict[str, Any], name: str, **labels: str) -> float:
    return float(page["samples"].get((name, frozenset(labels.items())), 0.0))


async def test_metrics_parse_and_move_with_traffic(make_client: Callable[..., Any]) -> None:
    client = await make_client(config())
    before = await scrape(client)
    assert before["types"]["aiport_requests"] == "counter"
    assert before["types"]["aiport_request_duration_seconds"] == "histogram"
    assert value(before, "aiport_provider_up", provider="alpha", type="scripted", kind="chat") == 1
    assert value(before, "aiport_queue_depth", queue="alpha") == 0

    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=chat("hello"))).status == 200
    resp = await client.post("/v1/chat/completions", json=chat("one two three", stream=True))
    await resp.read()
    assert (await client.post("/v1/chat/completions", json=chat("reject"))).status == 400
    assert (await client.post("/v1/chat/completions", json={"model": "nope", "messages": []})).status == 400

    page = await scrape(client)
    ok = {"api": "OpenAiChatCompletion", "provider": "alpha", "model": "echo-1", "status": "200"}
    assert value(page, "aiport_requests_total", **ok) == 4
    # Refused requests carry no model label (clients could send any string).
    assert value(page, "aiport_requests_total", api="OpenAiChatCompletion", provider="", model="",
                 status="400") == 2
    assert value(page, "aiport_request_duration_seconds_count", api="OpenAiChatCompletion") == 6
    assert value(page, "aiport_request_duration_seconds_bucket", api="OpenAiChatCompletion", le="+Inf") == 6
    # "alpha says hello" x3 and the stream "alpha says one two three": prompt 3 each.
    assert value(page, "aiport_tokens_total", provider="alpha", model="echo-1", type="prompt") == 12
    assert value(page, "aiport_tokens_total", provider="alpha", model="echo-1", type="completion") == 3 * 3 + 5
    assert value(page, "aiport_time_to_first_token_seconds_count", provider="alpha", model="echo-1") == 4
    assert value(page, "aiport_jobs_finished_total", api="OpenAiChatCompletion", provider="alpha",
                 state="Completed") == 4
    assert value(page, "aiport_jobs_finished_total", api="OpenAiChatCompletion", provider="alpha",
                 state="Failed") == 1
    assert value(page, "aiport_requests_total", api="/metrics", provider="", model="", status="200") == 1
    assert value(page, "aiport_info", version=__version__) == 1


async def test_gauges_follow_running_jobs_and_provider_health(make_client: Callable[..., Any]) -> None:
    client = await make_client(config())
    tasks = [asyncio.create_task(client.post("/v1/chat/completions", json=chat("sleep 0.4"))) for _ in range(3)]
    await asyncio.sleep(0.2)
    page = await scrape(client)
    assert value(page, "aiport_jobs_running", queue="alpha") == 2
    assert value(page, "aiport_queue_depth", queue="alpha") == 1
    await asyncio.gather(*tasks)
    resp = await client.post("/api/ChangeAiProviderStatus", json={"Provider": "alpha", "Online": False},
                             headers={"Authorization": f"Bearer {SECRET}"})
    assert resp.status == 200
    page = await scrape(client)
    assert value(page, "aiport_provider_up", provider="alpha", type="scripted", kind="chat") == 0
    assert value(page, "aiport_jobs_running", queue="alpha") == 0


async def test_callbacks_and_refusals_are_counted(make_client: Callable[..., Any], aiohttp_server: Any) -> None:
    arrived = asyncio.Event()
    calls = []

    async def hook(request: web.Request) -> web.Response:
        calls.append(await request.read())
        if len(calls) == 1:
            return web.Response(status=503)
        arrived.set()
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver)
    client = await make_client(config())
    resp = await client.post("/api/QueueOpenAiChatCompletion",
                             json={"Request": chat("hi"), "ReplyTo": str(server.make_url("/hook"))})
    assert resp.status == 200
    await asyncio.wait_for(arrived.wait(), 10)
    for _ in range(100):
        page = await scrape(client)
        if value(page, "aiport_callback_deliveries_total"):
            break
        await asyncio.sleep(0.02)
    assert value(page, "aiport_callback_deliveries_total") == 1
    assert value(page, "aiport_callback_failures_total", final="false") == 1

    headers = {"Authorization": "Bearer wrong-secret-guess"}
    for _ in range(5):
        assert (await client.get("/api/QueryApiKeys", headers=headers)).status == 401
    assert (await client.get("/api/QueryApiKeys", headers=headers)).status == 429
    page = await scrape(client)
    assert value(page, "aiport_auth_failures_total") == 5
    assert value(page, "aiport_rate_limited_total", reason="auth") == 1


@pytest.mark.parametrize("settings", [{"require_auth": True}, {"token": "scraper-token-123"}])
async def test_metrics_can_require_auth(make_client: Callable[..., Any], settings: dict[str, Any]) -> None:
    client = await make_client(config(**settings))
    resp = await client.get("/metrics")
    assert resp.status == 401 and (await resp.json())["responseStatus"]["errorCode"] == "Unauthorized"
    await scrape(client, {"Authorization": f"Bearer {SECRET}"})
    if "token" in settings:
        await scrape(client, {"Authorization": "Bearer scraper-token-123"})


async def test_metrics_can_be_disabled(make_client: Callable[..., Any]) -> None:
    client = await make_client(config(enabled=False))
    assert (await client.get("/metrics")).status == 404
    assert (await client.post("/v1/chat/completions", json=chat("hi"))).status == 200
