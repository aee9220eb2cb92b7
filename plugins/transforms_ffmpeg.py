"""Video and audio transforms with FFmpeg: ScaleVideo, CropVideo, WatermarkVideo, ConvertVideo,
TrimVideo and ConvertAudio.

Every input is probed with ``ffprobe`` first and refused with a 400 when it is not
media, has no stream of the needed kind, or is implausibly large. ``ffmpeg`` and
``ffprobe`` run as child processes (never through a shell) with:

- ``-protocol_whitelist file,pipe`` and inputs named as ``file:...``, so no input can
  make FFmpeg open a URL (HTTP, FTP, RTMP, ...);
- ``-format_whitelist`` naming the media containers only, so playlist and script
  demuxers (HLS, concat, ...) are never used: an "MP4" that is really an HLS
  playlist naming ``/etc/passwd`` is refused instead of read;
- ``-nostdin``, and a deadline after which the process is killed;
- stderr captured for the error message, trimmed, with server paths reduced to
  file names.

Every output format is produced with a codec pair that its container really holds
in Debian's FFmpeg (see :data:`VIDEO_FORMATS`, :data:`AUDIO_FORMATS`); AI Server
advertised formats it could not produce. All video output is 4:2:0, so widths and
heights are even: odd sizes asked for are rounded down by one pixel.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal

import attrs
from aiport.core import hookimpl
from aiport.core.errors import BadRequest, GatewayTimeout, InternalError, ServiceUnavailable
from aiport.core.http.dto import field
from aiport.core.media import (
    Args,
    MediaInput,
    TransformOutput,
    TransformRequest,
    bad_input,
    output_path,
)
from aiport.core.registry import TransformSpec
from aiport.plugins import imaging

#: Demuxers FFmpeg may use for uploaded media (``-format_whitelist``): real
#: containers only, no playlists (hls, dash), scripts (concat, ffconcat) or images.
INPUT_FORMATS = ("mov", "mp4", "matroska", "webm", "avi", "asf", "mpeg", "mpegts", "ogg", "flv",
                 "mp3", "wav", "aac", "flac", "aiff", "w64", "caf")
#: Protocols FFmpeg may open.
PROTOCOLS = "file,pipe"

#: Largest video frame accepted as input or produced, in pixels (8K UHD), and longest side.
MAX_VIDEO_PIXELS = 7680 * 4320
MAX_VIDEO_SIDE = 8192
#: Stderr kept for an error message.
_STDERR_LINES = 6
_STDERR_CHARS = 600

_H264 = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "23")
_AAC = ("-c:a", "aac", "-b:a", "128k")


@attrs.frozen
class Container:
    """An output format: FFmpeg muxer, extension, content type and the codecs written into it."""

    ext: str
    muxer: str
    content_type: str
    video: tuple[str, ...] = ()
    audio: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()


#: ConvertVideo's ``OutputFormat`` values -> how each is written.
VIDEO_FORMATS: dict[str, Container] = {
    "mp4": Container("mp4", "mp4", "video/mp4", _H264, _AAC, ("-movflags", "+faststart")),
    "webm": Container("webm", "webm", "video/webm",
                      # realtime/cpu-used 8: VP9's default "good" deadline is ~50x slower.
                      ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1",
                       "-b:v", "0", "-crf", "33"),
                      ("-c:a", "libopus", "-b:a", "96k")),
    "mov": Container("mov", "mov", "video/quicktime", _H264, _AAC, ("-movflags", "+faststart")),
    "mkv": Container("mkv", "matroska", "video/x-matroska", _H264, _AAC),
    "avi": Container("avi", "avi", "video/x-msvideo", ("-c:v", "mpeg4", "-q:v", "4", "-vtag", "XVID"),
                     ("-c:a", "libmp3lame", "-q:a", "4")),
    "wmv": Container("wmv", "asf", "video/x-ms-wmv", ("-c:v", "wmv2", "-q:v", "4"),
                     ("-c:a", "wmav2", "-b:a", "128k")),
    "mpeg": Container("mpeg", "mpeg", "video/mpeg", ("-c:v", "mpeg2video", "-q:v", "4"),
                      ("-c:a", "mp2", "-b:a", "192k")),
    # Theora + Vorbis in Ogg; named .ogv, the extension for Ogg *video*.
    "ogg": Container("ogv", "ogg", "video/ogg", ("-c:v", "libtheora", "-q:v", "7"),
                     ("-c:a", "libvorbis", "-q:a", "4")),
}
_VIDEO_ALIASES = {"mpg": "mpeg", "ogv": "ogg", "m4v": "mp4", "qt": "mov"}

#: ConvertAudio's ``OutputFormat`` values -> how each is written.
AUDIO_FORMATS: dict[str, Container] = {
    "mp3": Container("mp3", "mp3", "audio/mpeg", audio=("-c:a", "libmp3lame", "-q:a", "4")),
    "wav": Container("wav", "wav", "audio/wav", audio=("-c:a", "pcm_s16le")),
    "aac": Container("aac", "adts", "audio/aac", audio=_AAC),
    "flac": Container("flac", "flac", "audio/flac", audio=("-c:a", "flac")),
    "ogg": Container("ogg", "ogg", "audio/ogg", audio=("-c:a", "libvorbis", "-q:a", "4")),
    "m4a": Container("m4a", "ipod", "audio/mp4", audio=_AAC, extra=("-movflags", "+faststart")),
    "wma": Container("wma", "asf", "audio/x-ms-wma", audio=("-c:a", "wmav2", "-b:a", "128k")),
}


# --------------------------------------------------------------------------- running the tools


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServiceUnavailable(f"Video and audio transforms need FFmpeg: install the ffmpeg package ({name}).")
    return path


def _scrub(text: str, names: Mapping[str, str]) -> str:
    """Stderr fit for a client: known paths replaced by file names, others by their last part, trimmed."""
    for path, name in sorted(names.items(), key=lambda item: -len(item[0])):
        text = text.replace(path, name)
    text = text.replace("file:", "")
    text = re.sub(r"(?<![\w.])/(?:[^\s'\"/]+/)+([^\s'\"/]+)", r"\1", text)
    text = re.sub(r"\[[^\]\[@]+ @ 0x[0-9a-f]+\] ?", "", text)  # "[hls @ 0x55..] " log prefixes
    text = re.sub(r"Format not on whitelist '[^']*'", "not an accepted media container", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    short = "; ".join(lines[-_STDERR_LINES:])
    return short if len(short) <= _STDERR_CHARS else "..." + short[-_STDERR_CHARS:]


class ToolFailed(Exception):
    """FFmpeg or ffprobe exited with an error; ``message`` is the scrubbed stderr."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Deadline:
    """The time left of a transform's timeout, shared by its probe and encode steps."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.seconds = seconds
        self._end = asyncio.get_running_loop().time() + seconds

    def left(self) -> float:
        left = self._end - asyncio.get_running_loop().time()
        if left <= 0:
            raise self.expired()
        return left

    def expired(self) -> GatewayTimeout:
        return GatewayTimeout(f"{self.name} did not finish within {self.seconds:g} s.", error_code="Timeout")


async def run_tool(argv: Sequence[str], deadline: Deadline, names: Mapping[str, str]) -> bytes:
    """Run ``argv`` (no shell), returning stdout; kill it at the deadline or on cancellation.

    Raises :class:`ToolFailed` with scrubbed stderr on a non-zero exit.
    """
    limit = deadline.left()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), limit)
    except BaseException as exc:
        with suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        if isinstance(exc, TimeoutError):
            raise deadline.expired() from None
        raise
    if proc.returncode != 0:
        message = _scrub(stderr.decode("utf-8", "replace"), names)
        raise ToolFailed(message or f"exit status {proc.returncode}")
    return stdout


def _input_args(path: Path, formats: Iterable[str] = INPUT_FORMATS, fmt: str | None = None) -> list[str]:
    """The options and ``-i`` for one input, locked to local files and the given demuxers."""
    args = ["-protocol_whitelist", PROTOCOLS, "-format_whitelist", ",".join(formats)]
    if fmt:
        args += ["-f", fmt]
    # "file:" so that a name with a colon is never taken for a protocol.
    return [*args, "-i", f"file:{path.resolve()}"]


# --------------------------------------------------------------------------- probing


@attrs.frozen
class Probe:
    """What ffprobe says about a file."""

    format_name: str
    duration: float | None
    #: The first real video stream (cover art excluded) and the first audio stream, as ffprobe's dicts.
    video: Mapping[str, Any] | None
    audio: Mapping[str, Any] | None

    @property
    def rotated(self) -> bool:
        """Whether the video is stored a quarter turn from how it is shown (phone videos often are).

        FFmpeg turns such frames upright before filtering, so sizes are those shown.
        """
        video = self.video or {}
        angles = [video.get("tags", {}).get("rotate")]
        angles += [d.get("rotation") for d in video.get("side_data_list") or [] if isinstance(d, Mapping)]
        for angle in angles:
            try:
                quarter_turn = round(abs(float(angle))) % 180 == 90
            except (TypeError, ValueError, OverflowError):
                continue
            if quarter_turn:
                return True
        return False

    @property
    def width(self) -> int:
        """Width of the frames as shown (after rotation)."""
        key = "height" if self.rotated else "width"
        return int((self.video or {}).get(key) or 0)

    @property
    def height(self) -> int:
        """Height of the frames as shown (after rotation)."""
        key = "width" if self.rotated else "height"
        return int((self.video or {}).get(key) or 0)


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and number >= 0 else None


def parse_probe(data: Mapping[str, Any]) -> Probe:
    """A :class:`Probe` from ffprobe's ``-show_format -show_streams`` JSON."""
    fmt = data.get("format") or {}
    streams = data.get("streams") or []
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not (s.get("disposition") or {}).get("attached_pic")), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = _float(fmt.get("duration"))
    if duration is None:
        duration = max((d for s in streams if (d := _float(s.get("duration"))) is not None), default=None)
    return Probe(format_name=str(fmt.get("format_name") or ""), duration=duration, video=video, audio=audio)


