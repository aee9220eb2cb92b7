"""The job engine over HTTP: sync, queued and ReplyTo call styles, status, cancel, timeout, retry."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import scripted_provider
from aiohttp import web
from aiport.core import create_app, state
from aiport.core.jobs.callbacks import verify

SECRET = "admin-secret-for-tests"


def config(**jobs: Any) -> dict[str, Any]:
    providers = jobs.pop("providers", None) or [
        {"name": "alpha", "type": "scripted", "concurrency": 2, "models": ["echo-1"]}]
    return {
        "plugins": {"load": ["scripted_provider"]},
        "auth": {"admin_secret": SECRET},
        "providers": providers,
        "jobs": {"retry_backoff": "20ms", "allow_private_callbacks": True, **jobs},
    }


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "echo-1", "messages": [{"role": "user", "content": text}], **extra}


class Receiver:
    """A ReplyTo endpoint that records deliveries and can refuse the first N."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.deliveries: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post("/hook", self.hook)
        self.app.router.add_put("/hook", self.hook)

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.deliveries.append({"body": body, "headers": dict(request.headers), "method": request.method})
        if len(self.deliveries) <= self.fail_first:
            return web.Response(status=503)
        self.arrived.set()
        return web.Response(status=204)


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> Any:
    return await make_client(config())


async def poll(client: Any, path: str, until: Callable[[dict[str, Any]], bool], timeout: float = 10) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.get(path)
        body = await resp.json()
        if until(body):
            return resp, body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.02)


async def test_sync_chat_returns_the_completion(client: Any) -> None:
    resp = await client.post("/v1/chat/completions", json=chat("hello"))
    body = await resp.json()
    assert resp.status == 200, body
    assert body["choices"][0]["message"]["content"] == "alpha says hello"
    assert body["model"] == "echo-1" and body["usage"]["total_tokens"] == 6
    assert resp.headers["X-Aiport-Provider"] == "alpha"
    resp = await client.post("/api/OpenAiChatCompletion", json=chat("again", RefId="my-ref-1"))
    assert resp.status == 200
    status = await (await client.get("/api/GetOpenAiChatStatus?RefId=my-ref-1")).json()
    assert status["jobState"] == "Completed" and status["result"]["choices"][0]["message"]["content"].endswith("again")


async def test_queued_chat_and_status_by_job_id_and_ref_id(client: Any) -> None:
    resp = await client.post("/api/QueueOpenAiChatCompletion",
                             json={"Request": chat("sleep 0.1"), "RefId": "q-1", "Tag": "batch-7"})
    queued = await resp.json()
    assert resp.status == 200, queued
    assert set(queued) == {"id", "refId", "jobState", "status", "statusUrl"}
    assert queued["refId"] == "q-1" and queued["jobState"] == "Queued"
    assert queued["statusUrl"] == f"http://{client.host}:{client.port}/api/GetOpenAiChatStatus?RefId=q-1"
    _, done = await poll(client, "/api/GetOpenAiChatStatus?RefId=q-1", lambda b: b["jobState"] == "Completed")
    assert done["jobId"] == queued["id"]
    assert done["result"]["choices"][0]["message"]["content"] == "alpha says sleep 0.1"
    by_id = await (await client.get(f"/api/GetOpenAiChatStatus?JobId={queued['id']}")).json()
    assert by_id["refId"] == "q-1"
    generic = await (await client.get(f"/api/GetTextGenerationStatus?JobId={queued['id']}")).json()
    assert generic["jobState"] == "Completed" and generic["duration"].startswith("PT")


async def test_generated_ref_ids_are_time_ordered_hex(client: Any) -> None:
    refs = []
    for _ in range(3):
        queued = await (await client.post("/api/QueueOpenAiChatCompletion", json={"Request": chat("x")})).json()
        refs.append(queued["refId"])
        await asyncio.sleep(0.002)
    assert all(len(ref) == 32 and int(ref, 16) >= 0 for ref in refs)
    assert refs == sorted(refs) and len(set(refs)) == 3


async def test_unknown_job_is_404(client: Any) -> None:
    for path in ("/api/GetOpenAiChatStatus?RefId=nope", "/api/GetArtifactGenerationStatus?JobId=999999"):
        resp = await client.get(path)
        assert resp.status == 404
        assert (await resp.json())["responseStatus"]["errorCode"] == "NotFound"
    resp = await client.get("/api/GetArtifactGenerationStatus")
    assert resp.status == 400


