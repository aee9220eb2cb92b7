"""The FFmpeg transforms, run through the plugin registry on media made with FFmpeg's lavfi sources."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiport.core.config import Config
from aiport.core.errors import BadRequest, GatewayTimeout, ValidationFailed
from aiport.core.media import MediaInput, TransformOutput, TransformRequest
from aiport.core.plugins import build_plugin_manager
from aiport.core.registry import collect
from aiport.plugins import transforms_ffmpeg


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=60)


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                          str(path)], check=True, capture_output=True, timeout=60).stdout
    data = json.loads(out)
    streams = data["streams"]
    video = next((s for s in streams if s["codec_type"] == "video"), {})
    audio = next((s for s in streams if s["codec_type"] == "audio"), {})
    return {"format": data["format"]["format_name"], "duration": float(data["format"]["duration"]),
            "vcodec": video.get("codec_name"), "acodec": audio.get("codec_name"),
            "size": (video.get("width"), video.get("height"))}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small sample files, made once: a 64x48 2 s clip with sound, a solid blue clip, a tone, a logo."""
    folder = tmp_path_factory.mktemp("media")
    clip, blue, tone = folder / "clip.mp4", folder / "blue.mp4", folder / "tone.wav"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=2", "-f", "lavfi",
           "-i", "sine=frequency=440:duration=2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-shortest", str(clip))
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:size=160x120:rate=10:duration=1", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(blue))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1:sample_rate=22050", "-c:a", "pcm_s16le", str(tone))
    from wand.color import Color
    from wand.image import Image

    logo = folder / "logo.png"
    with Image(width=100, height=50, background=Color("red")) as img:
        img.format = "png"
        logo.write_bytes(img.make_blob())
    return {"clip": clip, "blue": blue, "tone": tone, "logo": logo}


@pytest.fixture
def run(make_config: Callable[..., Config], tmp_path: Path) -> Callable[..., Any]:
    """``await run("ScaleVideo", {"width": 32}, video=path)``: the registered transform's outputs."""
    config = make_config()
    registry = collect(build_plugin_manager(config.plugins, entry_points=False), config)
    workdir = tmp_path / "work"
    workdir.mkdir()

    async def call(name: str, args: dict[str, Any], limit: float = 60, **files: Path) -> list[TransformOutput]:
        spec = registry.transforms[name]
        inputs = {field: MediaInput(field=field, path=path, filename=path.name) for field, path in files.items()}
        return await spec.run(TransformRequest(inputs=inputs, args=args, workdir=workdir, timeout=limit))

    call.workdir = workdir  # type: ignore[attr-defined]
    return call


def frame_pixel(video: Path, x: int, y: int, tmp_path: Path) -> tuple[int, int, int]:
    """The colour at ``x``,``y`` of a video's first frame."""
    from wand.image import Image

    png = tmp_path / "frame.png"
    ffmpeg("-i", str(video), "-frames:v", "1", "-update", "1", str(png))
    with Image(filename=str(png)) as img:
        c = img[x, y]
        return (c.red_int8, c.green_int8, c.blue_int8)


def near(actual: tuple[int, int, int], expected: tuple[int, int, int], tolerance: int = 24) -> bool:
    """YUV 4:2:0 round trips shift colours a little; edges of colour blocks blur by a pixel or two."""
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def test_hook_registers_the_ffmpeg_transforms(make_config: Callable[..., Config]) -> None:
    config = make_config()
    registry = collect(build_plugin_manager(config.plugins, entry_points=False), config)
    kinds = {name: registry.transforms[name].kind for name in
             ("ScaleVideo", "CropVideo", "WatermarkVideo", "ConvertVideo", "TrimVideo", "ConvertAudio")}
    assert kinds == {"ScaleVideo": "video", "CropVideo": "video", "WatermarkVideo": "video",
                     "ConvertVideo": "video", "TrimVideo": "video", "ConvertAudio": "audio"}


# --------------------------------------------------------------------------- ScaleVideo / CropVideo


