"""API keys over HTTP: creation, enforcement, scoping of jobs and files, per-key limits,
slowed authentication failures, and the ``aiport keys`` command line."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiport.core import create_app

SECRET = "admin-secret-for-key-tests"
ADMIN = {"Authorization": f"Bearer {SECRET}"}


class Clock:
    """The app's clock: real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def config(**auth: Any) -> dict[str, Any]:
    return {
        "plugins": {"load": ["scripted_provider", "scripted_media"]},
        "auth": {"admin_secret": SECRET, **auth},
        "providers": [{"name": "alpha", "type": "scripted", "concurrency": 4, "models": ["echo-1"]},
                      {"name": "gpu-1", "type": "scripted-media", "concurrency": 2}],
        "jobs": {"retry_backoff": "20ms"},
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def start(aiohttp_client: Any, make_config: Callable[..., Any], clock: Clock) -> Callable[..., Any]:
    async def make(**auth: Any) -> Any:
        return await aiohttp_client(create_app(make_config(config(**auth)), environ={}, clock=clock))
    return make


async def new_key(client: Any, name: str = "k", **fields: Any) -> dict[str, Any]:
    resp = await client.post("/api/CreateApiKey", json={"Name": name, **fields}, headers=ADMIN)
    body = await resp.json()
    assert resp.status == 200, body
    return dict(body)


def bearer(key: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key['key']}"}


def chat(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "echo-1", "messages": [{"role": "user", "content": text}], **extra}


async def test_secret_shown_once_and_only_its_hash_stored(start: Callable[..., Any], tmp_path: Path) -> None:
    client = await start()
    key = await new_key(client, "ci-bot", Notes="for CI", RequestsPerMinute=100)
    secret = key["key"]
    assert secret.startswith("ak-") and len(secret) == 35
    assert key["visibleKey"] == secret[:7] + "****" and key["active"] is True
    assert key["requestsPerMinute"] == 100 and key["notes"] == "for CI" and key["createdDate"].endswith("Z")
    # Accepted as Bearer and as X-Api-Key.
    for headers in (bearer(key), {"X-Api-Key": secret}):
        resp = await client.post("/v1/chat/completions", json=chat(), headers=headers)
        assert resp.status == 200, await resp.text()
    listed = await (await client.get("/api/QueryApiKeys", headers=ADMIN)).text()
    assert secret not in listed and hashlib.sha256(secret.encode()).hexdigest() not in listed
    assert json.loads(listed)["results"][0]["visibleKey"] == key["visibleKey"]
    with sqlite3.connect(tmp_path / "aiport.db") as db:
        (stored_hash, visible), = db.execute("SELECT key_hash, visible_key FROM api_keys").fetchall()
    assert stored_hash == hashlib.sha256(secret.encode()).hexdigest() and visible == key["visibleKey"]
    assert secret.encode() not in (tmp_path / "aiport.db").read_bytes()


async def test_require_api_keys_covers_every_ai_and_media_api(start: Callable[..., Any], clock: Clock) -> None:
    client = await start(require_api_keys=True)
    calls = [("POST", "/v1/chat/completions", chat()), ("POST", "/api/QueueOpenAiChatCompletion", {"Request": chat()}),
             ("POST", "/api/TextToImage", {"PositivePrompt": "a cat"}), ("GET", "/api/ActiveAiModels", None),
             ("GET", "/api/GetArtifactGenerationStatus?JobId=1", None), ("GET", "/v1/models", None)]
    for method, path, body in calls:
        resp = await client.request(method, path, json=body)
        assert resp.status == 401, (path, await resp.text())
        assert (await resp.json())["responseStatus"]["errorCode"] == "Unauthorized"
    key = await new_key(client)
    for method, path, body in calls:
        resp = await client.request(method, path, json=body, headers=bearer(key))
        assert resp.status in (200, 404), (path, await resp.text())  # 404: job 1 is not this key's

    expiring = await new_key(client, "short", ExpiryDate=(clock() + dt.timedelta(minutes=5)).isoformat())
    revoked = await new_key(client, "gone")
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(expiring))).status == 200
    assert (await client.post("/api/RevokeApiKey", json={"Id": revoked["id"]}, headers=ADMIN)).status == 200
    clock.advance(6 * 60)
    answers = set()
    for headers in (bearer(expiring), bearer(revoked), {"Authorization": "Bearer ak-" + "x" * 32}):
        resp = await client.post("/v1/chat/completions", json=chat(), headers=headers)
        assert resp.status == 401
        body = await resp.json()
        answers.add(json.dumps(body["responseStatus"], sort_keys=True))
    assert len(answers) == 1, "unknown, expired and revoked keys must get the same answer"
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 200
    listed = (await (await client.get("/api/QueryApiKeys", headers=ADMIN)).json())["results"]
    state = {k["name"]: k["active"] for k in listed}
    assert state == {"k": True, "short": False, "gone": False}
    assert next(k for k in listed if k["name"] == "gone")["cancelledDate"]


