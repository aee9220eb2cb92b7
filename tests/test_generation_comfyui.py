"""Every generation API over HTTP against the protocol-faithful fake ComfyUI: sync, queued and
ReplyTo, real output files, progress in the status API, a stalled websocket, a failing node, and
an offline instance skipped for a second one."""

from __future__ import annotations

import asyncio
import io
import json
import wave
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fakes.comfyui_server import FakeComfyUI
from wand.image import Image

NO_LOCAL_SPEECH = ["speech_espeak", "speech_whisper"]  # only ComfyUI answers here


@pytest.fixture
async def comfy() -> AsyncIterator[FakeComfyUI]:
    async with FakeComfyUI() as fake:
        yield fake


def config(*fakes: FakeComfyUI, **options: Any) -> dict[str, Any]:
    providers = [{"name": f"comfy-{i}", "type": "comfyui", "base_url": f.base_url, "history_poll_interval": 0.1,
                  **options} for i, f in enumerate(fakes, 1)]
    return {"providers": providers, "plugins": {"disable": NO_LOCAL_SPEECH},
            "jobs": {"allow_private_callbacks": True, "retry_backoff": "10ms"}}


@pytest.fixture(scope="module")
def png() -> bytes:
    with Image(width=64, height=64, pseudo="gradient:red-blue") as img:
        img.format = "png"
        return bytes(img.make_blob())


@pytest.fixture(scope="module")
def wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x08" * 16000)
    return out.getvalue()


def form(files: dict[str, tuple[str, bytes]], **fields: Any) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for key, value in fields.items():
        data.add_field(key, str(value))
    for name, (filename, content) in files.items():
        data.add_field(name, content, filename=filename, content_type="application/octet-stream")
    return data


def requests(png: bytes, wav: bytes) -> dict[str, tuple[dict[str, Any], dict[str, tuple[str, bytes]]]]:
    image = {"image": ("in.png", png)}
    return {
        "TextToImage": ({"PositivePrompt": "a lighthouse", "Width": 64, "Height": 64, "BatchSize": 2}, {}),
        "ImageToImage": ({"PositivePrompt": "at night", "Denoise": 0.6}, image),
        "ImageWithMask": ({"PositivePrompt": "a boat"}, {**image, "mask": ("mask.png", png)}),
        "ImageUpscale": ({}, image),
        "ImageToText": ({}, image),
        "TextToSpeech": ({"Input": "hello there"}, {}),
        "SpeechToText": ({}, {"audio": ("speech.wav", wav)}),
    }


async def download(client: Any, url: str) -> bytes:
    resp = await client.get(url[url.index("/artifacts/"):])
    assert resp.status == 200
    return await resp.read()


async def check_outputs(client: Any, task: str, results: list[dict[str, Any]]) -> None:
    if task in ("ImageToText", "SpeechToText"):
        assert results and all(r["text"] for r in results), results
        return
    for result in results:
        data = await download(client, result["url"])
        if task == "TextToSpeech":
            with wave.open(io.BytesIO(data)) as w:
                assert w.getnframes() > 0
        else:
            with Image(blob=data) as img:
                expected = (128, 128) if task == "ImageUpscale" else (64, 64)
                assert img.size == expected, task
    if task == "TextToImage":
        assert len(results) == 2


async def test_every_generation_api_sync(make_client: Callable[..., Any], comfy: FakeComfyUI, png: bytes,
                                         wav: bytes) -> None:
    client = await make_client(config(comfy))
    for task, (fields, files) in requests(png, wav).items():
        resp = await client.post(f"/api/{task}", data=form(files, RefId=f"sync-{task}", **fields))
        body = await resp.json()
        assert resp.status == 200, (task, body)
        assert body["refId"] == f"sync-{task}"
        await check_outputs(client, task, body["results"])
        if task not in ("ImageToText", "SpeechToText"):
            assert body["results"][0]["provider"] == "comfy-1"


