"""Generation APIs over HTTP on a scripted media provider: sync, queued, ReplyTo, progress, failover."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Callable
from io import BytesIO
from typing import Any

import aiohttp
import pytest
import scripted_media
from aiohttp import web
from aiport.core import state
from wand.image import Image


def config(providers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    # The local speech plugins would add their implicit instances; these tests want only the scripted one.
    return {"plugins": {"load": ["scripted_media"], "disable": ["speech_espeak", "speech_whisper"]},
            "providers": providers or [{"name": "gpu-1", "type": "scripted-media", "concurrency": 2}],
            "jobs": {"allow_private_callbacks": True, "retry_backoff": "10ms"}}


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> Any:
    return await make_client(config())


@pytest.fixture(scope="module")
def png() -> bytes:
    with Image(width=96, height=64, pseudo="gradient:red-blue") as img:
        img.format = "png"
        return bytes(img.make_blob())


def form(files: dict[str, tuple[str, bytes]] | None = None, **fields: Any) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for key, value in fields.items():
        data.add_field(key, str(value))
    for name, (filename, content) in (files or {}).items():
        data.add_field(name, content, filename=filename, content_type="application/octet-stream")
    return data


async def fetch(client: Any, url: str) -> bytes:
    resp = await client.get(url[url.index("/artifacts/"):])
    assert resp.status == 200
    return await resp.read()


async def test_text_to_image_sync_keeps_ref_id_and_tag(client: Any) -> None:
    resp = await client.post("/api/TextToImage", json={"PositivePrompt": "a cat", "Width": 128, "Height": 64,
                                                       "BatchSize": 2, "Model": "pic-2", "RefId": "cat-1",
                                                       "Tag": "pets"})
    body = await resp.json()
    assert resp.status == 200, body
    assert len(body["results"]) == 2 and body["refId"] == "cat-1"
    assert body["results"][0]["provider"] == "gpu-1"
    for result in body["results"]:
        with Image(blob=await fetch(client, result["url"])) as img:
            assert img.size == (128, 64)
    job = await client.app[state.ENGINE].store.get(ref_id="cat-1")
    assert job.tag == "pets" and scripted_media.CALLS[-1] == "gpu-1:TextToImage:pic-2.safetensors"


async def test_every_task_sync(client: Any, png: bytes) -> None:
    image = {"image": ("in.png", png)}
    resp = await client.post("/api/ImageToImage", data=form(image, PositivePrompt="redraw", Denoise=0.4))
    with Image(blob=await fetch(client, (await resp.json())["results"][0]["url"])) as img:
        assert img.size == (96, 64)
    resp = await client.post("/api/ImageWithMask", data=form({**image, "mask": ("m.png", png)},
                                                             PositivePrompt="a hat"))
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/ImageUpscale", data=form(image))
    with Image(blob=await fetch(client, (await resp.json())["results"][0]["url"])) as img:
        assert img.size == (192, 128)
    resp = await client.post("/api/ImageToText", data=form(image))
    assert (await resp.json())["results"] == [{"text": "a gradient from red to blue"}]
    resp = await client.post("/api/TextToSpeech", json={"Input": "hello"})
    body = await resp.json()
    assert resp.status == 200, body
    with wave.open(BytesIO(await fetch(client, body["results"][0]["url"]))) as w:
        assert w.getframerate() == 8000 and w.getnframes() == 8000
    with wave.open(BytesIO(await fetch(client, body["results"][0]["url"]))) as w:
        speech = w.readframes(10)
    resp = await client.post("/api/SpeechToText", data=form({"audio": ("s.wav", await fetch(
        client, body["results"][0]["url"]))}))
    assert (await resp.json())["results"] == [{"text": "hello from the transcript"}]
    assert speech


async def test_queued_with_progress_status_and_reply_to(client: Any, aiohttp_server: Any) -> None:
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        got.put_nowait(await request.json())
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/cb", hook)
    server = await aiohttp_server(receiver)
    resp = await client.post("/api/QueueTextToImage", json={
        "PositivePrompt": "slow", "RefId": "slow-1", "ReplyTo": str(server.make_url("/cb"))})
    queued = await resp.json()
    assert queued["statusUrl"].endswith("/api/GetArtifactGenerationStatus?RefId=slow-1")
    seen_progress = set()
    for _ in range(200):
        status = await (await client.get("/api/GetArtifactGenerationStatus?RefId=slow-1")).json()
        if status["jobState"] == "Started" and status.get("progress"):
            seen_progress.add(status["status"])
        if status["jobState"] == "Completed":
            break
        await asyncio.sleep(0.05)
    assert status["jobState"] == "Completed" and status["results"][0]["url"]
    assert any(s.startswith("Sampling") for s in seen_progress), seen_progress
    callback = await asyncio.wait_for(got.get(), 10)
    assert callback["refId"] == "slow-1" and callback["outputs"][0]["url"].startswith("/artifacts/")
    resp = await client.post("/api/QueueSpeechToText", data=form(
        {"audio": ("a.wav", b"RIFF\x00\x00\x00\x00WAVEfmt ")}, RefId="stt-1"))
    assert (await resp.json())["statusUrl"].endswith("/api/GetTextGenerationStatus?RefId=stt-1")


async def test_validation_before_queueing(client: Any, png: bytes) -> None:
    cases = [
        ({"PositivePrompt": "x", "Width": 30}, "Width", "InclusiveBetween"),
        ({"PositivePrompt": "x", "Width": 100}, "Width", "MultipleOf"),
        ({"PositivePrompt": "x", "BatchSize": 11}, "BatchSize", "InclusiveBetween"),
        ({"PositivePrompt": "x" * 5000}, "PositivePrompt", "MaximumLength"),
        ({"PositivePrompt": ""}, "PositivePrompt", "NotEmpty"),
    ]
    for body, field, code in cases:
        resp = await client.post("/api/QueueTextToImage", json=body)
        errors = (await resp.json())["responseStatus"]["errors"]
        assert resp.status == 400 and (errors[0]["fieldName"], errors[0]["errorCode"]) == (field, code), errors
    resp = await client.post("/api/QueueTextToImage", json={"PositivePrompt": "x", "Model": "dall-e-9"})
    body = await resp.json()
    assert resp.status == 400 and body["responseStatus"]["errorCode"] == "InvalidModel"
    assert "pic-1, pic-2" in body["responseStatus"]["message"]
    resp = await client.post("/api/ImageToImage", data=form({"image": ("x.png", b"not an image at all")},
                                                            PositivePrompt="x"))
    body = await resp.json()
    assert resp.status == 400 and body["responseStatus"]["errors"][0]["fieldName"] == "Image"
    resp = await client.post("/api/QueueTextToSpeech", json={"Text": "  "})
    assert resp.status == 400
    assert await client.app[state.ENGINE].store.queue_counts() == {}, "nothing was queued"


async def test_node_failure_and_failover(make_client: Callable[..., Any]) -> None:
    client = await make_client(config([
        {"name": "down", "type": "scripted-media", "priority": 9, "down": True},
        {"name": "up", "type": "scripted-media"}]))
    resp = await client.post("/api/TextToImage", json={"PositivePrompt": "a dog"})
    body = await resp.json()
    assert resp.status == 200 and body["results"][0]["provider"] == "up"
    resp = await client.post("/api/TextToImage", json={"PositivePrompt": "broken node", "RefId": "bn"})
    body = await resp.json()
    assert resp.status == 400 and body["responseStatus"]["message"] == "KSampler (node 3): CUDA out of memory"
    job = await client.app[state.ENGINE].store.get(ref_id="bn")
    assert job.attempts == 1


async def test_active_media_models(client: Any) -> None:
    body = await (await client.get("/api/ActiveMediaModels")).json()
    assert body == {"results": [{"key": "pic-1", "value": "pic-1.safetensors"},
                                {"key": "pic-2", "value": "pic-2.safetensors"}]}
    body = await (await client.get("/api/ActiveMediaModels?Task=TextToSpeech")).json()
    assert body["results"][0]["key"] == "say-1"