async def probe(path: Path, deadline: Deadline, *, label: str, names: Mapping[str, str],
                formats: Iterable[str] = INPUT_FORMATS) -> Probe:
    """Probe ``path``; :class:`ToolFailed` when ffprobe cannot read it as media."""
    argv = [_tool("ffprobe"), "-v", "error", "-hide_banner", "-print_format", "json", "-show_format",
            "-show_streams", *_input_args(path, formats)]
    out = await run_tool(argv, deadline, names)
    try:
        data = json.loads(out or b"{}")
    except ValueError:
        raise ToolFailed(f"ffprobe wrote no readable report for {label}") from None
    return parse_probe(data)


async def probe_input(source: MediaInput, deadline: Deadline, *, need: str) -> Probe:
    """Probe an uploaded input and refuse it (400) unless it has a ``need`` stream (video/audio)."""
    names = {str(source.path.resolve()): source.filename or source.field}
    try:
        found = await probe(source.path, deadline, label=source.field, names=names)
    except ToolFailed as exc:
        raise bad_input(source.field, f"The {source.field} file is not a media file FFmpeg can read "
                                      f"({exc.message}).") from None
    if need == "video":
        if found.video is None:
            raise bad_input(source.field, f"The {source.field} file has no video stream.")
        w, h = found.width, found.height
        if w < 1 or h < 1 or w > MAX_VIDEO_SIDE or h > MAX_VIDEO_SIDE or w * h > MAX_VIDEO_PIXELS:
            raise bad_input(source.field, f"The {source.field} is {w}x{h}; videos may be at most 7680x4320.")
    elif need == "audio" and found.audio is None:
        raise bad_input(source.field, f"The {source.field} file has no audio stream.")
    return found


