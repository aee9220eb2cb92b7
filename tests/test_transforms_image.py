"""The ImageMagick transforms, run through the plugin registry on images the tests draw with wand."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiport.core.config import Config
from aiport.core.errors import BadRequest, GatewayTimeout, ValidationFailed
from aiport.core.media import MediaInput, TransformOutput, TransformRequest
from aiport.core.plugins import build_plugin_manager
from aiport.core.registry import collect
from aiport.plugins import imaging


@pytest.fixture
def run(make_config: Callable[..., Config], tmp_path: Path) -> Callable[..., Any]:
    """``await run("ScaleImage", {"width": 32}, image=path)``: the registered transform's outputs."""
    config = make_config()
    registry = collect(build_plugin_manager(config.plugins, entry_points=False), config)
    workdir = tmp_path / "work"
    workdir.mkdir()

    async def call(name: str, args: dict[str, Any], limit: float = 30, **files: Path) -> list[TransformOutput]:
        spec = registry.transforms[name]
        inputs = {field: MediaInput(field=field, path=path, filename=path.name) for field, path in files.items()}
        return await spec.run(TransformRequest(inputs=inputs, args=args, workdir=workdir, timeout=limit))

    call.workdir = workdir  # type: ignore[attr-defined]
    return call


def draw(path: Path, width: int, height: int, fill: str = "blue", fmt: str | None = None,
         pseudo: str | None = None) -> Path:
    """Write a ``width`` x ``height`` image of one colour (or an ImageMagick pseudo-image)."""
    from wand.color import Color
    from wand.image import Image

    if pseudo:
        img = Image(pseudo=pseudo, width=width, height=height)
    else:
        img = Image(width=width, height=height, background=Color(fill))
    with img:
        img.format = fmt or path.suffix.lstrip(".")
        path.write_bytes(img.make_blob())
    return path


def halves(path: Path) -> Path:
    """A 64x48 PNG: red left half, blue right half."""
    from wand.color import Color
    from wand.image import Image

    with Image(width=64, height=48, background=Color("red")) as img, \
            Image(width=32, height=48, background=Color("blue")) as right:
        img.composite(right, left=32, top=0)
        img.format = "png"
        path.write_bytes(img.make_blob())
    return path


def inspect(path: Path) -> dict[str, Any]:
    """Format, size and frame count of an image file, read back with wand."""
    from wand.image import Image

    data = path.read_bytes()
    with Image(blob=data) as img:
        return {"magick": imaging.sniff(data[:32]), "size": img.size, "frames": len(img.sequence)}


def pixel(path: Path, x: int, y: int) -> tuple[int, int, int]:
    from wand.image import Image

    with Image(filename=str(path)) as img:
        c = img[x, y]
        return (c.red_int8, c.green_int8, c.blue_int8)


def close(actual: tuple[int, int, int], expected: tuple[int, int, int], tolerance: int = 3) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def test_hook_registers_the_image_transforms(make_config: Callable[..., Config]) -> None:
    config = make_config()
    registry = collect(build_plugin_manager(config.plugins, entry_points=False), config)
    for name in ("ScaleImage", "CropImage", "WatermarkImage", "ConvertImage"):
        spec = registry.transforms[name]
        assert spec.kind == "image" and spec.description
        assert registry.transforms.owners[name] == "transforms_image"


# --------------------------------------------------------------------------- ScaleImage


async def test_scale_with_width_only_keeps_the_aspect_ratio(run: Any, tmp_path: Path) -> None:
    src = draw(tmp_path / "in.png", 64, 48, pseudo="gradient:red-blue")
    [out] = await run("ScaleImage", {"width": 32}, image=src)
    assert inspect(out.path) == {"magick": "PNG", "size": (32, 24), "frames": 1}
    assert (out.ext, out.content_type, out.width, out.height) == ("png", "image/png", 32, 24)
    assert out.path.parent == run.workdir


async def test_scale_with_height_only_keeps_the_aspect_ratio_and_the_jpeg_format(run: Any, tmp_path: Path) -> None:
    src = draw(tmp_path / "in.jpg", 64, 48, pseudo="gradient:red-blue")
    [out] = await run("ScaleImage", {"height": 96}, image=src)
    assert inspect(out.path) == {"magick": "JPEG", "size": (128, 96), "frames": 1}
    assert (out.ext, out.content_type) == ("jpg", "image/jpeg")