async def test_scale_video_keeps_the_aspect_with_even_sides(run: Any, media: dict[str, Path]) -> None:
    [out] = await run("ScaleVideo", {"width": 33}, video=media["clip"])
    found = ffprobe(out.path)
    assert found["size"] == (32, 24) and (out.width, out.height) == (32, 24)
    assert (found["vcodec"], found["acodec"], out.ext, out.content_type) == ("h264", "aac", "mp4", "video/mp4")
    # A scale reports the input's duration (no second probe); the file may differ by codec padding.
    assert abs(found["duration"] - 2) < 0.15 and out.duration == pytest.approx(found["duration"], abs=0.1)
    [tall] = await run("ScaleVideo", {"height": 96}, video=media["clip"])
    assert ffprobe(tall.path)["size"] == (128, 96)
    [exact] = await run("ScaleVideo", {"Width": "40", "Height": "40"}, video=media["clip"])
    assert ffprobe(exact.path)["size"] == (40, 40)


async def test_scale_video_keeps_the_shown_aspect_of_a_rotated_video(run: Any, media: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    rotated = tmp_path / "portrait.mp4"  # stored 64x48, shown 48x64, as phones record
    ffmpeg("-i", str(media["clip"]), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    [out] = await run("ScaleVideo", {"width": 24}, video=rotated)
    assert ffprobe(out.path)["size"] == (24, 32)


async def test_scale_video_checks_its_args(run: Any, media: dict[str, Path]) -> None:
    with pytest.raises(ValidationFailed) as info:
        await run("ScaleVideo", {}, video=media["clip"])
    assert info.value.errors[0].field_name == "Width"
    with pytest.raises(ValidationFailed) as info:
        await run("ScaleVideo", {"width": 7681, "height": 4321}, video=media["clip"])
    assert [e.error_code for e in info.value.errors] == ["InclusiveBetween", "InclusiveBetween"]
    assert list(run.workdir.iterdir()) == []


async def test_crop_video(run: Any, media: dict[str, Path]) -> None:
    [out] = await run("CropVideo", {"x": 16, "y": 8, "width": 32, "height": 31}, video=media["clip"])
    assert ffprobe(out.path)["size"] == (32, 30)
    [clipped] = await run("CropVideo", {"x": 40, "y": 0, "width": 100, "height": 100}, video=media["clip"])
    assert ffprobe(clipped.path)["size"] == (24, 48)
    with pytest.raises(ValidationFailed) as info:
        await run("CropVideo", {"x": 64, "y": 0, "width": 8, "height": 8}, video=media["clip"])
    assert info.value.errors[0].field_name == "X"


# --------------------------------------------------------------------------- WatermarkVideo


async def test_watermark_video_is_scaled_and_placed(run: Any, media: dict[str, Path], tmp_path: Path) -> None:
    [out] = await run("WatermarkVideo", {"watermark_scale": 0.25}, video=media["blue"], watermark=media["logo"])
    assert ffprobe(out.path)["size"] == (160, 120)
    # 0.25 x 160 = 40x20 at the bottom right, 10 px in: x 110..149, y 90..109, opaque.
    assert near(frame_pixel(out.path, 130, 100, tmp_path), (255, 0, 0))
    for x, y in ((100, 100), (130, 80), (20, 20), (155, 115)):
        assert near(frame_pixel(out.path, x, y, tmp_path), (0, 0, 255)), (x, y)
    assert [p.name for p in run.workdir.iterdir()] == [out.path.name]  # the staged PNG is gone


async def test_watermark_video_top_left_half_transparent(run: Any, media: dict[str, Path], tmp_path: Path) -> None:
    args = {"position": "TopLeft", "opacity": 0.5}
    [out] = await run("WatermarkVideo", args, video=media["blue"], watermark=media["logo"])
    # 0.2 x 160 = 32x16 at (10, 10), half red over blue.
    assert near(frame_pixel(out.path, 25, 17, tmp_path), (128, 0, 128), 30)
    assert near(frame_pixel(out.path, 60, 17, tmp_path), (0, 0, 255))


async def test_watermark_video_refuses_a_bad_watermark(run: Any, media: dict[str, Path], tmp_path: Path) -> None:
    text = tmp_path / "logo.png"
    text.write_text("not a picture")
    with pytest.raises(ValidationFailed) as info:
        await run("WatermarkVideo", {}, video=media["blue"], watermark=text)
    assert info.value.errors[0].field_name == "Watermark"
    assert list(run.workdir.iterdir()) == []


# --------------------------------------------------------------------------- ConvertVideo / TrimVideo


@pytest.mark.parametrize(("fmt", "ext", "container", "vcodec", "acodec"), [
    ("mp4", "mp4", "mov,mp4,m4a,3gp,3g2,mj2", "h264", "aac"),
    ("webm", "webm", "matroska,webm", "vp9", "opus"),
    ("mov", "mov", "mov,mp4,m4a,3gp,3g2,mj2", "h264", "aac"),
    ("mkv", "mkv", "matroska,webm", "h264", "aac"),
    ("avi", "avi", "avi", "mpeg4", "mp3"),
    ("wmv", "wmv", "asf", "wmv2", "wmav2"),
    ("mpeg", "mpeg", "mpeg", "mpeg2video", "mp2"),
    ("ogg", "ogv", "ogg", "theora", "vorbis"),
])
async def test_convert_video_really_produces_every_format(run: Any, media: dict[str, Path], fmt: str, ext: str,
                                                          container: str, vcodec: str, acodec: str) -> None:
    [out] = await run("ConvertVideo", {"output_format": fmt}, video=media["clip"])
    found = ffprobe(out.path)
    assert (found["format"], found["vcodec"], found["acodec"]) == (container, vcodec, acodec)
    assert found["size"] == (64, 48) and abs(found["duration"] - 2) < 0.2
    assert out.ext == ext and out.path.suffix == f".{ext}"


async def test_convert_video_refuses_an_unknown_format(run: Any, media: dict[str, Path]) -> None:
    with pytest.raises(ValidationFailed) as info:
        await run("ConvertVideo", {"output_format": "flv"}, video=media["clip"])
    assert info.value.errors[0].field_name == "OutputFormat"


async def test_edits_keep_the_input_container(run: Any, media: dict[str, Path]) -> None:
    [webm] = await run("ConvertVideo", {"output_format": "webm"}, video=media["clip"])
    [scaled] = await run("ScaleVideo", {"width": 32}, video=webm.path)
    found = ffprobe(scaled.path)
    assert (scaled.ext, found["vcodec"], found["size"]) == ("webm", "vp9", (32, 24))


@pytest.mark.parametrize(("start", "end", "length"), [
    ("0.5", "1.5", 1.0), ("00:00.5", None, 1.5), ("0:00:01", "0:00:01.5", 0.5), (0, 1, 1.0),
])
async def test_trim_video(run: Any, media: dict[str, Path], start: Any, end: Any, length: float) -> None:
    args = {"start_time": start, "end_time": end}
    [out] = await run("TrimVideo", args, video=media["clip"])
    found = ffprobe(out.path)
    assert abs(found["duration"] - length) < 0.15, found
    assert found["vcodec"] == "h264" and found["acodec"] == "aac"


async def test_trim_video_checks_times(run: Any, media: dict[str, Path]) -> None:
    with pytest.raises(ValidationFailed) as info:
        await run("TrimVideo", {"start_time": "0:01", "end_time": "0:00.5"}, video=media["clip"])
    assert [(e.field_name, e.error_code) for e in info.value.errors] == [("EndTime", "GreaterThan")]
    with pytest.raises(ValidationFailed) as info:
        await run("TrimVideo", {"start_time": "1:75"}, video=media["clip"])
    assert info.value.errors[0].field_name == "StartTime"
    with pytest.raises(ValidationFailed) as info:
        await run("TrimVideo", {"start_time": 5}, video=media["clip"])
    assert info.value.errors[0].field_name == "StartTime"
    with pytest.raises(ValidationFailed) as info:
        await run("TrimVideo", {}, video=media["clip"])
    assert info.value.errors[0].error_code == "NotEmpty"
    assert list(run.workdir.iterdir()) == []


# --------------------------------------------------------------------------- ConvertAudio


@pytest.mark.parametrize(("fmt", "container", "codec", "content_type"), [
    ("mp3", "mp3", "mp3", "audio/mpeg"),
    ("wav", "wav", "pcm_s16le", "audio/wav"),
    ("aac", "aac", "aac", "audio/aac"),
    ("flac", "flac", "flac", "audio/flac"),
    ("ogg", "ogg", "vorbis", "audio/ogg"),
    ("m4a", "mov,mp4,m4a,3gp,3g2,mj2", "aac", "audio/mp4"),
    ("wma", "asf", "wmav2", "audio/x-ms-wma"),
])
async def test_convert_audio_really_produces_every_format(run: Any, media: dict[str, Path], fmt: str,
                                                          container: str, codec: str, content_type: str) -> None:
    [out] = await run("ConvertAudio", {"output_format": fmt}, audio=media["tone"])
    found = ffprobe(out.path)
    assert (found["format"], found["acodec"], found["vcodec"]) == (container, codec, None)
    assert abs(found["duration"] - 1) < 0.1
    assert (out.ext, out.content_type, out.width) == (fmt, content_type, None)


async def test_convert_audio_takes_the_sound_of_a_video(run: Any, media: dict[str, Path]) -> None:
    [out] = await run("ConvertAudio", {"output_format": "mp3"}, audio=media["clip"])
    found = ffprobe(out.path)
    assert (found["acodec"], found["vcodec"]) == ("mp3", None)


# --------------------------------------------------------------------------- hostile inputs


HLS = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{target}\n#EXT-X-ENDLIST\n"


@pytest.mark.parametrize("case", ["text", "hls_passwd", "hls_passwd_ts", "hls_url", "concat", "image"])
async def test_hostile_media_is_refused_with_400_and_nothing_written(
        run: Any, media: dict[str, Path], tmp_path: Path, case: str) -> None:
    secret = tmp_path / "secret.ts"
    secret.write_bytes(media["clip"].read_bytes())  # readable media a playlist could smuggle in
    name, body = {
        "text": ("clip.mp4", "just some text, no media here\n"),
        "hls_passwd": ("clip.m3u8", HLS.format(target="/etc/passwd")),
        "hls_passwd_ts": ("clip.mp4", HLS.format(target=str(secret))),
        "hls_url": ("clip.mp4", HLS.format(target="http://127.0.0.1:9/x.ts")),
        "concat": ("clip.mp4", f"ffconcat version 1.0\nfile '{secret}'\n"),
        "image": ("clip.mp4", None),
    }[case]
    src = tmp_path / name
    if body is None:
        src.write_bytes(media["logo"].read_bytes())
    else:
        src.write_text(body)
    for transform, args in (("ScaleVideo", {"width": 32}), ("ConvertVideo", {"output_format": "mp4"}),
                            ("TrimVideo", {"start_time": 0})):
        with pytest.raises(BadRequest) as info:
            await run(transform, args, video=src)
        assert info.value.status == 400 and info.value.errors[0].field_name == "Video"
        assert str(tmp_path) not in info.value.message and "/etc" not in info.value.message
    with pytest.raises(BadRequest):
        await run("ConvertAudio", {"output_format": "mp3"}, audio=src)
    assert list(run.workdir.iterdir()) == []


async def test_audio_only_is_refused_as_video_and_video_needs_audio_for_convert_audio(
        run: Any, media: dict[str, Path]) -> None:
    with pytest.raises(ValidationFailed) as info:
        await run("ScaleVideo", {"width": 32}, video=media["tone"])
    assert "no video stream" in info.value.message
    with pytest.raises(ValidationFailed) as info:
        await run("ConvertAudio", {"output_format": "mp3"}, audio=media["blue"])
    assert "no audio stream" in info.value.message


async def test_timeout_kills_ffmpeg_and_leaves_nothing(run: Any, media: dict[str, Path]) -> None:
    with pytest.raises(GatewayTimeout) as info:
        await run("ConvertVideo", {"output_format": "webm"}, limit=0.01, video=media["clip"])
    assert info.value.error_code == "Timeout"
    assert list(run.workdir.iterdir()) == []


async def test_run_tool_kills_the_process_at_the_deadline(tmp_path: Path) -> None:
    import time

    deadline = transforms_ffmpeg.Deadline("ConvertVideo", 0.2)
    started = time.monotonic()
    with pytest.raises(GatewayTimeout):
        await transforms_ffmpeg.run_tool(["sleep", "10"], deadline, {})
    assert time.monotonic() - started < 2


def test_stderr_is_scrubbed_of_server_paths() -> None:
    text = ("[hls @ 0x55f63c6de240] Opening 'file:/srv/aiport/data/spool/abc.part' for reading\n"
            "file:/srv/aiport/data/spool/abc.part: Invalid data found when processing input\n")
    short = transforms_ffmpeg._scrub(text, {"/srv/aiport/data/spool/abc.part": "clip.mp4"})
    assert short == "Opening 'clip.mp4' for reading; clip.mp4: Invalid data found when processing input"
    assert "/srv" not in transforms_ffmpeg._scrub("error at /srv/aiport/x/y.mp4 here", {})
