"""Admin APIs over HTTP: providers at run time (surviving a restart), read-only YAML providers,
no provider secret in any response, analytics, workers and the job browser."""

from __future__ import annotations

import asyncio
import importlib.util
import io
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from aiport.core import create_app, state
from aiport.core.logging import configure_logging

SECRET = "admin-secret-for-admin-tests"
ADMIN = {"Authorization": f"Bearer {SECRET}"}
YAML_KEY = "sk-yaml-provider-secret-0001"
RUNTIME_KEY = "sk-runtime-provider-secret-0002"
AGENT_KEY = "agent-password-secret-0003"
MEDIA_KEY = "r8-media-provider-secret-0004"
SECRETS = (YAML_KEY, RUNTIME_KEY, AGENT_KEY, MEDIA_KEY)


def config(**jobs: Any) -> dict[str, Any]:
    return {
        "plugins": {"load": ["scripted_provider", "scripted_media"]},
        "auth": {"admin_secret": SECRET},
        "providers": [{"name": "alpha", "type": "scripted", "concurrency": 2, "models": ["echo-1"],
                       "api_key": YAML_KEY}],
        "jobs": {"retry_backoff": "20ms", **jobs},
    }


class Admin:
    """Calls admin APIs and keeps every response body, to search them all for secrets."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.bodies: list[str] = []

    async def __call__(self, method: str, api: str, body: dict[str, Any] | None = None,
                      status: int = 200, headers: dict[str, str] | None = None) -> Any:
        headers = ADMIN if headers is None else headers
        resp = await self.client.request(method, f"/api/{api}", json=body, headers=headers)
        text = await resp.text()
        self.bodies.append(text)
        assert resp.status == status, (api, resp.status, text)
        return await resp.json()

    def assert_no_secret(self) -> None:
        for text in self.bodies:
            for secret in SECRETS:
                assert secret not in text, f"a provider secret leaked in: {text[:300]}"


@pytest.fixture
def start(aiohttp_client: Any, make_config: Callable[..., Any]) -> Callable[..., Any]:
    async def make(**jobs: Any) -> Any:
        return await aiohttp_client(create_app(make_config(config(**jobs)), environ={}))
    return make


def chat(text: str, model: str = "echo-1") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


async def test_ai_provider_added_at_run_time_serves_and_survives_a_restart(start: Callable[..., Any]) -> None:
    client = await start()
    admin = Admin(client)
    created = await admin("POST", "CreateAiProvider", {
        "Name": "beta", "AiTypeId": "scripted", "ApiKey": RUNTIME_KEY, "Concurrency": 3, "Priority": 1,
        "Models": [{"model": "echo-2"}], "SelectedModels": ["echo-3"]})
    assert created["id"] and created["result"]["apiKey"] == "sk-****02"
    assert created["result"]["active"] and created["result"]["source"] == "runtime"
    resp = await client.post("/v1/chat/completions", json=chat("hi", "echo-2"))
    assert resp.status == 200 and (await resp.json())["choices"][0]["message"]["content"] == "beta says hi"
    assert (await client.post("/v1/chat/completions", json=chat("hi", "echo-3"))).status == 200

    listed = {p["name"]: p for p in (await admin("GET", "QueryAiProviders"))["results"]}
    assert listed["alpha"]["readOnly"] and listed["alpha"]["source"] == "config" and listed["alpha"]["apiKey"]
    assert not listed["beta"]["readOnly"] and listed["beta"]["concurrency"] == 3
    # YAML providers are read-only here.
    for method, api in (("PATCH", "UpdateAiProvider"), ("DELETE", "DeleteAiProvider")):
        body = await admin(method, api, {"Name": "alpha", "Concurrency": 5}, status=409)
        assert "config file" in body["responseStatus"]["message"]
    await admin("POST", "CreateAiProvider", {"Name": "alpha", "Type": "scripted", "Models": ["x"]}, status=409)
    await admin("POST", "CreateAiProvider", {"Name": "beta", "Type": "scripted", "Models": ["x"]}, status=409)
    bad = await admin("POST", "CreateAiProvider", {"Name": "gamma", "Type": "scripted", "Models": ["x"],
                                                   "Options": {"dwon": True}}, status=400)
    assert "dwon" in bad["responseStatus"]["message"]
    await admin("POST", "CreateAiProvider", {"Name": "gamma", "AiTypeId": "NoSuchType", "Models": ["x"]}, status=400)
    await admin("POST", "CreateAiProvider", {"Name": "gamma", "Type": "scripted"}, status=400)  # no models

    # Disable, re-enable, change the concurrency.
    await admin("PATCH", "UpdateAiProvider", {"Id": created["id"], "Enabled": False})
    assert (await client.post("/v1/chat/completions", json=chat("hi", "echo-2"))).status == 404
    changed = await admin("PATCH", "UpdateAiProvider", {"Name": "beta", "Enabled": True, "Concurrency": 5})
    assert changed["result"]["active"] and changed["result"]["concurrency"] == 5
    assert (await client.post("/v1/chat/completions", json=chat("again", "echo-2"))).status == 200
    await client.close()

    client = await start()  # same database: a restart
    admin.client = client
    resp = await client.post("/v1/chat/completions", json=chat("back", "echo-2"))
    assert resp.status == 200 and (await resp.json())["choices"][0]["message"]["content"] == "beta says back"
    listed = {p["name"]: p for p in (await admin("GET", "QueryAiProviders"))["results"]}
    assert listed["beta"]["concurrency"] == 5 and listed["beta"]["active"]
    assert listed["beta"]["id"] == int(created["id"])
    health = (await admin("GET", "GetProviderHealth"))["result"]
    assert {h["name"] for h in health} >= {"alpha", "beta"}
    await admin("DELETE", "DeleteAiProvider", {"Id": created["id"]})
    assert (await client.post("/v1/chat/completions", json=chat("gone", "echo-2"))).status == 404
    await client.close()
    client = await start()
    admin.client = client
    assert "beta" not in {p["name"] for p in (await admin("GET", "QueryAiProviders"))["results"]}
    admin.assert_no_secret()


@pytest.mark.skipif(importlib.util.find_spec("aiport.plugins.media_comfyui") is None, reason="no ComfyUI plugin")
async def test_comfyui_agent_registers_itself(start: Callable[..., Any]) -> None:
    client = await start()
    admin = Admin(client)
    # The body AI Server's agent installer sends (camelCase, provider-side model names).
    created = await admin("POST", "CreateMediaProvider", {
        "name": "ComfyUI Agent - gpu-box", "apiKey": AGENT_KEY, "apiBaseUrl": "http://127.0.0.1:9",
        "models": ["sdxl_lightning_4step.safetensors", "flux1-schnell-fp8.safetensors"],
        "mediaTypeId": "ComfyUI", "enabled": True})
    info = created["result"]
    assert info["type"] == "comfyui" and info["mediaTypeId"] == "ComfyUI" and info["active"]
    assert {m["model"] for m in info["models"]} == {"sdxl-lightning", "flux-schnell"}
    assert info["apiKey"] == "age****03"
    models = await (await client.get("/api/ActiveMediaModels?Task=TextToImage")).json()
    assert {"sdxl-lightning", "flux-schnell"} <= {m["key"] for m in models["results"]}
    listed = (await admin("GET", "QueryMediaProviders", {"Name": "ComfyUI Agent - gpu-box"}))["results"]
    assert len(listed) == 1 and listed[0]["id"] == int(created["id"])
    await admin("DELETE", "DeleteMediaProvider", {"Name": "ComfyUI Agent - gpu-box"})
    admin.assert_no_secret()


async def test_media_provider_added_at_run_time_generates(start: Callable[..., Any]) -> None:
    client = await start()
    admin = Admin(client)
    assert (await client.post("/api/TextToImage", json={"PositivePrompt": "a cat"})).status == 503
    await admin("POST", "CreateMediaProvider", {"Name": "gpu-2", "Type": "scripted-media", "ApiKey": MEDIA_KEY,
                                                "Models": ["pic-1.safetensors"]})
    resp = await client.post("/api/TextToImage", json={"PositivePrompt": "a cat", "Width": 64, "Height": 64})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["results"][0]["provider"] == "gpu-2"
    stats = await admin("GET", "GetWorkerStats")
    assert next(w for w in stats["results"] if w["name"] == "gpu-2")["completed"] == 1
    admin.assert_no_secret()


async def test_no_admin_response_carries_a_provider_secret(start: Callable[..., Any]) -> None:
    client = await start()
    admin = Admin(client)
    await admin("POST", "CreateAiProvider", {"Name": "leaky", "Type": "scripted", "ApiKey": RUNTIME_KEY,
                                             "Models": ["echo-9"], "Options": {"down": True}})
    resp = await client.post("/v1/chat/completions", json=chat("x", "echo-9"))
    assert resp.status >= 500
    # A last error that quotes the key (as some backends do) is scrubbed too.
    client.app[state.PROVIDERS].get("leaky").health.last_error = f"401 invalid key {RUNTIME_KEY}"
    for method, api, body in (("GET", "QueryAiProviders", None), ("GET", "QueryMediaProviders", None),
                              ("GET", "GetProviderHealth", None), ("GET", "GetWorkerStats", None),
                              ("GET", "GetSummaryStats", None), ("GET", "AdminData", None),
                              ("GET", "QueryJobs", {"IncludeDetails": True}), ("GET", "QueryApiKeys", None),
                              ("PATCH", "UpdateAiProvider", {"Name": "leaky", "Priority": 2})):
        await admin(method, api, body)
    assert any("sk-****02" in text for text in admin.bodies)
    for path in ("/openapi.json", "/metrics", "/health", "/v1/models", "/api/ActiveAiModels",
                 "/api/ActiveMediaModels"):
        admin.bodies.append(await (await client.get(path, headers=ADMIN)).text())
    admin.assert_no_secret()
    paths = (await (await client.get("/openapi.json")).json())["paths"]
    for api in ("CreateApiKey", "QueryApiKeys", "UpdateApiKey", "RevokeApiKey", "DeleteApiKey", "CreateAiProvider",
                "CreateMediaProvider", "GetSummaryStats", "GetWorkerStats", "AdminData", "QueryJobs",
                "AdminCancelJob", "RequeueJob"):
        assert f"/api/{api}" in paths, api


async def test_analytics_by_provider_model_month_and_key(start: Callable[..., Any]) -> None:
    client = await start()
    admin = Admin(client)
    key = await admin("POST", "CreateApiKey", {"Name": "analyst"})
    for text in ("sleep 0.05", "sleep 0.06", "sleep 0.07"):
        resp = await client.post("/v1/chat/completions", json=chat(text),
                                 headers={"Authorization": f"Bearer {key['key']}"})
        assert resp.status == 200
    resp = await client.post("/v1/chat/completions", json=chat("reject"))
    assert resp.status == 400
    stats = await admin("GET", "GetSummaryStats")
    alpha = next(s for s in stats["providerStats"] if s["name"] == "alpha")
    assert alpha["total"] == 4 and alpha["errors"] == 1
    assert alpha["totalPromptTokens"] == 9 and alpha["totalCompletionTokens"] == 3 * 4
    assert alpha["totalMinutes"] >= 0 and alpha["tokensPerSecond"] > 0
    assert next(s for s in stats["modelStats"] if s["name"] == "echo-1")["total"] == 3  # failed: model unknown
    assert len(stats["monthStats"]) == 1 and stats["monthStats"][0]["total"] == 4
    by_key = {s["name"]: s for s in stats["keyStats"]}
    assert by_key["analyst"]["total"] == 3 and by_key["analyst"]["keyId"] == key["id"]
    assert next(s for s in stats["apiStats"] if s["name"] == "OpenAiChatCompletion")["total"] == 4
    empty = await admin("GET", "GetSummaryStats", {"From": "2001-01-01T00:00:00Z", "To": "2001-02-01T00:00:00Z"})
    assert empty["providerStats"] == []
    data = await admin("GET", "AdminData")
    pages = {p["label"]: p["total"] for p in data["pageStats"]}
    assert pages["AiProviders"] == 1 and pages["ApiKeys"] == 1
    # Admin APIs are for the admin only.
    await admin("GET", "GetSummaryStats", headers={"Authorization": f"Bearer {key['key']}"}, status=403)
    await admin("GET", "GetSummaryStats", headers={}, status=401)


async def test_job_browser_cancel_and_requeue(start: Callable[..., Any]) -> None:
    client = await start(retries=0)
    admin = Admin(client)
    resp = await client.post("/api/QueueOpenAiChatCompletion", json={"Request": chat("hang"), "RefId": "stuck",
                                                                      "Tag": "batch-1"})
    job_id = (await resp.json())["id"]
    for _ in range(200):
        found = (await admin("GET", "QueryJobs", {"States": ["Started"], "Provider": "alpha"}))["results"]
        if found:
            break
        await asyncio.sleep(0.02)
    assert [j["id"] for j in found] == [job_id] and found[0]["tag"] == "batch-1"
    workers = {w["name"]: w for w in (await admin("GET", "GetWorkerStats"))["results"]}
    assert workers["alpha"]["runningJob"] == job_id and workers["alpha"]["runningTime"].startswith("PT")
    assert workers["alpha"]["running"] == 1
    assert (await admin("GET", "QueryJobs", {"Tag": "batch-1", "Take": 1}))["results"][0]["refId"] == "stuck"
    await admin("GET", "QueryJobs", {"States": ["Sleeping"]}, status=400)
    cancelled = await admin("POST", "AdminCancelJob", {"RefId": "stuck"})
    assert cancelled["state"] == "Cancelled"

    # A job that failed (its one attempt) runs again when requeued, from its first attempt.
    resp = await client.post("/api/QueueOpenAiChatCompletion", json={"Request": chat("fail 1 requeue-key"),
                                                                      "RefId": "flaky"})
    for _ in range(200):
        job = (await admin("GET", "QueryJobs", {"RefId": "flaky", "IncludeDetails": True}))["results"][0]
        if job["state"] == "Failed":
            break
        await asyncio.sleep(0.02)
    assert job["state"] == "Failed" and job["error"]["message"] and job["request"]["model"] == "echo-1"
    requeued = await admin("POST", "RequeueJob", {"RefId": "flaky"})
    assert requeued["state"] == "Queued" and requeued["attempts"] == 0
    for _ in range(200):
        status = await (await client.get("/api/GetOpenAiChatStatus?RefId=flaky")).json()
        if status["jobState"] == "Completed":
            break
        await asyncio.sleep(0.02)
    assert status["result"]["choices"][0]["message"]["content"] == "alpha says fail 1 requeue-key"
    await admin("POST", "RequeueJob", {"RefId": "flaky"}, status=409)  # it completed
    await admin("POST", "RequeueJob", {"JobId": 99999}, status=404)
    requeued = await admin("POST", "RequeueJob", {"JobId": job_id})  # the cancelled one, too
    assert requeued["state"] == "Queued"
    await admin("POST", "AdminCancelJob", {"JobId": job_id})


async def test_run_time_provider_keys_are_redacted_from_logs(aiohttp_client: Any,
                                                             make_config: Callable[..., Any]) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", secrets=[SECRET], stream=stream, cache=False)
    try:
        client = await aiohttp_client(create_app(make_config(config()), environ={}))
        admin = Admin(client)
        await admin("POST", "CreateAiProvider", {"Name": "logged", "Type": "scripted", "ApiKey": RUNTIME_KEY,
                                                 "Models": ["echo-7"]})
        structlog.get_logger("test").info("upstream said", detail=f"bad key {RUNTIME_KEY}")
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "bad key ****" in text and RUNTIME_KEY not in text