async def test_scale_with_both_sides_is_exact(run: Any, tmp_path: Path) -> None:
    src = draw(tmp_path / "in.webp", 64, 48)
    [out] = await run("ScaleImage", {"Width": "10", "Height": 30}, image=src)
    assert inspect(out.path) == {"magick": "WEBP", "size": (10, 30), "frames": 1}


@pytest.mark.parametrize(("ext", "magick"), [
    ("png", "PNG"), ("jpg", "JPEG"), ("gif", "GIF"), ("bmp", "BMP"), ("tiff", "TIFF"), ("webp", "WEBP"),
    ("avif", "AVIF"), ("heic", "HEIC"),
])
async def test_every_input_format_is_read_and_kept(run: Any, tmp_path: Path, ext: str, magick: str) -> None:
    src = draw(tmp_path / f"in.{ext}", 64, 48, pseudo="gradient:red-blue")
    [out] = await run("ScaleImage", {"width": 32}, image=src)
    assert inspect(out.path) == {"magick": magick, "size": (32, 24), "frames": 1}
    assert out.ext == ext


async def test_scale_keeps_every_frame_of_an_animated_gif(run: Any, tmp_path: Path) -> None:
    from wand.color import Color
    from wand.image import Image

    src = tmp_path / "anim.gif"
    with Image(width=64, height=48, background=Color("red")) as img:
        img.sequence.append(Image(width=64, height=48, background=Color("blue")))
        img.format = "gif"
        src.write_bytes(img.make_blob())
    [out] = await run("ScaleImage", {"width": 16}, image=src)
    assert inspect(out.path) == {"magick": "GIF", "size": (16, 12), "frames": 2}


async def test_scale_needs_a_side_and_checks_ranges(run: Any, tmp_path: Path) -> None:
    src = draw(tmp_path / "in.png", 64, 48)
    with pytest.raises(ValidationFailed) as info:
        await run("ScaleImage", {}, image=src)
    assert info.value.errors[0].field_name == "Width" and info.value.errors[0].error_code == "NotEmpty"
    with pytest.raises(ValidationFailed) as info:
        await run("ScaleImage", {"width": "wide", "height": 0}, image=src)
    assert [(e.field_name, e.error_code) for e in info.value.errors] == [
        ("Width", "InvalidValue"), ("Height", "InclusiveBetween")]
    assert info.value.status == 400
    with pytest.raises(ValidationFailed) as info:
        await run("ScaleImage", {"width": 10})
    assert info.value.errors[0].field_name == "Image"
    assert list(run.workdir.iterdir()) == []


# --------------------------------------------------------------------------- CropImage


async def test_crop_cuts_the_rectangle(run: Any, tmp_path: Path) -> None:
    src = halves(tmp_path / "in.png")
    [out] = await run("CropImage", {"x": 32, "y": 8, "width": 16, "height": 20}, image=src)
    assert inspect(out.path)["size"] == (16, 20)
    assert close(pixel(out.path, 0, 0), (0, 0, 255)) and close(pixel(out.path, 15, 19), (0, 0, 255))
    [left] = await run("CropImage", {"x": 0, "y": 0, "width": 8, "height": 8}, image=src)
    assert close(pixel(left.path, 4, 4), (255, 0, 0))


async def test_crop_is_clipped_to_the_image_and_refuses_a_start_outside(run: Any, tmp_path: Path) -> None:
    src = halves(tmp_path / "in.png")
    [out] = await run("CropImage", {"x": 60, "y": 40, "width": 100, "height": 100}, image=src)
    assert (out.width, out.height) == (4, 8) and inspect(out.path)["size"] == (4, 8)
    with pytest.raises(ValidationFailed) as info:
        await run("CropImage", {"x": 64, "y": 0, "width": 10, "height": 10}, image=src)
    assert info.value.errors[0].field_name == "X"
    with pytest.raises(ValidationFailed) as info:
        await run("CropImage", {"x": 1}, image=src)
    assert {e.field_name for e in info.value.errors} == {"Y", "Width", "Height"}


# --------------------------------------------------------------------------- WatermarkImage

BLUE, RED = (0, 0, 255), (255, 0, 0)