# --------------------------------------------------------------------------- encoding


def _even(n: int) -> int:
    return max(2, n - n % 2)


def kept_format(source: MediaInput, found: Probe) -> str:
    """The :data:`VIDEO_FORMATS` key an edited video is written in: its own format where possible."""
    names = set(found.format_name.split(","))
    ext = _VIDEO_ALIASES.get(source.extension, source.extension)
    by_demuxer = {"mp4": "mov", "mov": "mov", "webm": "matroska", "mkv": "matroska", "avi": "avi",
                  "wmv": "asf", "mpeg": "mpeg", "ogg": "ogg"}
    if ext in VIDEO_FORMATS and by_demuxer[ext] in names:
        return ext
    codec = str((found.video or {}).get("codec_name", ""))
    if "matroska" in names:
        return "webm" if codec in ("vp8", "vp9", "av1") else "mkv"
    for demuxer, fmt in (("avi", "avi"), ("asf", "wmv"), ("mpeg", "mpeg"), ("ogg", "ogg")):
        if demuxer in names:
            return fmt
    return "mp4"


async def encode(request: TransformRequest, name: str, source: MediaInput, found: Probe, container: Container,
                 deadline: Deadline, *, graph: str | None, before_input: Sequence[str] = (),
                 after_input: Sequence[str] = (), extra_inputs: Sequence[Path] = (),
                 audio_only: bool = False, size: tuple[int, int] | None = None) -> TransformOutput:
    """Run one FFmpeg encode of ``source`` into a new file in the workdir and measure the result.

    ``graph`` is a filter graph reading ``[0:N]`` (the video stream, passed as
    ``{v}``) and the extra inputs, ending in ``[v]``. Nothing is left behind on failure.
    When the caller already knows the output frame ``size`` (a scale), the output is
    not probed again (a second ffprobe costs more than a short encode's HTTP round
    trip); its reported duration is then the input's, within codec padding.
    """
    target = output_path(request.workdir, container.ext, name.lower())
    names = {str(source.path.resolve()): source.filename or source.field, str(target): target.name}
    names.update({str(p.resolve()): p.name for p in extra_inputs})
    argv = [_tool("ffmpeg"), "-hide_banner", "-nostdin", "-v", "error", "-n", *before_input,
            *_input_args(source.path)]
    for extra in extra_inputs:
        argv += _input_args(extra, ("png_pipe",), "png_pipe")
    if audio_only:
        assert found.audio is not None
        argv += ["-map", f"0:{found.audio['index']}", "-vn", "-sn", "-dn", *container.audio]
    else:
        assert found.video is not None and graph is not None
        argv += ["-filter_complex", graph.replace("{v}", f"[0:{found.video['index']}]"), "-map", "[v]",
                 *container.video, "-pix_fmt", "yuv420p"]
        if found.audio is not None:
            argv += ["-map", f"0:{found.audio['index']}", *container.audio]
        argv += ["-sn", "-dn"]
    argv += [*after_input, *container.extra, "-f", container.muxer, f"file:{target}"]
    try:
        await run_tool(argv, deadline, names)
        if size is not None and not audio_only:
            if not await asyncio.to_thread(lambda: target.is_file() and target.stat().st_size > 0):
                raise ToolFailed("ffmpeg wrote no output")
            return TransformOutput(path=target, ext=container.ext, content_type=container.content_type,
                                   width=size[0], height=size[1], duration=found.duration)
        result = await probe(target, deadline, label="output", names=names)
    except ToolFailed as exc:
        with suppress(OSError):
            target.unlink()
        raise BadRequest(f"{name} failed: {exc.message}", error_code="TransformFailed") from None
    except BaseException:
        with suppress(OSError):
            target.unlink()
        raise
    if not audio_only and result.video is None:
        with suppress(OSError):
            target.unlink()
        raise InternalError(f"{name} wrote no video stream.")
    return TransformOutput(path=target, ext=container.ext, content_type=container.content_type,
                           width=result.width or None, height=result.height or None, duration=result.duration)


