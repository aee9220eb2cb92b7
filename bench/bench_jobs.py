"""Queued jobs per second, end to end (submit -> Completed), against a bare aiohttp baseline.

    python bench/bench_jobs.py [--jobs 2000] [--concurrency 64]

Both servers run in their own processes on loopback. The baseline is a bare aiohttp
app that parses the same JSON body and answers (the HTTP floor any queue pays);
aiport runs each job on an instant in-process provider (``tests/scripted_provider``)
so the figure is the engine's own cost: HTTP submit, durable SQLite writes, claim,
run, complete. Prints both rates and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent

BARE_SERVER = """
import sys
from aiohttp import web
async def handle(request):
    await request.json()
    return web.json_response({"ok": True})
app = web.Application()
app.router.add_post("/submit", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_up(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(200):
        try:
            async with session.get(url) as resp:
                if resp.status < 500:
                    return
        except aiohttp.ClientError:
            await asyncio.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


async def fire(session: aiohttp.ClientSession, url: str, bodies: list[dict], concurrency: int) -> None:
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(url, json=body) as resp:
                await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"{url}: HTTP {resp.status}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def bench_bare(n: int, concurrency: int) -> float:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)])
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            await wait_up(session, f"http://127.0.0.1:{port}/")
            bodies = [{"Request": {"model": "echo-1", "messages": [{"role": "user", "content": f"hi {i}"}]}}
                      for i in range(n)]
            started = time.perf_counter()
            await fire(session, f"http://127.0.0.1:{port}/submit", bodies, concurrency)
            return n / (time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.wait()


async def bench_aiport(n: int, concurrency: int, folder: Path) -> float:
    port = free_port()
    config = folder / "aiport.yaml"
    config.write_text(f"""
server: {{port: {port}}}
storage: {{database_path: {folder}/aiport.db, artifacts_path: {folder}/artifacts}}
plugins: {{load: [scripted_provider]}}
providers: [{{name: instant, type: scripted, concurrency: 32, models: [echo-1]}}]
logging: {{level: warning, format: json}}
""")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.Popen([sys.executable, "-m", "aiport", "serve", "--config", str(config)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            await wait_up(session, f"{url}/up")
            bodies = [{"Request": {"model": "echo-1", "messages": [{"role": "user", "content": f"hi {i}"}]}}
                      for i in range(n)]
            started = time.perf_counter()
            await fire(session, f"{url}/api/QueueOpenAiChatCompletion", bodies, concurrency)
            while True:  # until every job is Completed
                async with session.get(f"{url}/health") as resp:
                    jobs = (await resp.json())["checks"]["jobs"]
                if jobs["queued"] == 0 and jobs["running"] == 0:
                    break
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
            return n / elapsed
    finally:
        proc.terminate()
        proc.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bare = await bench_bare(args.jobs, args.concurrency)
        jobs = await bench_aiport(args.jobs, args.concurrency, Path(tmp))
    print(f"bare aiohttp POST (baseline):      {bare:8.0f} req/s")
    print(f"aiport queued jobs, submit->done:  {jobs:8.0f} jobs/s")
    print(f"ratio aiport/baseline:             {jobs / bare:8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