async def test_repeated_ref_id_is_idempotent(client: Any) -> None:
    first = await (await client.post("/api/QueueOpenAiChatCompletion",
                                     json={"Request": chat("x"), "RefId": "same"})).json()
    second = await (await client.post("/api/QueueOpenAiChatCompletion",
                                      json={"Request": chat("x"), "RefId": "same"})).json()
    assert first["id"] == second["id"]
    resp = await client.post("/v1/chat/completions", json=chat("x", RefId="same"))
    assert resp.status == 200 and resp.headers["X-Aiport-Job-Id"] == str(first["id"])
    counts = await client.app[state.ENGINE].store.summary()
    assert len(counts) == 1, "one job, however often it was submitted"


async def test_reply_to_gets_the_signed_completion(make_client: Callable[..., Any], aiohttp_server: Any) -> None:
    receiver = Receiver()
    server = await aiohttp_server(receiver.app)
    client = await make_client(config())
    resp = await client.post("/api/QueueOpenAiChatCompletion", json={
        "Request": chat("call me back"), "ReplyTo": f"PUT {server.make_url('/hook')}", "RefId": "cb-1"})
    assert resp.status == 200
    await asyncio.wait_for(receiver.arrived.wait(), 10)
    (delivery,) = receiver.deliveries
    assert delivery["method"] == "PUT"
    body = json.loads(delivery["body"])
    assert body["choices"][0]["message"]["content"] == "alpha says call me back"
    headers = delivery["headers"]
    assert verify(delivery["body"], headers["X-Aiport-Signature"], SECRET)
    assert headers["X-Aiport-Ref-Id"] == "cb-1" and headers["X-Aiport-Attempt"] == "1"


async def test_a_receiver_failing_three_times_still_gets_it(make_client: Callable[..., Any],
                                                             aiohttp_server: Any) -> None:
    receiver = Receiver(fail_first=3)
    server = await aiohttp_server(receiver.app)
    client = await make_client(config(callback_signing_key="cb-key"))
    await client.post("/api/QueueOpenAiChatCompletion",
                      json={"Request": chat("retry me"), "ReplyTo": str(server.make_url("/hook"))})
    await asyncio.wait_for(receiver.arrived.wait(), 10)
    assert len(receiver.deliveries) == 4
    assert [d["headers"]["X-Aiport-Attempt"] for d in receiver.deliveries] == ["1", "2", "3", "4"]
    assert len({d["headers"]["X-Aiport-Delivery"] for d in receiver.deliveries}) == 1
    last = receiver.deliveries[-1]
    assert verify(last["body"], last["headers"]["X-Aiport-Signature"], "cb-key")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://10.1.2.3/x", "http://[::1]/x",
                                 "http://169.254.169.254/latest/meta-data", "http://localhost/x",
                                 "ftp://example.com/x", "not a url"])
async def test_private_or_bad_reply_to_is_refused_at_submit(make_client: Callable[..., Any], url: str) -> None:
    client = await make_client(config(allow_private_callbacks=False))
    resp = await client.post("/api/QueueOpenAiChatCompletion", json={"Request": chat("x"), "ReplyTo": url})
    body = await resp.json()
    assert resp.status == 400, body
    assert body["responseStatus"]["errors"][0]["fieldName"] == "ReplyTo"
    jobs = await client.app[state.ENGINE].store.queue_counts()
    assert jobs == {}, "a refused request must not queue anything"


async def test_cancel_a_running_job(client: Any) -> None:
    queued = await (await client.post("/api/QueueOpenAiChatCompletion", json={"Request": chat("hang")})).json()
    await poll(client, f"/api/GetOpenAiChatStatus?JobId={queued['id']}", lambda b: b["jobState"] == "Started")
    resp = await client.post("/api/CancelJob", json={"JobId": queued["id"]})
    assert resp.status == 200 and (await resp.json())["jobState"] == "Cancelled"
    resp = await client.get(f"/api/GetOpenAiChatStatus?JobId={queued['id']}")
    body = await resp.json()
    assert resp.status == 409 and body["jobState"] == "Cancelled"
    assert body["responseStatus"]["errorCode"] == "Cancelled"
    await asyncio.sleep(0.05)
    assert scripted_provider.STATS["alpha"]["cancelled"] >= 1


