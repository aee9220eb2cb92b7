"""Crash safety: ``kill -9`` the server mid-way through 200 queued jobs, restart it, lose nothing.

Delivery is at-least-once: a callback the receiver got just before the crash may
come again after the restart, with the same ``X-Aiport-Delivery`` id, which is
how the receiver here (and in production) tells a repeat from a new result.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
JOBS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_up(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        try:
            async with session.get(f"{url}/up") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert proc.poll() is None, "server exited during start-up"
        await asyncio.sleep(0.1)
    raise AssertionError("server did not come up")


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.Popen([sys.executable, "-m", "aiport", "serve", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=log.open("ab"), env=env)


async def test_kill_9_mid_way_loses_no_job_and_no_callback(tmp_path: Path, aiohttp_server: Any) -> None:
    deliveries: dict[str, set[str]] = defaultdict(set)  # parent refId -> delivery ids
    bodies: dict[str, list[dict[str, Any]]] = defaultdict(list)
    all_in = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        ref = request.headers["X-Aiport-Ref-Id"]
        deliveries[ref].add(request.headers["X-Aiport-Delivery"])
        bodies[ref].append(body)
        if len(deliveries) == JOBS:
            all_in.set()
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver)

    port = free_port()
    config = tmp_path / "aiport.yaml"
    config.write_text(f"""
server: {{port: {port}}}
storage: {{database_path: {tmp_path}/db/aiport.db, artifacts_path: {tmp_path}/artifacts}}
plugins: {{load: [scripted_provider]}}
providers:
  - {{name: alpha, type: scripted, concurrency: 4, models: [echo-1]}}
jobs: {{retry_backoff: 50ms, allow_private_callbacks: true, callback_signing_key: k}}
logging: {{format: json}}
""")
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    proc = start(config, log)
    async with aiohttp.ClientSession() as session:
        try:
            await wait_up(session, url, proc)

            async def queue(i: int) -> None:
                payload = {"RefId": f"crash-{i}", "ReplyTo": str(server.make_url("/hook")),
                           "Request": {"model": "echo-1",
                                       "messages": [{"role": "user", "content": f"sleep 0.04 #{i}"}]}}
                async with session.post(f"{url}/api/QueueOpenAiChatCompletion", json=payload) as resp:
                    assert resp.status == 200, await resp.text()

            await asyncio.gather(*(queue(i) for i in range(JOBS)))
            while len(deliveries) < JOBS // 4:
                assert proc.poll() is None
                await asyncio.sleep(0.01)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        before_restart = len(deliveries)
        assert before_restart < JOBS, "the crash came too late to prove anything"

        proc = start(config, log)
        try:
            await wait_up(session, url, proc)
            await asyncio.wait_for(all_in.wait(), 60)
            for i in range(JOBS):
                async with session.get(f"{url}/api/GetOpenAiChatStatus?RefId=crash-{i}") as resp:
                    status = await resp.json()
                assert status["jobState"] == "Completed", status
                assert status["result"]["choices"][0]["message"]["content"] == f"alpha says sleep 0.04 #{i}"
        finally:
            proc.terminate()
            proc.wait(timeout=20)

    assert set(deliveries) == {f"crash-{i}" for i in range(JOBS)}
    for ref, ids in deliveries.items():
        assert len(ids) == 1, f"{ref} was delivered as different deliveries: {ids}"
        i = ref.split("-")[1]
        for body in bodies[ref]:  # never another job's result
            assert body["choices"][0]["message"]["content"] == f"alpha says sleep 0.04 #{i}"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("event") == "recovered interrupted jobs" for line in lines)