async def test_watermark_scale_opacity_and_position_are_applied(run: Any, tmp_path: Path) -> None:
    base = draw(tmp_path / "base.png", 200, 100, "blue")
    mark = draw(tmp_path / "mark.png", 100, 50, "red")  # drawn unscaled it would cover x 90..190
    [out] = await run("WatermarkImage", {}, image=base, watermark=mark)
    assert inspect(out.path) == {"magick": "PNG", "size": (200, 100), "frames": 1}
    # Defaults: 0.2 x 200 = 40x20 at the bottom right, 10 px in: x 150..189, y 70..89, half opaque.
    inside = pixel(out.path, 170, 80)
    assert close(inside, (128, 0, 127), 4), inside
    assert close(pixel(out.path, 151, 71), (128, 0, 127), 4)
    for outside in ((148, 80), (170, 68), (191, 80), (170, 91), (100, 60), (5, 5)):
        assert pixel(out.path, *outside) == BLUE, outside


async def test_watermark_top_left_opaque_and_larger(run: Any, tmp_path: Path) -> None:
    base = draw(tmp_path / "base.png", 200, 100, "blue")
    mark = draw(tmp_path / "mark.png", 20, 10, "red")
    args = {"position": "topLeft", "opacity": 1, "watermark_scale": 0.5}
    [out] = await run("WatermarkImage", args, image=base, watermark=mark)
    # 0.5 x 200 = 100x50 at (10, 10).
    assert pixel(out.path, 10, 10) == RED and pixel(out.path, 109, 59) == RED
    assert pixel(out.path, 9, 30) == BLUE and pixel(out.path, 110, 30) == BLUE and pixel(out.path, 50, 60) == BLUE


async def test_watermark_center_with_low_opacity_keeps_the_jpeg_format(run: Any, tmp_path: Path) -> None:
    base = draw(tmp_path / "base.jpg", 200, 100, "blue")
    mark = draw(tmp_path / "mark.png", 40, 40, "red")
    [out] = await run("WatermarkImage", {"Position": "Center", "Opacity": "0.25"}, image=base, watermark=mark)
    assert inspect(out.path)["magick"] == "JPEG" and out.ext == "jpg"
    # 40x40 centred: x 80..119, y 30..69; 25 % red over blue (JPEG: a little tolerance).
    assert close(pixel(out.path, 100, 50), (64, 0, 191), 12)
    assert close(pixel(out.path, 20, 50), BLUE, 12)


async def test_watermark_checks_its_args_and_files(run: Any, tmp_path: Path) -> None:
    base = draw(tmp_path / "base.png", 64, 48)
    text = tmp_path / "mark.png"
    text.write_text("not an image")
    with pytest.raises(ValidationFailed) as info:
        await run("WatermarkImage", {"position": "Middle", "opacity": 2, "watermark_scale": 0}, image=base,
                  watermark=base)
    assert [e.field_name for e in info.value.errors] == ["Position", "Opacity", "WatermarkScale"]
    with pytest.raises(ValidationFailed) as info:
        await run("WatermarkImage", {}, image=base, watermark=text)
    assert info.value.errors[0].field_name == "Watermark"
    assert list(run.workdir.iterdir()) == []


# --------------------------------------------------------------------------- ConvertImage


@pytest.mark.parametrize(("fmt", "magick", "content_type"), [
    ("jpg", "JPEG", "image/jpeg"), ("png", "PNG", "image/png"), ("gif", "GIF", "image/gif"),
    ("bmp", "BMP", "image/bmp"), ("tiff", "TIFF", "image/tiff"), ("webp", "WEBP", "image/webp"),
    ("avif", "AVIF", "image/avif"),
])
async def test_convert_really_produces_every_format(run: Any, tmp_path: Path, fmt: str, magick: str,
                                                     content_type: str) -> None:
    src = draw(tmp_path / "in.png", 64, 48, pseudo="gradient:red-blue")
    [out] = await run("ConvertImage", {"output_format": fmt.upper()}, image=src)
    assert (out.ext, out.content_type) == (fmt, content_type)
    assert out.path.suffix == f".{fmt}"
    found = inspect(out.path)
    assert found["magick"] == magick and found["size"] == (64, 48)


async def test_convert_to_jpg_flattens_transparency_onto_white(run: Any, tmp_path: Path) -> None:
    src = draw(tmp_path / "in.png", 32, 32, "transparent")
    [out] = await run("ConvertImage", {"output_format": "jpeg"}, image=src)
    assert close(pixel(out.path, 16, 16), (255, 255, 255), 2)