def _even_graph(found: Probe) -> str:
    """A filter that makes odd frame sizes even (4:2:0 needs it), or ``null`` when they already are."""
    if found.width % 2 or found.height % 2:
        return "scale=trunc(iw/2)*2:trunc(ih/2)*2"
    return "null"


# --------------------------------------------------------------------------- requests

Position = Literal["TopLeft", "TopRight", "BottomLeft", "BottomRight", "Center"]
OutputVideoFormat = Literal["mp4", "mov", "webm", "mkv", "avi", "wmv", "mpeg", "ogg"]
OutputAudioFormat = Literal["mp3", "wav", "aac", "flac", "ogg", "m4a", "wma"]


@attrs.define
class ScaleVideoFields:
    """ScaleVideo's arguments: one side keeps the aspect ratio (4:2:0 output: even sides)."""

    width: int | None = field(ge=2, le=7680)
    height: int | None = field(ge=2, le=4320)


@attrs.define
class CropVideoFields:
    """The rectangle CropVideo cuts out (clipped to the frame; sides at least 2 for 4:2:0)."""

    x: int = field(required=True, ge=0)
    y: int = field(required=True, ge=0)
    width: int = field(required=True, ge=2)
    height: int = field(required=True, ge=2)


@attrs.define
class WatermarkVideoFields:
    """Where and how strongly WatermarkVideo overlays its watermark (opaque by default, as AI Server)."""

    position: Position = field(default="BottomRight")
    opacity: float = field(default=1.0, ge=0, le=1)
    watermark_scale: float = field(default=0.2, gt=0, le=1)


@attrs.define
class ConvertVideoFields:
    """The format ConvertVideo writes."""

    output_format: OutputVideoFormat = field(required=True)


@attrs.define
class TrimVideoFields:
    """The part of the video TrimVideo keeps."""

    start_time: str = field(required=True, max_length=20, description="Seconds or [h:]mm:ss[.fff]")
    end_time: str | None = field(max_length=20)