async def test_sync_timeout_names_the_job_which_carries_on(make_client: Callable[..., Any]) -> None:
    client = await make_client(config(sync_timeout_chat="200ms"))
    resp = await client.post("/v1/chat/completions", json=chat("sleep 0.5", ref_id="slow-1"))
    body = await resp.json()
    assert resp.status == 504
    assert body["refId"] == "slow-1" and body["jobId"] >= 1
    assert body["responseStatus"]["errorCode"] == "Timeout" and "slow-1" in body["responseStatus"]["message"]
    _, done = await poll(client, "/api/GetOpenAiChatStatus?RefId=slow-1", lambda b: b["jobState"] == "Completed")
    assert done["result"]["choices"][0]["message"]["content"] == "alpha says sleep 0.5"


async def test_job_timeout_cancels_without_retry(make_client: Callable[..., Any]) -> None:
    client = await make_client(config(timeout="300ms"))
    resp = await client.post("/v1/chat/completions", json=chat("hang", ref_id="hung"))
    body = await resp.json()
    assert resp.status == 504 and body["jobState"] == "Cancelled"
    assert body["responseStatus"]["errorCode"] == "Timeout"


async def test_retryable_failures_are_retried(client: Any) -> None:
    resp = await client.post("/v1/chat/completions", json=chat("fail 2 retry-a", ref_id="retry-a"))
    assert resp.status == 200, await resp.json()
    job = await client.app[state.ENGINE].store.get(ref_id="retry-a")
    assert job.attempts == 3


async def test_spent_retries_fail_with_a_status_that_fits(client: Any) -> None:
    resp = await client.post("/v1/chat/completions", json=chat("fail 9 retry-b", ref_id="retry-b"))
    body = await resp.json()
    assert resp.status == 502, body
    assert body["jobState"] == "Failed" and "temporary failure 3" in body["responseStatus"]["message"]
    resp = await client.post("/v1/chat/completions", json=chat("reject", ref_id="rejected"))
    body = await resp.json()
    assert resp.status == 400 and body["responseStatus"]["errorCode"] == "UpstreamRejected"
    job = await client.app[state.ENGINE].store.get(ref_id="rejected")
    assert job.attempts == 1


async def test_concurrency_is_honoured(client: Any) -> None:
    scripted_provider.STATS.setdefault("alpha", {}).update(calls=0, max_running=0)
    responses = await asyncio.gather(*(
        client.post("/v1/chat/completions", json=chat("sleep 0.1")) for _ in range(8)))
    assert all(r.status == 200 for r in responses)
    stats = await (await client.get("/test/scripted/alpha")).json()
    assert stats["calls"] == 8 and stats["max_running"] == 2


async def test_failover_to_the_next_provider(make_client: Callable[..., Any]) -> None:
    client = await make_client(config(providers=[
        {"name": "down", "type": "scripted", "priority": 5, "down": True, "models": ["echo-1"]},
        {"name": "up", "type": "scripted", "models": ["echo-1"]}]))
    resp = await client.post("/v1/chat/completions", json=chat("hi"))
    assert resp.status == 200 and resp.headers["X-Aiport-Provider"] == "up"
    resp = await client.post("/v1/chat/completions", json=chat("hi", provider="down"))
    assert resp.status == 502  # a forced provider is not replaced


async def test_unknown_model_and_provider(client: Any) -> None:
    resp = await client.post("/v1/chat/completions", json=chat("x", model="echo-2"))
    body = await resp.json()
    assert resp.status == 404 and "echo-1" in body["responseStatus"]["message"]
    resp = await client.post("/v1/chat/completions", json=chat("x", provider="nobody"))
    assert resp.status == 404