async def test_restricted_key_is_refused_elsewhere(start: Callable[..., Any]) -> None:
    client = await start()
    key = await new_key(client, RestrictTo=["OpenAiChatCompletion", "GetOpenAiChatStatus"])
    assert key["restrictTo"] == ["OpenAiChatCompletion", "GetOpenAiChatStatus"]
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 200
    for path, body in (("/api/QueueOpenAiChatCompletion", {"Request": chat()}),
                       ("/api/TextToImage", {"PositivePrompt": "a cat"}), ("/api/QueryApiKeys", {})):
        resp = await client.post(path, json=body, headers=bearer(key))
        assert resp.status == 403, (path, await resp.text())
        assert (await resp.json())["responseStatus"]["errorCode"] == "Forbidden"
    resp = await client.post("/api/CreateApiKey", json={"Name": "typo", "RestrictTo": ["TextToImag"]}, headers=ADMIN)
    assert resp.status == 400 and "TextToImag" in (await resp.json())["responseStatus"]["message"]


async def test_admin_scope_makes_a_key_admin(start: Callable[..., Any]) -> None:
    client = await start()
    admin_key = await new_key(client, "ops", Scopes=["Admin"])
    plain = await new_key(client, "user")
    resp = await client.post("/api/CreateApiKey", json={"Name": "made-by-key"}, headers=bearer(admin_key))
    assert resp.status == 200
    resp = await client.get("/api/QueryApiKeys", headers=bearer(plain))
    assert resp.status == 403
    await client.post("/api/RevokeApiKey", json={"Id": admin_key["id"]}, headers=ADMIN)
    resp = await client.get("/api/QueryApiKeys", headers=bearer(admin_key))
    assert resp.status == 401
    resp = await client.patch("/api/UpdateApiKey", json={"Id": plain["id"], "Scopes": ["Admin"], "Notes": None},
                              headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["scopes"] == ["Admin"]
    assert (await client.get("/api/QueryApiKeys", headers=bearer(plain))).status == 200
    assert (await client.delete(f"/api/DeleteApiKey?Id={plain['id']}", headers=ADMIN)).status == 200
    assert (await client.get("/api/QueryApiKeys", headers=bearer(plain))).status == 401
    assert (await client.post("/api/RevokeApiKey", json={"Id": 999}, headers=ADMIN)).status == 404


async def test_one_key_cannot_see_or_delete_anothers_jobs_and_files(start: Callable[..., Any]) -> None:
    client = await start(require_api_keys=True)
    a, b = await new_key(client, "a"), await new_key(client, "b")
    resp = await client.post("/api/QueueOpenAiChatCompletion", json={"Request": chat("sleep 0.05"), "RefId": "b-job"},
                             headers=bearer(b))
    job_id = (await resp.json())["id"]
    for path in ("/api/GetOpenAiChatStatus?RefId=b-job", f"/api/GetOpenAiChatStatus?JobId={job_id}"):
        assert (await client.get(path, headers=bearer(a))).status == 404
        assert (await client.get(path, headers=bearer(b))).status == 200
        assert (await client.get(path, headers=ADMIN)).status == 200
    assert (await client.post("/api/CancelJob", json={"RefId": "b-job"}, headers=bearer(a))).status == 404

    resp = await client.post("/api/TextToImage", json={"PositivePrompt": "a cat", "Width": 64, "Height": 64},
                             headers=bearer(b))
    body = await resp.json()
    assert resp.status == 200, body
    url = body["results"][0]["url"]
    path = url[url.index("/artifacts/") + len("/artifacts/"):]
    assert f"/{b['id']}/" in path, "artifacts live under the owning key's id"
    resp = await client.post("/api/DeleteFiles", json={"Paths": [path]}, headers=bearer(a))
    assert (await resp.json())["failed"] == [path]
    assert (await client.delete(f"/files/{path}", headers=bearer(a))).status == 403
    assert (await client.get(f"/artifacts/{path}")).status == 200
    assert (await client.delete(f"/files/{path}", headers=bearer(b))).status == 204
    assert (await client.get(f"/artifacts/{path}")).status == 404


async def test_requests_per_minute_trip_and_recover(start: Callable[..., Any], clock: Clock) -> None:
    client = await start()
    key = await new_key(client, RequestsPerMinute=2)
    other = await new_key(client, "other", RequestsPerMinute=2)
    for _ in range(2):
        assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 200
    resp = await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))
    body = await resp.json()
    assert resp.status == 429 and body["responseStatus"]["errorCode"] == "TooManyRequests"
    assert 1 <= int(resp.headers["Retry-After"]) <= 30
    assert body["error"]["code"] == "TooManyRequests"  # OpenAI-shaped too, on /v1
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(other))).status == 200
    clock.advance(int(resp.headers["Retry-After"]))
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 200
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 429
    await client.patch("/api/UpdateApiKey", json={"Id": key["id"], "Reset": ["RequestsPerMinute"]}, headers=ADMIN)
    for _ in range(5):
        assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 200