async def test_every_generation_api_queued_with_reply_to(make_client: Callable[..., Any], comfy: FakeComfyUI,
                                                         png: bytes, wav: bytes, aiohttp_server: Any) -> None:
    delivered: dict[str, dict[str, Any]] = {}
    all_in = asyncio.Event()
    tasks = requests(png, wav)

    async def hook(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        delivered[body["refId"]] = body
        if len(delivered) == len(tasks):
            all_in.set()
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/cb", hook)
    server = await aiohttp_server(receiver)
    client = await make_client(config(comfy))
    for task, (fields, files) in tasks.items():
        text = "Text" if task == "TextToSpeech" else ""
        if text:
            fields = {"Text": fields["Input"]}
        resp = await client.post(f"/api/Queue{task}", data=form(
            files, RefId=f"q-{task}", Tag="batch", ReplyTo=str(server.make_url("/cb")), **fields))
        queued = await resp.json()
        assert resp.status == 200, (task, queued)
        status_api = "GetTextGenerationStatus" if task in ("ImageToText", "SpeechToText") \
            else "GetArtifactGenerationStatus"
        assert queued["statusUrl"].endswith(f"/api/{status_api}?RefId=q-{task}")
    await asyncio.wait_for(all_in.wait(), 60)
    for task in tasks:
        callback = delivered[f"q-{task}"]
        assert callback["state"] == "Completed", callback
        key = "textOutputs" if task in ("ImageToText", "SpeechToText") else "outputs"
        assert callback[key], callback
        api = "GetTextGenerationStatus" if key == "textOutputs" else "GetArtifactGenerationStatus"
        status = await (await client.get(f"/api/{api}?RefId=q-{task}")).json()
        await check_outputs(client, task, status["results"])


async def test_progress_is_visible_while_a_job_runs(make_client: Callable[..., Any], comfy: FakeComfyUI) -> None:
    comfy.step_delay = 0.15
    client = await make_client(config(comfy))
    resp = await client.post("/api/QueueTextToImage", json={"PositivePrompt": "slow", "Width": 64, "Height": 64,
                                                            "RefId": "slow"})
    assert resp.status == 200
    seen = []
    for _ in range(400):
        status = await (await client.get("/api/GetArtifactGenerationStatus?RefId=slow")).json()
        if status["jobState"] in ("Started", "Executed") and status.get("progress"):
            seen.append((status["progress"], status["status"]))
        if status["jobState"] == "Completed":
            break
        await asyncio.sleep(0.03)
    assert status["jobState"] == "Completed"
    assert any(0 < p < 1 for p, _ in seen), seen


async def test_stalled_websocket_completes_through_history(make_client: Callable[..., Any],
                                                           comfy: FakeComfyUI) -> None:
    comfy.stall_ws = True
    client = await make_client(config(comfy))
    resp = await client.post("/api/TextToImage", json={"PositivePrompt": "x", "Width": 64, "Height": 64})
    body = await resp.json()
    assert resp.status == 200, body
    with Image(blob=await download(client, body["results"][0]["url"])) as img:
        assert img.size == (64, 64)


async def test_a_failing_node_fails_the_job_with_its_message(make_client: Callable[..., Any],
                                                              comfy: FakeComfyUI) -> None:
    comfy.fail_node = "KSampler"
    comfy.fail_message = "Allocation on device failed: out of VRAM in sampler"
    client = await make_client(config(comfy))
    resp = await client.post("/api/TextToImage", json={"PositivePrompt": "x", "Width": 64, "Height": 64,
                                                       "RefId": "boom"})
    body = await resp.json()
    assert 400 <= resp.status < 600 and body["jobState"] == "Failed", body
    assert "out of VRAM in sampler" in body["responseStatus"]["message"]
    status = await client.get("/api/GetArtifactGenerationStatus?RefId=boom")
    assert "out of VRAM in sampler" in (await status.json())["responseStatus"]["message"]


async def test_an_offline_instance_is_skipped(make_client: Callable[..., Any], comfy: FakeComfyUI) -> None:
    async with FakeComfyUI() as second:
        comfy.offline = True
        client = await make_client(config(comfy, second))
        for _ in range(3):
            resp = await client.post("/api/TextToImage", json={"PositivePrompt": "x", "Width": 64, "Height": 64})
            body = await resp.json()
            assert resp.status == 200, body
            assert body["results"][0]["provider"] == "comfy-2"
        assert second.paths("/prompt")