async def test_finished_jobs_move_to_monthly_archives(make_config: Callable[..., Any], aiohttp_client: Any,
                                                      tmp_path: Path) -> None:
    now = [dt.datetime(2026, 9, 30, 23, 0, tzinfo=dt.UTC)]
    client = await aiohttp_client(create_app(make_config(config()), clock=lambda: now[0]))
    resp = await client.post("/v1/chat/completions", json=chat("september", ref_id="sept-1"))
    assert resp.status == 200
    now[0] = dt.datetime(2026, 10, 2, tzinfo=dt.UTC)
    engine = client.app[state.ENGINE]
    assert await engine.archive_now() == 1
    assert (tmp_path / "jobs_2026-09.db").exists()
    assert await engine.store.get(ref_id="sept-1") is not None
    status = await (await client.get("/api/GetOpenAiChatStatus?RefId=sept-1")).json()
    assert status["jobState"] == "Completed"
    assert status["result"]["choices"][0]["message"]["content"].endswith("september")
    by_id = await (await client.get(f"/api/GetOpenAiChatStatus?JobId={status['jobId']}")).json()
    assert by_id["refId"] == "sept-1"
    assert await engine.archive_now() == 0
    # Its analytics row moved to the summary table with it: one row, usage kept, in its month.
    (row,) = [r for r in await engine.store.summary() if r["refId"] == "sept-1"]
    assert row["month"] == "2026-09" and row["model"] == "echo-1" and row["state"] == "Completed"
    assert row["promptTokens"] is not None and row["provider"] == "alpha"


async def test_summary_rows_come_from_jobs_until_they_are_archived(make_config: Callable[..., Any],
                                                                   aiohttp_client: Any) -> None:
    now = [dt.datetime(2026, 9, 30, 23, 0, tzinfo=dt.UTC)]
    client = await aiohttp_client(create_app(make_config(config()), clock=lambda: now[0]))
    for ref in ("s-1", "s-2"):
        assert (await client.post("/v1/chat/completions", json=chat(ref, ref_id=ref))).status == 200
    engine = client.app[state.ENGINE]
    before = {r["refId"]: r for r in await engine.store.summary()}
    assert set(before) == {"s-1", "s-2"} and before["s-1"]["month"] == "2026-09"
    now[0] = dt.datetime(2026, 10, 2, tzinfo=dt.UTC)
    assert await engine.archive_now() == 2
    after = {r["refId"]: r for r in await engine.store.summary()}
    assert after == before, "archiving moves the rows, it does not change or repeat them"
    assert [r["refId"] for r in await engine.store.summary(since=dt.datetime(2026, 10, 1, tzinfo=dt.UTC))] == []


async def test_a_requeued_archived_job_is_counted_once(make_config: Callable[..., Any],
                                                       aiohttp_client: Any) -> None:
    now = [dt.datetime(2026, 9, 30, 23, 0, tzinfo=dt.UTC)]
    client = await aiohttp_client(create_app(make_config(config(retries=0)), clock=lambda: now[0]))
    resp = await client.post("/api/QueueOpenAiChatCompletion", json={"Request": chat("fail 1 arch-key"),
                                                                      "RefId": "arch-1"})
    assert resp.status == 200
    await poll(client, "/api/GetOpenAiChatStatus?RefId=arch-1", lambda b: b["jobState"] == "Failed")
    engine = client.app[state.ENGINE]
    now[0] = dt.datetime(2026, 10, 2, tzinfo=dt.UTC)
    assert await engine.archive_now() == 1

    async def rows() -> list[str]:
        return [r["state"] for r in await engine.store.summary() if r["refId"] == "arch-1"]

    assert await rows() == ["Failed"]
    job = await engine.store.get(ref_id="arch-1")
    assert job is not None
    await engine.requeue(job)
    await poll(client, "/api/GetOpenAiChatStatus?RefId=arch-1", lambda b: b["jobState"] == "Completed")
    assert await rows() == ["Completed"]
    now[0] = dt.datetime(2026, 10, 3, tzinfo=dt.UTC)
    assert await engine.archive_now() == 1
    assert await rows() == ["Completed"]