async def test_convert_refuses_an_unknown_format(run: Any, tmp_path: Path) -> None:
    src = draw(tmp_path / "in.png", 8, 8)
    with pytest.raises(ValidationFailed) as info:
        await run("ConvertImage", {"output_format": "svg"}, image=src)
    assert info.value.errors[0].field_name == "OutputFormat"
    assert "does not include 'svg'" in info.value.errors[0].message


# --------------------------------------------------------------------------- hostile inputs


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` but holds a few bytes of pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("case", ["text", "truncated", "bomb30k", "bomb144mp", "svg"])
async def test_hostile_images_fail_fast_with_400_and_write_nothing(run: Any, tmp_path: Path, case: str) -> None:
    good = draw(tmp_path / "good.png", 64, 48, pseudo="gradient:red-blue").read_bytes()
    data = {
        "text": b"hello, I am not an image\n" * 10,
        "truncated": good[: len(good) // 2],
        "bomb30k": png_header(30000, 30000),
        "bomb144mp": png_header(12000, 12000),
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg"><image href="file:///etc/passwd"/></svg>',
    }[case]
    src = tmp_path / "in.png"
    src.write_bytes(data)
    started = time.monotonic()
    for name, args in (("ScaleImage", {"width": 10}), ("ConvertImage", {"output_format": "jpg"})):
        with pytest.raises(BadRequest) as info:
            await run(name, args, image=src)
        assert info.value.status == 400
        assert str(tmp_path) not in info.value.message
    assert time.monotonic() - started < 5
    assert list(run.workdir.iterdir()) == []


def test_policy_allows_only_the_needed_coders_in_a_fresh_process() -> None:
    script = (
        "import aiport.plugins.imaging as t\n"
        "t.load_wand()\n"
        "import wand.resource\n"
        "from wand.image import Image\n"
        "from wand.exceptions import PolicyError\n"
        "print(wand.resource.limits['width'], wand.resource.limits['area'])\n"
        "for spec in ('text:/etc/passwd', 'msl:/dev/null', 'label:x', 'https://example.com/x.png'):\n"
        "    try:\n"
        "        Image(filename=spec).close()\n"
        "    except PolicyError:\n"
        "        print('refused')\n"
        "    except Exception as exc:\n"
        "        print('error', type(exc).__name__)\n"
        "    else:\n"
        "        print('READ')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MAGICK_CONFIGURE_PATH"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60,
                          check=True)
    lines = done.stdout.split("\n")
    assert lines[0] == "16000 64000000"
    assert lines[1:5] == ["refused"] * 4, done.stdout + done.stderr


def test_the_policy_is_set_up_by_image_work_not_by_import_or_a_disabled_plugin(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from aiport.core import create_app, parse_config\n"
        "import aiport.plugins.transforms_image, aiport.plugins.transforms_ffmpeg\n"
        f"storage = {{'database_path': {str(tmp_path / 'db')!r}, 'artifacts_path': {str(tmp_path / 'a')!r}}}\n"
        "config = parse_config({'storage': storage, 'plugins': {'disable': ['transforms_image']}}, environ={})\n"
        "app = create_app(config, environ={})\n"
        "print(os.environ.get('MAGICK_CONFIGURE_PATH'), 'wand.api' in sys.modules)\n"
        "from aiport.plugins import imaging\n"
        "imaging.load_wand()\n"
        "print(os.environ['MAGICK_CONFIGURE_PATH'].split(os.pathsep)[0] == str(imaging.POLICY_DIR))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MAGICK_CONFIGURE_PATH"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60,
                          check=True)
    assert done.stdout.split("\n")[:2] == ["None False", "True"], done.stdout + done.stderr


async def test_a_slow_transform_times_out_and_writes_nothing(tmp_path: Path) -> None:
    finished = threading.Event()
    seen: list[bool] = []

    def slow(cancelled: threading.Event) -> None:
        time.sleep(0.3)
        seen.append(cancelled.is_set())
        finished.set()

    with pytest.raises(GatewayTimeout) as info:
        await imaging.run_in_pool("ScaleImage", 0.05, slow)
    assert info.value.error_code == "Timeout"
    await asyncio.to_thread(finished.wait, 5)
    assert seen == [True]  # the worker learns that nobody waits for it any more