async def test_concurrent_requests_limit_holds_through_streams(start: Callable[..., Any]) -> None:
    client = await start()
    key = await new_key(client, ConcurrentRequests=1)
    first = asyncio.create_task(client.post("/v1/chat/completions", json=chat("sleep 0.4"), headers=bearer(key)))
    await asyncio.sleep(0.15)
    resp = await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))
    assert resp.status == 429 and resp.headers["Retry-After"] == "1"
    assert (await first).status == 200
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 200

    stream = await client.post("/v1/chat/completions", json=chat("slowstream 8", stream=True), headers=bearer(key))
    assert stream.status == 200
    await stream.content.readline()  # the stream is under way
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 429
    await stream.read()
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 200


async def test_tokens_per_minute(start: Callable[..., Any], clock: Clock) -> None:
    client = await start()
    key = await new_key(client, TokensPerMinute=10)
    # Each answer costs 3 prompt + 3 completion tokens ("alpha says hello").
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 200
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 200
    resp = await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))
    assert resp.status == 429 and "tokens per minute" in (await resp.json())["responseStatus"]["message"]
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    # Other APIs are not token-metered.
    assert (await client.get("/api/ActiveAiModels", headers=bearer(key))).status == 200
    clock.advance(61)
    resp = await client.post("/v1/chat/completions", json=chat("one two", stream=True), headers=bearer(key))
    assert resp.status == 200
    await resp.read()
    resp = await client.post("/v1/chat/completions", json=chat("one two", stream=True), headers=bearer(key))
    await resp.read()
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 429


async def test_repeated_auth_failures_from_one_address_are_slowed(start: Callable[..., Any], clock: Clock) -> None:
    client = await start(require_api_keys=True)
    key = await new_key(client)
    bad = {"Authorization": "Bearer not-the-secret-at-all"}
    for _ in range(5):
        resp = await client.get("/api/QueryApiKeys", headers=bad)
        assert resp.status == 401
    # Locked out: even the right secret is not checked now.
    resp = await client.get("/api/QueryApiKeys", headers=ADMIN)
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bearer(key))).status == 429
    clock.advance(1.5)
    assert (await client.get("/api/QueryApiKeys", headers=ADMIN)).status == 200
    # Each further failure doubles the lock-out.
    assert (await client.post("/v1/chat/completions", json=chat(), headers=bad)).status == 401
    resp = await client.get("/api/QueryApiKeys", headers=ADMIN)
    assert resp.status == 429 and int(resp.headers["Retry-After"]) == 2
    clock.advance(2.5)
    assert (await client.get("/api/QueryApiKeys", headers=ADMIN)).status == 200
    # Anonymous requests carry no credential to guess with: not slowed.
    assert (await client.get("/up")).status == 200


def aiport(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aiport", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ})


async def test_cli_keys_create_list_revoke(tmp_path: Path, aiohttp_client: Any, make_config: Callable[..., Any],
                                           clock: Clock) -> None:
    config_file = tmp_path / "aiport.yaml"
    config_file.write_text(f"storage:\n  database_path: {tmp_path / 'aiport.db'}\n")
    result = aiport("keys", "create", "--config", str(config_file), "--name", "cli-bot", "--rpm", "5",
                    "--restrict-to", "OpenAiChatCompletion", "--expires", "30")
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("ak-") and "shown only this once" in result.stderr
    listed = aiport("keys", "list", "--config", str(config_file), "--json")
    (entry,) = json.loads(listed.stdout)
    assert entry["name"] == "cli-bot" and entry["requestsPerMinute"] == 5 and entry["active"]
    assert entry["restrictTo"] == ["OpenAiChatCompletion"] and secret not in listed.stdout

    client = await aiohttp_client(create_app(make_config(config(require_api_keys=True)), environ={}, clock=clock))
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await client.post("/v1/chat/completions", json=chat(), headers=headers)).status == 200
    assert (await client.post("/api/TextToImage", json={"PositivePrompt": "x"}, headers=headers)).status == 403

    revoked = aiport("keys", "revoke", str(entry["id"]), "--config", str(config_file))
    assert revoked.returncode == 0, revoked.stderr
    clock.advance(11)  # past the verification cache: a change by another process takes effect
    assert (await client.post("/v1/chat/completions", json=chat(), headers=headers)).status == 401
    assert "revoked" in aiport("keys", "list", "--config", str(config_file)).stdout
    assert aiport("keys", "revoke", "999", "--config", str(config_file)).returncode == 1