@attrs.define
class ConvertAudioFields:
    """The format ConvertAudio writes."""

    output_format: OutputAudioFormat = field(required=True)


# --------------------------------------------------------------------------- the transforms


async def scale_video(request: TransformRequest) -> list[TransformOutput]:
    """ScaleVideo: resize to ``Width`` (≤7680) and/or ``Height`` (≤4320); a missing side keeps the aspect."""
    params = request.parse(ScaleVideoFields)
    width, height = params.width, params.height
    if width is None and height is None:
        need = Args({})
        need.error("width", "NotEmpty", "must not be empty: give Width, Height or both.")
        need.check()
    source = request.input("video")
    deadline = Deadline("ScaleVideo", request.timeout)
    found = await probe_input(source, deadline, need="video")
    if width and height:
        w, h = width, height
    elif width:
        w, h = width, round(found.height * width / found.width)
    else:
        assert height is not None
        w, h = round(found.width * height / found.height), height
    w, h = _even(w), _even(h)
    if w > MAX_VIDEO_SIDE or h > MAX_VIDEO_SIDE or w * h > MAX_VIDEO_PIXELS:
        raise BadRequest(f"The scaled video would be {w}x{h}; videos may be at most 7680x4320.")
    output = await encode(request, "ScaleVideo", source, found, VIDEO_FORMATS[kept_format(source, found)],
                          deadline, graph=f"{{v}}scale={w}:{h}[v]", size=(w, h))
    return [output]


async def crop_video(request: TransformRequest) -> list[TransformOutput]:
    """CropVideo: the ``X``,``Y``,``Width``x``Height`` rectangle, clipped to the frame (even sizes)."""
    params = request.parse(CropVideoFields)
    x, y, width, height = params.x, params.y, params.width, params.height
    source = request.input("video")
    deadline = Deadline("CropVideo", request.timeout)
    found = await probe_input(source, deadline, need="video")
    bounds = Args({})
    if x > found.width - 2:
        bounds.error("X", "InclusiveBetween", f"must be less than the video width ({found.width}) minus 1.")
    if y > found.height - 2:
        bounds.error("Y", "InclusiveBetween", f"must be less than the video height ({found.height}) minus 1.")
    bounds.check()
    w, h = _even(min(width, found.width - x)), _even(min(height, found.height - y))
    output = await encode(request, "CropVideo", source, found, VIDEO_FORMATS[kept_format(source, found)],
                          deadline, graph=f"{{v}}crop={w}:{h}:{x}:{y}[v]")
    return [output]


#: ``Position`` -> FFmpeg overlay coordinates with a 10 px inset (as AI Server).
OVERLAY_POSITIONS: dict[str, str] = {
    "TopLeft": "10:10",
    "TopRight": "main_w-overlay_w-10:10",
    "BottomLeft": "10:main_h-overlay_h-10",
    "BottomRight": "main_w-overlay_w-10:main_h-overlay_h-10",
    "Center": "(main_w-overlay_w)/2:(main_h-overlay_h)/2",
}


async def watermark_video(request: TransformRequest) -> list[TransformOutput]:
    """WatermarkVideo: overlay the ``watermark`` image on ``video`` at ``Position`` (default
    BottomRight, 10 px inset), ``WatermarkScale`` x the video's width wide (default .2),
    at ``Opacity`` (default 1: AI Server drew it opaque).

    The watermark is decoded and scaled by ImageMagick with the image transforms'
    safety checks, then handed to FFmpeg as a PNG.
    """
    params = request.parse(WatermarkVideoFields)
    source, mark_input = request.input("video"), request.input("watermark")
    deadline = Deadline("WatermarkVideo", request.timeout)
    found = await probe_input(source, deadline, need="video")
    mark_path = output_path(request.workdir, "png", "watermark-input")

    def prepare(cancelled: Any) -> None:
        with imaging.prepare_watermark(mark_input.path, mark_input.field, found.width, found.height,
                                       params.watermark_scale, params.opacity) as mark:
            mark.format = "PNG"
            blob = mark.make_blob()
        if not cancelled.is_set():
            mark_path.write_bytes(blob)

    try:
        await imaging.run_in_pool("WatermarkVideo", deadline.left(), prepare)
        graph = (f"[1:v]format=rgba[wm];{{v}}[wm]overlay={OVERLAY_POSITIONS[params.position]}:format=auto,"
                 f"{_even_graph(found)}[v]")
        output = await encode(request, "WatermarkVideo", source, found,
                              VIDEO_FORMATS[kept_format(source, found)], deadline, graph=graph,
                              extra_inputs=[mark_path])
    finally:
        with suppress(OSError):
            mark_path.unlink()
    return [output]