async def test_a_database_from_before_usage_columns_is_migrated(tmp_path: Path) -> None:
    """Finished jobs not yet archived take their usage from their summary rows, which then go."""
    import sqlite3

    from aiport.plugins.jobstore_sqlite import SqliteJobStore
    from aiport.plugins.jobstore_sqlite.schema import BASE_SCHEMA as _SCHEMA

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(_SCHEMA)  # the old schema: jobs without usage columns
    created = dt.datetime(2026, 9, 1, tzinfo=dt.UTC).timestamp()
    conn.execute("INSERT INTO job_index (id, ref_id, key_id, api, created_at) VALUES (7, 'old-1', 0, 'Chat', ?)",
                 (created,))
    conn.execute("INSERT INTO jobs (id, ref_id, api, queue, state, request, created_at, completed_at, provider) "
                 "VALUES (7, 'old-1', 'Chat', 'alpha', 'Completed', '{}', ?, ?, 'alpha')", (created, created + 1))
    conn.execute("INSERT INTO summary (id, ref_id, api, queue, provider, model, key_id, state, attempts, "
                 "prompt_tokens, completion_tokens, duration_ms, ttft_ms, created_at, month) "
                 "VALUES (7, 'old-1', 'Chat', 'alpha', 'alpha', 'echo-1', 0, 'Completed', 1, 11, 22, 1000, 5, ?, "
                 "'2026-09')", (created,))
    conn.commit()
    conn.close()
    store = SqliteJobStore(path)
    await store.open()
    try:
        (row,) = await store.summary()
        assert (row["refId"], row["model"], row["promptTokens"], row["completionTokens"], row["ttftMs"],
                row["month"]) == ("old-1", "echo-1", 11, 22, 5, "2026-09")
    finally:
        await store.close()
    await store.open()  # opening again changes nothing
    try:
        assert len(await store.summary()) == 1
    finally:
        await store.close()


