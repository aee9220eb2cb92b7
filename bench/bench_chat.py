"""Chat gateway overhead: requests/s and p50/p99 latency through (a) the upstream directly,
(b) a bare aiohttp pass-through proxy, (c) aiport, (d) LiteLLM's proxy, all in one run.

    python bench/bench_chat.py [--requests 3000] [--concurrency 32] [--rounds 3] [--skip-litellm]

Every server runs in its own process on loopback, and so does the load generator.
The bare proxy and aiport, whose ratio is the figure that matters, run side by side
and are loaded in turn for ``--rounds`` rounds; each is reported by its median round
(a shared machine's speed drifts between runs more than the two differ within one).
The upstream is a minimal OpenAI-compatible server answering a fixed completion;
prompts are unique (no caching anywhere). LiteLLM is installed into its own venv
(``bench/.litellm-venv``, made on first use with ``pip install 'litellm[proxy]'``).
Prints each target's figures and the ratios aiport/bare-proxy and aiport/LiteLLM
(goals: >= 0.7x the bare proxy's throughput, >= 3x LiteLLM's).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
LITELLM_VENV = HERE / ".litellm-venv"

UPSTREAM = """
import sys, time
from aiohttp import web
BODY = {"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "pong"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
async def chat(request):
    body = await request.json()
    return web.json_response(dict(BODY, created=int(time.time()), model=body.get("model", "bench")))
async def models(request):
    return web.json_response({"object": "list", "data": [{"id": "bench", "object": "model"}]})
app = web.Application()
app.router.add_post("/v1/chat/completions", chat)
app.router.add_get("/v1/models", models)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

BARE_PROXY = """
import sys, aiohttp
from aiohttp import web
UP = sys.argv[2]
async def start(app):
    app["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield
    await app["s"].close()
async def chat(request):
    data = await request.read()
    async with request.app["s"].post(UP + "/v1/chat/completions", data=data,
                                     headers={"Content-Type": "application/json"}) as resp:
        return web.Response(body=await resp.read(), status=resp.status, content_type="application/json")
app = web.Application()
app.cleanup_ctx.append(start)
app.router.add_post("/v1/chat/completions", chat)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

LOAD = """
import asyncio, json, sys, time, aiohttp
URL, N, C, MODEL, KEY = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
async def main():
    lat = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=C)) as s:
        async def one(i):
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"ping {i} {time.time()}"}]}
            t = time.perf_counter()
            async with s.post(URL, json=body, headers={"Authorization": "Bearer " + KEY}) as r:
                await r.read()
                if r.status != 200:
                    raise SystemExit(f"HTTP {r.status}: {(await r.text())[:200]}")
            return time.perf_counter() - t
        for i in range(min(200, N)):  # warm-up
            await one(-i)
        queue = list(range(N))
        async def worker():
            while queue:
                lat.append(await one(queue.pop()))
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(C)))
        elapsed = time.perf_counter() - start
    lat.sort()
    print(json.dumps({"rps": N / elapsed, "p50": lat[len(lat) // 2] * 1000, "p99": lat[int(len(lat) * 0.99)] * 1000}))
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


#: LiteLLM refuses to start without a strong master key; every target gets the same header.
MASTER_KEY = "sk-" + secrets.token_hex(32)


def load(url: str, n: int, c: int, model: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", LOAD, url, str(n), str(c), model, MASTER_KEY], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"load on {url} failed: {out.stdout}{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_litellm() -> Path:
    python = LITELLM_VENV / "bin" / "python"
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        print("installing litellm[proxy] into bench/.litellm-venv (first run only)...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "litellm[proxy]"], check=True)
    return LITELLM_VENV / "bin" / "litellm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare-proxy/aiport rounds (median)")
    parser.add_argument("--skip-litellm", action="store_true")
    args = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        try:
            up_port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up_port)]))
            upstream = f"http://127.0.0.1:{up_port}"
            wait_up(f"{upstream}/v1/models", procs[-1])
            results["upstream direct"] = load(f"{upstream}/v1/chat/completions", args.requests, args.concurrency,
                                              "bench")

            bare_port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-c", BARE_PROXY, str(bare_port), upstream]))
            wait_up(f"http://127.0.0.1:{bare_port}/", procs[-1])

            port = free_port()
            config = folder / "aiport.yaml"
            config.write_text(
                f"server: {{port: {port}}}\n"
                f"storage: {{database_path: {folder}/db/aiport.db, artifacts_path: {folder}/artifacts}}\n"
                f"providers:\n  - {{name: up, type: openai-compatible, base_url: '{upstream}', api_key: x, "
                f"concurrency: 1024, models: [bench]}}\n"
                "logging: {level: warning, format: json}\n")
            procs.append(subprocess.Popen([sys.executable, "-m", "aiport", "serve", "--config", str(config)]))
            wait_up(f"http://127.0.0.1:{port}/up", procs[-1])
            rounds: dict[str, list[dict[str, float]]] = {"bare aiohttp proxy": [], "aiport": []}
            for _ in range(max(1, args.rounds)):
                for name, target_port in (("bare aiohttp proxy", bare_port), ("aiport", port)):
                    rounds[name].append(load(f"http://127.0.0.1:{target_port}/v1/chat/completions",
                                             args.requests, args.concurrency, "bench"))
            for name, runs in rounds.items():
                results[name] = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
                print(f"{name}: req/s by round " + ", ".join(f"{r['rps']:.0f}" for r in runs), file=sys.stderr)
            # Each round loads the two back to back: their ratio within a round is what a
            # shared machine's drift between rounds disturbs least.
            print("aiport / bare proxy by round: " + ", ".join(
                f"{a['rps'] / b['rps']:.2f}" for a, b in zip(rounds["aiport"], rounds["bare aiohttp proxy"],
                                                              strict=True)), file=sys.stderr)
            procs.pop().terminate()

            if not args.skip_litellm:
                litellm = ensure_litellm()
                lport = free_port()
                lconfig = folder / "litellm.yaml"
                lconfig.write_text(
                    "model_list:\n  - model_name: bench\n    litellm_params:\n"
                    f"      model: openai/bench\n      api_base: {upstream}/v1\n      api_key: x\n"
                    "litellm_settings:\n  drop_params: true\n  telemetry: false\n"
                    f"general_settings:\n  master_key: {MASTER_KEY}\n")
                env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
                procs.append(subprocess.Popen([str(litellm), "--config", str(lconfig), "--port", str(lport),
                                               "--num_workers", "1"], env=env, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
                wait_up(f"http://127.0.0.1:{lport}/health/liveliness", procs[-1], seconds=300)
                results["litellm proxy"] = load(f"http://127.0.0.1:{lport}/v1/chat/completions",
                                                args.requests, args.concurrency, "bench")
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait()
    print(f"{'target':22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, r in results.items():
        print(f"{name:22} {r['rps']:8.0f} {r['p50']:8.1f} {r['p99']:8.1f}")
    ours = results["aiport"]["rps"]
    print(f"aiport / bare proxy throughput: {ours / results['bare aiohttp proxy']['rps']:.2f}x")
    if "litellm proxy" in results:
        print(f"aiport / LiteLLM throughput:    {ours / results['litellm proxy']['rps']:.2f}x")


if __name__ == "__main__":
    main()
