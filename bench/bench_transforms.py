"""Transform overhead: aiport's ScaleImage / ConvertImage / ScaleVideo over HTTP vs the same work done directly.

    python bench/bench_transforms.py [--rounds 10]

Baselines, measured in the same run on the same input:
- images: wand in this process (decode the upload's bytes, resize/convert, encode);
- video: the ffmpeg command line (``ffmpeg -i in.mp4 -vf scale=W:-2 out.mp4``).

aiport runs as its own process (``aiport serve``) and each call is a sync API
request that uploads the file, waits for the job, and downloads the result, so the
figure is everything a client pays. Prints mean seconds per operation and the ratio
(goal: <= 1.5x for a 1-megapixel image, <= 1.15x for video).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from wand.image import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True)


async def mean_seconds(rounds: int, fn: Callable[[], Awaitable[None]]) -> float:
    await fn()  # warm-up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return statistics.mean(times)


async def call(session: aiohttp.ClientSession, url: str, api: str, field: str, name: str, data: bytes,
               **fields: str) -> bytes:
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field(field, data, filename=name, content_type="application/octet-stream")
    async with session.post(f"{url}/api/{api}", data=form) as resp:
        body = await resp.json()
        if resp.status != 200:
            raise SystemExit(f"{api}: HTTP {resp.status} {body}")
    async with session.get(body["results"][0]["url"]) as resp:
        return await resp.read()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with Image(width=1000, height=1000, pseudo="plasma:") as img:
            img.format = "png"
            photo = img.make_blob()
        video = folder / "in.mp4"
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=640x480:rate=25:duration=5", "-c:v", "libx264",
               "-pix_fmt", "yuv420p", str(video))
        video_bytes = video.read_bytes()

        def wand_scale() -> None:
            with Image(blob=photo) as img:
                img.resize(500, 500)
                img.make_blob()

        def wand_convert() -> None:
            with Image(blob=photo) as img:
                img.format = "webp"
                img.make_blob()

        async def direct(fn: Callable[[], None]) -> None:
            fn()

        async def ffmpeg_scale() -> None:
            out = folder / "out.mp4"
            proc = await asyncio.create_subprocess_exec(
                "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(video), "-vf", "scale=320:-2",
                str(out))
            await proc.wait()

        port = free_port()
        config = folder / "aiport.yaml"
        config.write_text(f"server: {{port: {port}}}\nstorage: {{database_path: {folder}/db/aiport.db, "
                          f"artifacts_path: {folder}/artifacts}}\nlogging: {{level: warning, format: json}}\n")
        proc = subprocess.Popen([sys.executable, "-m", "aiport", "serve", "--config", str(config)],
                                env={**os.environ})
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(100):
                    try:
                        async with session.get(f"{url}/up") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
                rows = [
                    ("ScaleImage 1 MP png -> 500x500",
                     await mean_seconds(args.rounds, lambda: direct(wand_scale)),
                     await mean_seconds(args.rounds, lambda: call(session, url, "ScaleImage", "image", "p.png",
                                                                  photo, Width="500"))),
                    ("ConvertImage 1 MP png -> webp",
                     await mean_seconds(args.rounds, lambda: direct(wand_convert)),
                     await mean_seconds(args.rounds, lambda: call(session, url, "ConvertImage", "image", "p.png",
                                                                  photo, OutputFormat="webp"))),
                    ("ScaleVideo 5 s 640x480 -> 320",
                     await mean_seconds(max(3, args.rounds // 3), ffmpeg_scale),
                     await mean_seconds(max(3, args.rounds // 3),
                                        lambda: call(session, url, "ScaleVideo", "video", "in.mp4", video_bytes,
                                                     Width="320"))),
                ]
        finally:
            proc.terminate()
            proc.wait()
    print(f"{'operation':34} {'direct s':>9} {'aiport s':>9} {'ratio':>7}")
    for name, base, ours in rows:
        print(f"{name:34} {base:9.4f} {ours:9.4f} {ours / base:7.2f}")


if __name__ == "__main__":
    asyncio.run(main())