def _migrations_of(path: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return [name for (name,) in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]


async def test_migrations_are_recorded_and_run_once(tmp_path: Path) -> None:
    """A new database records every migration; opening it again runs none, and an old database
    (no record table, made by the code before migrations were recorded) is adopted in place."""
    from aiport.plugins.jobstore_sqlite import SqliteJobStore
    from aiport.plugins.jobstore_sqlite.schema import MIGRATIONS, migrate

    path = tmp_path / "new.db"
    store = SqliteJobStore(path)
    await store.open()
    await store.close()
    assert _migrations_of(path) == [name for name, _ in MIGRATIONS]

    import sqlite3

    with sqlite3.connect(path, isolation_level=None) as conn:
        assert migrate(conn) == []  # nothing left to run
        ran: list[str] = []
        extra = (*MIGRATIONS, ("0003_probe", lambda c: ran.append("0003_probe")))
        assert migrate(conn, extra) == ["0003_probe"]  # only the missing step, once
        assert migrate(conn, extra) == [] and ran == ["0003_probe"]


async def test_a_database_at_an_intermediate_step_gets_only_the_missing_migrations(tmp_path: Path) -> None:
    import sqlite3

    from aiport.plugins.jobstore_sqlite import SqliteJobStore
    from aiport.plugins.jobstore_sqlite.schema import MIGRATIONS, migrate

    path = tmp_path / "step1.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        assert migrate(conn, MIGRATIONS[:1]) == ["0001_jobs_index_summary"]
        assert "model" not in {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    store = SqliteJobStore(path)
    await store.open()
    await store.close()
    assert _migrations_of(path) == [name for name, _ in MIGRATIONS]
    with sqlite3.connect(path) as conn:
        assert {"model", "prompt_tokens", "completion_tokens", "ttft_ms"} <= {
            row[1] for row in conn.execute("PRAGMA table_info(jobs)")}


async def test_a_failing_migration_leaves_no_half_step(tmp_path: Path) -> None:
    import sqlite3

    from aiport.plugins.jobstore_sqlite.schema import MIGRATIONS, migrate

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x)")
        raise RuntimeError("step failed")

    with sqlite3.connect(tmp_path / "f.db", isolation_level=None) as conn:
        with pytest.raises(RuntimeError):
            migrate(conn, (*MIGRATIONS, ("0003_broken", broken)))
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "half" not in tables
        recorded = {name for (name,) in conn.execute("SELECT name FROM schema_migrations")}
        assert "0003_broken" not in recorded and "0002_usage_on_jobs" in recorded


async def test_sync_calls_without_ref_id_are_recorded_in_batches(client: Any) -> None:
    """No RefId: the job runs unwritten and is recorded when it finishes; it is findable at once."""
    resp = await client.post("/v1/chat/completions", json=chat("quick"))
    job_id = int(resp.headers["X-Aiport-Job-Id"])
    status = await (await client.get(f"/api/GetOpenAiChatStatus?JobId={job_id}")).json()
    assert status["jobState"] == "Completed" and status["result"]["choices"][0]["message"]["content"].endswith("quick")
    store = client.app[state.ENGINE].store
    assert len([r for r in await store.summary() if r["id"] == job_id]) == 1  # written by the time we ask
    status = await (await client.get(f"/api/GetOpenAiChatStatus?RefId={status['refId']}")).json()
    assert status["jobId"] == job_id


async def test_a_sync_call_without_ref_id_that_times_out_becomes_durable(make_client: Callable[..., Any]) -> None:
    client = await make_client(config(sync_timeout_chat="200ms"))
    resp = await client.post("/v1/chat/completions", json=chat("sleep 0.5"))
    body = await resp.json()
    assert resp.status == 504 and body["jobId"] >= 1 and body["refId"]
    counts = await client.app[state.ENGINE].store.queue_counts()  # read from the tables, not from memory
    assert counts == {"alpha": {"Started": 1}}, "the job was written when its caller stopped waiting"
    _, done = await poll(client, f"/api/GetOpenAiChatStatus?JobId={body['jobId']}",
                         lambda b: b["jobState"] == "Completed")
    assert done["result"]["choices"][0]["message"]["content"] == "alpha says sleep 0.5"


async def test_a_sync_call_without_ref_id_is_retried(client: Any) -> None:
    resp = await client.post("/v1/chat/completions", json=chat("fail 2 no-ref"))
    assert resp.status == 200, await resp.json()
    job = await client.app[state.ENGINE].store.get(job_id=int(resp.headers["X-Aiport-Job-Id"]))
    assert job.attempts == 3 and job.state.value == "Completed"


async def test_deadlines_fire_late_by_at_most_a_tick_and_never_early() -> None:
    from aiport.core.jobs.deadlines import Deadlines

    loop = asyncio.get_running_loop()
    deadlines = Deadlines(tick=0.02)
    fired: dict[str, float] = {}
    started = loop.time()
    for name, delay in (("a", 0.05), ("b", 0.051), ("c", 0.12)):
        deadlines.call_later(delay, lambda n=name: fired.__setitem__(n, loop.time() - started))
    cancelled = deadlines.call_later(0.05, fired.__setitem__, "cancelled", 0.0)
    deadlines.cancel(cancelled)
    deadlines.call_later(0.06, lambda: 1 / 0)  # a failing callback does not stop the others of its tick
    deadlines.call_later(0.06, fired.__setitem__, "after-failure", 0.0)
    assert len(deadlines) == 5
    await asyncio.sleep(0.25)
    assert set(fired) == {"a", "b", "c", "after-failure"}
    # Never early; late by one tick at most, plus slack for a busy machine.
    assert fired["a"] >= 0.05 and fired["b"] >= 0.051 and fired["c"] >= 0.12
    assert fired["a"] < 0.05 + 0.02 + 0.1 and fired["c"] < 0.12 + 0.02 + 0.1
    assert len(deadlines) == 0
    with pytest.raises(ValueError):
        Deadlines(tick=0)


class _StoreWithoutLeases:
    """A store written against an older contract: no claim, no lease renewal."""

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get(self, job_id: int | None = None, ref_id: str | None = None) -> None:
        return None


def test_the_engine_refuses_a_store_that_lacks_required_methods(make_config: Callable[..., Any]) -> None:
    from aiport.core.jobs.engine import JobEngine

    with pytest.raises(TypeError) as refused:
        JobEngine(make_config(config()), _StoreWithoutLeases())
    message = str(refused.value)
    assert "_StoreWithoutLeases" in message and "claim" in message and "renew_owner" in message
    assert "get," not in message and "open" not in message


def test_the_engine_refuses_a_store_that_defers_only_in_part(tmp_path: Path,
                                                             make_config: Callable[..., Any]) -> None:
    from aiport.core.jobs.engine import JobEngine
    from aiport.plugins.jobstore_sqlite import SqliteJobStore

    class StartsInMemoryButCannotPersist(SqliteJobStore):
        persist = None

    with pytest.raises(TypeError, match=r"offers start_in_memory, finish_in_memory but lacks persist"):
        JobEngine(make_config(config()), StartsInMemoryButCannotPersist(tmp_path / "x.db"))
    JobEngine(make_config(config()), SqliteJobStore(tmp_path / "y.db"))  # the whole contract: accepted
