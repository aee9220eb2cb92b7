"""Media transform APIs over HTTP: sync, queued and ReplyTo, real ImageMagick and FFmpeg, artifacts,
variants and file deletion. Results are checked by their real properties (wand, ffprobe)."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiport.core import state
from wand.image import Image

SECRET = "media-admin-secret"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=60)


def ffprobe(data: bytes, tmp: Path) -> dict[str, Any]:
    path = tmp / "probe.bin"
    path.write_bytes(data)
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                          str(path)], capture_output=True, check=True, timeout=30)
    return json.loads(out.stdout)


def png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("media")
    with Image(width=320, height=240, pseudo="gradient:red-blue") as img:
        img.format = "png"
        photo = img.make_blob()
    with Image(width=64, height=64, pseudo="xc:white") as img:
        img.format = "png"
        mark = img.make_blob()
    video, tone = folder / "clip.mp4", folder / "tone.wav"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=2", "-f", "lavfi",
           "-i", "sine=frequency=440:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
           "-shortest", str(video))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1:sample_rate=22050", str(tone))
    return {"photo": photo, "mark": mark, "video": video.read_bytes(), "tone": tone.read_bytes()}


def form(files: dict[str, tuple[str, bytes]], **fields: Any) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, value in fields.items():
        data.add_field(name, str(value))
    for name, (filename, content) in files.items():
        data.add_field(name, content, filename=filename, content_type="application/octet-stream")
    return data


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> Any:
    return await make_client({"auth": {"admin_secret": SECRET},
                              "jobs": {"allow_private_callbacks": True, "retry_backoff": "10ms"}})


async def download(client: Any, url: str) -> bytes:
    path = url.split(str(client.make_url("")).rstrip("/"), 1)[-1]
    resp = await client.get(path)
    assert resp.status == 200, path
    return await resp.read()


async def test_scale_image_sync_keeps_aspect_and_format(client: Any, media: dict[str, bytes]) -> None:
    resp = await client.post("/api/ScaleImage", data=form({"image": ("photo.png", media["photo"])}, Width=100))
    body = await resp.json()
    assert resp.status == 200, body
    (result,) = body["results"]
    assert result["fileName"].endswith(".png") and body["duration"].startswith("PT")
    with Image(blob=await download(client, result["url"])) as img:
        assert (img.width, img.height, img.format) == (100, 75, "PNG")


async def test_crop_watermark_and_convert_image(client: Any, media: dict[str, bytes]) -> None:
    resp = await client.post("/api/CropImage", data=form({"image": ("p.png", media["photo"])},
                                                         X=10, Y=20, Width=50, Height=40))
    with Image(blob=await download(client, (await resp.json())["results"][0]["url"])) as img:
        assert img.size == (50, 40)
    # AI Server's WatermarkImage takes its two files by position, whatever their field names.
    resp = await client.post("/api/WatermarkImage", data=form(
        {"file1": ("p.png", media["photo"]), "file2": ("m.png", media["mark"])},
        Position="TopLeft", Opacity=1, WatermarkScale=0.25))
    body = await resp.json()
    assert resp.status == 200, body
    with Image(blob=await download(client, body["results"][0]["url"])) as img:
        assert img[20, 20].red_int8 == img[20, 20].green_int8 == img[20, 20].blue_int8 == 255
        assert img[300, 220].blue_int8 > 200 and img[300, 220].green_int8 < 60
    for fmt, magick in (("webp", "WEBP"), ("avif", "HEIC"), ("jpg", "JPEG")):
        resp = await client.post("/api/ConvertImage", data=form({"image": ("p.png", media["photo"])},
                                                                 OutputFormat=fmt))
        body = await resp.json()
        assert resp.status == 200, body
        blob = await download(client, body["results"][0]["url"])
        with Image(blob=blob) as img:  # ImageMagick reads AVIF through its HEIC coder
            assert img.format == magick and img.size == (320, 240)
        if fmt == "avif":
            assert blob[4:12] == b"ftypavif"


async def test_video_and_audio_transforms(client: Any, media: dict[str, bytes], tmp_path: Path) -> None:
    video = {"video": ("clip.mp4", media["video"])}
    cases = [
        ("ScaleVideo", video, {"Width": 80}, lambda p: p["streams"][0]["width"] == 80
         and p["streams"][0]["height"] == 60),
        ("CropVideo", video, {"X": 0, "Y": 0, "Width": 64, "Height": 48},
         lambda p: (p["streams"][0]["width"], p["streams"][0]["height"]) == (64, 48)),
        ("ConvertVideo", video, {"OutputFormat": "webm"}, lambda p: "webm" in p["format"]["format_name"]),
        ("TrimVideo", video, {"StartTime": "00:00.5", "EndTime": "1.5"},
         lambda p: abs(float(p["format"]["duration"]) - 1.0) < 0.2),
        ("WatermarkVideo", {**video, "watermark": ("m.png", media["mark"])}, {"Position": "Center"},
         lambda p: p["streams"][0]["width"] == 160),
        ("ConvertAudio", {"audio": ("tone.wav", media["tone"])}, {"OutputFormat": "mp3"},
         lambda p: p["streams"][0]["codec_name"] == "mp3"),
    ]
    for api, files, fields, check in cases:
        resp = await client.post(f"/api/{api}", data=form(files, **fields))
        body = await resp.json()
        assert resp.status == 200, (api, body)
        probe = ffprobe(await download(client, body["results"][0]["url"]), tmp_path)
        assert check(probe), (api, probe)


async def test_queued_transform_with_reply_to_and_status(client: Any, media: dict[str, bytes],
                                                         aiohttp_server: Any) -> None:
    arrived: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        arrived.put_nowait(await request.json())
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/done", hook)
    server = await aiohttp_server(receiver)
    resp = await client.post("/api/QueueScaleImage", data=form(
        {"image": ("p.png", media["photo"])}, Height=60, RefId="scale-1", Tag="thumbs"),
        headers={"ReplyTo": str(server.make_url("/done"))})
    queued = await resp.json()
    assert resp.status == 200, queued
    assert queued["refId"] == "scale-1" and queued["statusUrl"].endswith(
        "/api/GetArtifactGenerationStatus?RefId=scale-1")
    callback = await asyncio.wait_for(arrived.get(), 20)
    assert callback["refId"] == "scale-1" and callback["state"] == "Completed"
    assert callback["outputs"][0]["url"].startswith("/artifacts/") and callback["outputs"][0]["outputFormat"] == "png"
    status = await (await client.get("/api/GetArtifactGenerationStatus?RefId=scale-1")).json()
    assert status["jobState"] == "Completed"
    with Image(blob=await download(client, status["results"][0]["url"])) as img:
        assert img.size == (80, 60)
    job = await client.app[state.ENGINE].store.get(ref_id="scale-1")
    assert job.tag == "thumbs" and job.inputs["image"]["path"].startswith("input/")


@pytest.mark.parametrize(("api", "field", "name", "content", "fields"), [
    ("ScaleVideo", "video", "notes.mp4", b"this is just text, not a video\n" * 10, {"Width": 10}),
    ("ScaleImage", "image", "cut.png", None, {"Width": 10}),  # a truncated PNG (filled in below)
    ("ScaleImage", "image", "huge.png", png_header(30000, 30000), {"Width": 10}),
    ("ScaleVideo", "video", "list.m3u8", b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n/etc/passwd\n"
                                         b"#EXT-X-ENDLIST\n", {"Width": 10}),
])
async def test_bad_inputs_are_4xx_and_write_no_output(client: Any, media: dict[str, bytes], api: str, field: str,
                                                      name: str, content: bytes | None,
                                                      fields: dict[str, Any], tmp_path: Path) -> None:
    content = content if content is not None else media["photo"][: len(media["photo"]) // 2]
    resp = await client.post(f"/api/{api}", data=form({field: (name, content)}, **fields))
    body = await resp.json()
    assert 400 <= resp.status < 500, body
    assert body["responseStatus"]["message"] and "Traceback" not in json.dumps(body)
    artifacts = Path(client.app[state.CONFIG].storage.artifacts_path)
    outputs = [p for p in artifacts.rglob("*") if p.is_file() and "input" not in p.parts and ".work" not in p.parts
               and ".incoming" not in p.parts]
    assert outputs == [], outputs
    inputs = [p for p in (artifacts / "input").rglob("*") if p.is_file()] if (artifacts / "input").exists() else []
    assert inputs == [], "a rejected upload is not kept"
    assert (await client.get("/up")).status == 200


async def test_validation_before_anything_is_kept(client: Any, media: dict[str, bytes]) -> None:
    resp = await client.post("/api/ConvertImage", data=form({"image": ("p.png", media["photo"])},
                                                            OutputFormat="psd"))
    body = await resp.json()
    assert resp.status == 400 and body["responseStatus"]["errors"][0]["fieldName"] == "OutputFormat"
    resp = await client.post("/api/ScaleImage", data=form({}, Width=10))
    body = await resp.json()
    assert resp.status == 400 and body["responseStatus"]["errors"][0]["fieldName"] == "Image"


async def test_artifacts_are_served_with_cache_headers_and_ranges(client: Any, media: dict[str, bytes]) -> None:
    resp = await client.post("/api/ConvertVideo", data=form({"video": ("c.mp4", media["video"])},
                                                            OutputFormat="mp4"))
    url = (await resp.json())["results"][0]["url"]
    path = url[url.index("/artifacts/"):]
    resp = await client.get(path)
    assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp4"
    assert "immutable" in resp.headers["Cache-Control"] and resp.headers["ETag"]
    assert resp.headers["Content-Security-Policy"].startswith("sandbox")
    whole = await resp.read()
    resp = await client.get(path, headers={"Range": "bytes=10-19"})
    assert resp.status == 206 and await resp.read() == whole[10:20]
    resp = await client.get(path, headers={"If-None-Match": resp.headers["ETag"]})
    assert resp.status == 304
    resp = await client.get(path + "?download=true")
    assert resp.headers["Content-Disposition"].startswith("attachment")
    for bad in ("/artifacts/%2e%2e/%2e%2e/etc/passwd", "/artifacts/..%2F..%2Fetc%2Fpasswd",
                "/artifacts/.incoming/x", "/artifacts/2026/01/01/0/nope.png"):
        resp = await client.get(bad)
        assert 400 <= resp.status < 500 and "responseStatus" in await resp.json(), bad


async def test_variants_resize_cache_and_refuse_bad_options(client: Any, media: dict[str, bytes]) -> None:
    resp = await client.post("/api/ConvertImage", data=form({"image": ("p.png", media["photo"])},
                                                            OutputFormat="png"))
    url = (await resp.json())["results"][0]["url"]
    rel = url[url.index("/artifacts/") + len("/artifacts/"):]
    for variant, size in (("width=64", (64, 48)), ("height=30", (40, 30)), ("width=100,height=100", (100, 75))):
        resp = await client.get(f"/variants/{variant}/{rel}")
        assert resp.status == 200, await resp.text()
        with Image(blob=await resp.read()) as img:
            assert img.size == size, variant
    store_root = Path(client.app[state.CONFIG].storage.artifacts_path)
    cached = store_root / rel.replace(".png", "_64w.png")
    assert cached.exists()
    before = cached.stat().st_mtime_ns
    assert (await client.get(f"/variants/width=64/{rel}")).status == 200
    assert cached.stat().st_mtime_ns == before, "the second request is served from the cache"
    for bad, status in (("width=abc", 400), ("depth=5", 400), ("width=99999", 400), ("width=0", 400)):
        resp = await client.get(f"/variants/{bad}/{rel}")
        assert resp.status == status, bad


async def test_delete_files_only_for_the_owner(client: Any, media: dict[str, bytes], tmp_path: Path) -> None:
    resp = await client.post("/api/ScaleImage", data=form({"image": ("p.png", media["photo"])}, Width=20))
    url = (await resp.json())["results"][0]["url"]
    rel = url[url.index("/artifacts/") + len("/artifacts/"):]
    store_root = Path(client.app[state.CONFIG].storage.artifacts_path)
    other = "2026/01/01/7/" + "a" * 64 + ".png"
    (store_root / other).parent.mkdir(parents=True)
    (store_root / other).write_bytes(media["mark"])
    resp = await client.delete(f"/files/{other}")
    assert resp.status == 403
    resp = await client.post("/api/DeleteFiles", json={"Paths": [rel, other, "2026/01/01/0/" + "b" * 64 + ".png"]})
    body = await resp.json()
    assert body == {"deleted": [rel], "missing": ["2026/01/01/0/" + "b" * 64 + ".png"], "failed": [other]}
    resp = await client.delete(f"/files/{other}", headers={"Authorization": f"Bearer {SECRET}"})
    assert resp.status == 204 and not (store_root / other).exists()


async def test_every_transform_queued_with_reply_to(client: Any, media: dict[str, bytes],
                                                    aiohttp_server: Any) -> None:
    photo, mark = {"image": ("p.png", media["photo"])}, ("m.png", media["mark"])
    video = {"video": ("clip.mp4", media["video"])}
    cases = {
        "ScaleImage": (photo, {"Width": 50}), "CropImage": (photo, {"X": 0, "Y": 0, "Width": 10, "Height": 10}),
        "WatermarkImage": ({**photo, "watermark": mark}, {}), "ConvertImage": (photo, {"OutputFormat": "gif"}),
        "ScaleVideo": (video, {"Height": 60}), "CropVideo": (video, {"X": 2, "Y": 2, "Width": 40, "Height": 30}),
        "WatermarkVideo": ({**video, "watermark": mark}, {}), "ConvertVideo": (video, {"OutputFormat": "mkv"}),
        "TrimVideo": (video, {"StartTime": "0", "EndTime": "1"}),
        "ConvertAudio": ({"audio": ("t.wav", media["tone"])}, {"OutputFormat": "flac"}),
    }
    got: dict[str, dict[str, Any]] = {}
    all_in = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        got[body["refId"]] = body
        if len(got) == len(cases):
            all_in.set()
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/cb", hook)
    server = await aiohttp_server(receiver)
    for api, (files, fields) in cases.items():
        resp = await client.post(f"/api/Queue{api}", data=form(files, RefId=f"q-{api}",
                                                                ReplyTo=str(server.make_url("/cb")), **fields))
        assert resp.status == 200, (api, await resp.text())
    await asyncio.wait_for(all_in.wait(), 60)
    for api in cases:
        callback = got[f"q-{api}"]
        assert callback["state"] == "Completed", callback
        data = await download(client, callback["outputs"][0]["url"])
        assert len(data) > 0
        status = await (await client.get(f"/api/GetArtifactGenerationStatus?RefId=q-{api}")).json()
        assert status["jobState"] == "Completed" and await download(client, status["results"][0]["url"]) == data