async def convert_video(request: TransformRequest) -> list[TransformOutput]:
    """ConvertVideo: re-encode as ``OutputFormat`` (mp4, webm, mov, mkv, avi, wmv, mpeg, ogg)."""
    fmt = request.parse(ConvertVideoFields).output_format
    source = request.input("video")
    deadline = Deadline("ConvertVideo", request.timeout)
    found = await probe_input(source, deadline, need="video")
    output = await encode(request, "ConvertVideo", source, found, VIDEO_FORMATS[fmt], deadline,
                          graph=f"{{v}}{_even_graph(found)}[v]")
    return [output]


async def trim_video(request: TransformRequest) -> list[TransformOutput]:
    """TrimVideo: keep ``StartTime`` to ``EndTime`` (or the end), given as seconds or ``[h:]mm:ss[.fff]``."""
    params = request.parse(TrimVideoFields)
    # The DTO layer checks presence and length; the time syntax and the order are checked here.
    args = Args({"start_time": params.start_time, "end_time": params.end_time})
    start = args.time("start_time", required=True)
    end = args.time("end_time")
    if start is not None and end is not None and end <= start:
        args.error("end_time", "GreaterThan", "must be after the Start Time.")
    args.check()
    assert start is not None
    source = request.input("video")
    deadline = Deadline("TrimVideo", request.timeout)
    found = await probe_input(source, deadline, need="video")
    if found.duration is not None and start >= found.duration:
        bounds = Args({})
        bounds.error("start_time", "LessThan", f"must be before the end of the video ({found.duration:.3f} s).")
        bounds.check()
    after = ["-t", f"{end - start:.3f}"] if end is not None else []
    output = await encode(request, "TrimVideo", source, found, VIDEO_FORMATS[kept_format(source, found)],
                          deadline, graph=f"{{v}}{_even_graph(found)}[v]",
                          before_input=["-ss", f"{start:.3f}"], after_input=after)
    return [output]


async def convert_audio(request: TransformRequest) -> list[TransformOutput]:
    """ConvertAudio: re-encode the first audio stream as ``OutputFormat`` (mp3, wav, aac, flac, ogg, m4a, wma)."""
    fmt = request.parse(ConvertAudioFields).output_format
    source = request.input("audio")
    deadline = Deadline("ConvertAudio", request.timeout)
    found = await probe_input(source, deadline, need="audio")
    output = await encode(request, "ConvertAudio", source, found, AUDIO_FORMATS[fmt], deadline, graph=None,
                          audio_only=True)
    return [output]


TRANSFORMS = (
    TransformSpec(name="ScaleVideo", kind="video", run=scale_video, fields=ScaleVideoFields,
                  summary="Resize a video; one side given keeps the aspect ratio",
                  description="Resize a video; with only Width or Height the aspect ratio is kept."),
    TransformSpec(name="CropVideo", kind="video", run=crop_video, fields=CropVideoFields,
                  summary="Crop a video to X, Y, Width, Height",
                  description="Cut the X, Y, Width, Height rectangle out of a video."),
    TransformSpec(name="WatermarkVideo", kind="video", run=watermark_video, fields=WatermarkVideoFields,
                  uploads=("video", "watermark"), summary="Watermark a video",
                  description="Overlay a watermark image on a video at a corner or the centre."),
    TransformSpec(name="ConvertVideo", kind="video", run=convert_video, fields=ConvertVideoFields,
                  summary="Convert a video to another container/codec",
                  description="Re-encode a video as mp4, webm, mov, mkv, avi, wmv, mpeg or ogg."),
    TransformSpec(name="TrimVideo", kind="video", run=trim_video, fields=TrimVideoFields,
                  summary="Cut a video to StartTime..EndTime",
                  description="Keep the part of a video between StartTime and EndTime."),
    TransformSpec(name="ConvertAudio", kind="audio", run=convert_audio, fields=ConvertAudioFields,
                  summary="Convert audio to another format",
                  description="Re-encode audio as mp3, wav, aac, flac, ogg, m4a or wma."),
)


@hookimpl
def register_transforms(register: Callable[[TransformSpec], None]) -> None:
    """Register the FFmpeg video and audio transforms."""
    for spec in TRANSFORMS:
        register(spec)
