"""Image transforms with ImageMagick (through wand): ScaleImage, CropImage, WatermarkImage, ConvertImage.

Safety, in layers, because decoders of untrusted images are the classic attack surface:

1. **Magic bytes.** An input is only decoded when its first bytes are those of a
   format listed in :data:`FORMATS`, and then with that format named explicitly,
   so ImageMagick never guesses a coder (no MVG, MSL, SVG, text, URL ... from an upload).
2. **Header first.** The header is read alone ("ping") and images larger than
   :data:`MAX_PIXELS` (or with too many frames) are refused before any pixel is decoded.
3. **Policy.** ``plugins/data/imagemagick/policy.xml`` allows only those coders and
   sets memory, map, disk, area and width/height limits. ``MAGICK_CONFIGURE_PATH``
   is pointed at it when this module is imported, which must happen before wand
   is first imported (ImageMagick reads its policy once per process). The limits
   are also applied through wand's API, in case something imported wand earlier.

All ImageMagick work runs in a small thread pool (ImageMagick releases the GIL in
its C calls), never on the event loop. A transform that runs out of time answers
at once; its thread finishes in the background and writes nothing.

Outputs keep the input's format (AI Server wrote PNG); ScaleImage keeps the aspect
ratio when only one side is given; WatermarkImage really applies ``Opacity`` and
``WatermarkScale`` (AI Server used the scale as the opacity).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import structlog
from aiport.core import hookimpl
from aiport.core.errors import BadRequest, GatewayTimeout, ServiceUnavailable
from aiport.core.media import (
    Args,
    TransformOutput,
    TransformRequest,
    bad_input,
    content_type_for,
    output_path,
)
from aiport.core.registry import TransformSpec

log = structlog.get_logger(__name__)

POLICY_DIR = Path(__file__).resolve().parent / "data" / "imagemagick"


def _use_policy() -> None:
    """Put aiport's policy folder first on ImageMagick's configure path (before wand loads it)."""
    current = os.environ.get("MAGICK_CONFIGURE_PATH", "")
    parts = [p for p in current.split(os.pathsep) if p]
    if str(POLICY_DIR) not in parts:
        os.environ["MAGICK_CONFIGURE_PATH"] = os.pathsep.join([str(POLICY_DIR), *parts])


_WAND_WAS_LOADED = "wand.api" in sys.modules
_use_policy()

# --------------------------------------------------------------------------- limits and formats

#: Largest image (pixels of one frame) decoded; bigger ones are refused from their header.
MAX_PIXELS = 64_000_000
#: Longest side accepted, in pixels (also the policy's width/height limit).
MAX_SIDE = 16_000
#: Pixels of all frames of an animated image together.
MAX_TOTAL_PIXELS = 128_000_000
#: Frames of an animated image.
MAX_FRAMES = 500
#: Largest output side a ScaleImage may ask for.
MAX_SCALE_SIDE = 8_192
#: Largest input file read into memory.
MAX_FILE_BYTES = 256 * 1024 * 1024
#: Distance of a watermark from the image's edges, in pixels (as AI Server).
WATERMARK_INSET = 10

#: Limits applied through wand too (bytes or pixels), matching policy.xml.
_RESOURCE_LIMITS = {
    "memory": 256 * 1024 * 1024,
    "map": 512 * 1024 * 1024,
    "disk": 1024 * 1024 * 1024,
    "area": MAX_PIXELS,
    "width": MAX_SIDE,
    "height": MAX_SIDE,
}


@attrs.frozen
class ImageFormat:
    """A format the transforms read and write."""

    #: ImageMagick's coder name.
    magick: str
    ext: str
    #: Whether it holds several frames (animation, pages); others keep the first frame.
    multi_frame: bool = False
    #: Whether it has an alpha channel; others are flattened onto white.
    alpha: bool = True


#: Every format read and written, by ImageMagick coder name.
FORMATS: dict[str, ImageFormat] = {
    "PNG": ImageFormat("PNG", "png"),
    "JPEG": ImageFormat("JPEG", "jpg", alpha=False),
    "GIF": ImageFormat("GIF", "gif", multi_frame=True),
    "BMP": ImageFormat("BMP", "bmp"),
    "TIFF": ImageFormat("TIFF", "tiff", multi_frame=True),
    "WEBP": ImageFormat("WEBP", "webp", multi_frame=True),
    "AVIF": ImageFormat("AVIF", "avif"),
    "HEIC": ImageFormat("HEIC", "heic"),
}

#: ConvertImage's ``OutputFormat`` values (and aliases) -> coder name.
OUTPUT_FORMATS: dict[str, str] = {
    "jpg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF", "webp": "WEBP", "avif": "AVIF",
    "jpeg": "JPEG", "tif": "TIFF",
}

_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"hevx": "HEIC", b"heim": "HEIC",
                b"heis": "HEIC", b"mif1": "HEIC", b"msf1": "HEIC", b"avif": "AVIF", b"avis": "AVIF"}


def sniff(head: bytes) -> str | None:
    """The coder name for an image's first bytes, or ``None`` when it is no format in :data:`FORMATS`."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM") and len(head) >= 26:
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return _HEIF_BRANDS.get(head[8:12])
    return None


# --------------------------------------------------------------------------- wand, loaded lazily

_wand_lock = threading.Lock()
_wand_modules: dict[str, ModuleType] = {}


def load_wand() -> ModuleType:
    """``wand.image``, imported on first use with aiport's limits applied.

    Lazy so that a server without ImageMagick still starts (the transforms then
    answer 503) and so that the policy path is set before ImageMagick starts.
    """
    with _wand_lock:
        if "image" not in _wand_modules:
            try:
                import wand.image
                import wand.resource
            except ImportError as exc:
                raise ServiceUnavailable(
                    "Image transforms need ImageMagick: install the libmagickwand-6.q16-6 package."
                ) from exc
            for name, value in _RESOURCE_LIMITS.items():
                with suppress(Exception):  # a limit this ImageMagick does not know
                    if wand.resource.limits[name] > value:
                        wand.resource.limits[name] = value
            if _WAND_WAS_LOADED:
                log.warning("imagemagick_policy_maybe_inactive",
                            hint="wand was imported before aiport.plugins.transforms_image; "
                                 "only the resource limits and format checks apply")
            _wand_modules["image"] = wand.image
        return _wand_modules["image"]


def _wand_errors() -> tuple[type[BaseException], ...]:
    import wand.exceptions

    return (wand.exceptions.WandException, ValueError, MemoryError)


def _short(exc: BaseException) -> str:
    """An ImageMagick message without its source location and internal file names."""
    if type(exc).__name__ == "WandRuntimeError":
        # wand's "returns false, but did not raise" wording: the decoder gave up on the data.
        return "the data is damaged, truncated or beyond the size limits"
    text = str(exc).split(" @ ")[0]
    text = re.sub(r"`[^']*'", "", text).strip().rstrip(".")
    return text[:200] or type(exc).__name__


# --------------------------------------------------------------------------- loading and saving


@attrs.frozen
class ImageInfo:
    """An image's header: coder, size and frame count."""

    magick: str
    width: int
    height: int
    frames: int


def _read_checked(path: Path, field: str) -> tuple[bytes, ImageInfo]:
    """The file's bytes and header, refusing anything that is not a sane image (before decoding)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise bad_input(field, f"The {field} file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB.")
        data = path.read_bytes()
    except OSError as exc:
        raise bad_input(field, f"The {field} file cannot be read ({exc.strerror}).") from None
    magick = sniff(data[:32])
    if magick is None:
        raise bad_input(field, f"The {field} file is not an image in a supported format "
                               "(PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF, HEIC).")
    image_mod = load_wand()
    try:
        with image_mod.Image.ping(blob=data, format=magick) as probe:
            width, height = probe.width, probe.height
            frames = len(probe.sequence)
    except _wand_errors() as exc:
        raise bad_input(field, f"The {field} file is not a valid {magick} image: {_short(exc)}.") from None
    info = ImageInfo(magick, width, height, frames)
    if width < 1 or height < 1:
        raise bad_input(field, f"The {field} file has no pixels.")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise bad_input(field, f"The {field} is {width}x{height}; images may have at most "
                               f"{MAX_PIXELS // 1_000_000} megapixels and {MAX_SIDE} pixels a side.")
    if frames > MAX_FRAMES or width * height * frames > MAX_TOTAL_PIXELS:
        raise bad_input(field, f"The {field} image has too many frames ({frames}).")
    return data, info


@contextmanager
def _decode(data: bytes, info: ImageInfo, field: str) -> Iterator[Any]:
    """The decoded image (all frames, coalesced when animated), closed on exit."""
    image_mod = load_wand()
    try:
        img = image_mod.Image(blob=data, format=info.magick)
    except _wand_errors() as exc:
        raise bad_input(field, f"The {field} file is not a valid {info.magick} image: {_short(exc)}.") from None
    try:
        if len(img.sequence) > 1:
            img.coalesce()  # every frame a full canvas, so per-frame operations line up
        img.reset_coords()
        yield img
    finally:
        img.close()


def load_image(path: Path, field: str) -> Any:
    """Decode an untrusted image file safely (see the module doc); the caller closes it.

    Blocking: call it from a worker thread. Raises a 400 for anything that is not
    a sane image in one of :data:`FORMATS`.
    """
    data, info = _read_checked(path, field)
    image_mod = load_wand()
    try:
        img = image_mod.Image(blob=data, format=info.magick)
    except _wand_errors() as exc:
        raise bad_input(field, f"The {field} file is not a valid {info.magick} image: {_short(exc)}.") from None
    if len(img.sequence) > 1:
        first = image_mod.Image(image=img.sequence[0])
        img.close()
        img = first
    img.reset_coords()
    return img


def _first_frame_only(img: Any) -> Any:
    """A new single-frame image of ``img``'s first frame (the caller closes both)."""
    return load_wand().Image(image=img.sequence[0])


def _for_each_frame(img: Any, fn: Callable[[Any], None]) -> None:
    """Run ``fn(img)`` with each frame of ``img`` current (wand operations act on the current frame)."""
    count = len(img.sequence)
    if count == 1:
        fn(img)
        return
    for index in range(count):
        img.iterator_set(index)
        fn(img)
    img.iterator_reset()


class _Cancelled(Exception):
    """The awaiting side gave up (timeout or cancellation); nothing may be written."""


def _write(img: Any, fmt: ImageFormat, workdir: Path, stem: str, cancelled: threading.Event) -> TransformOutput:
    """Encode ``img`` as ``fmt`` into a new file in ``workdir``; nothing is left behind on failure."""
    if not fmt.alpha and img.alpha_channel:
        # Formats without alpha would show transparent pixels as their (often black) colour.
        import wand.color

        img.background_color = wand.color.Color("white")
        img.alpha_channel = "remove"
    img.format = fmt.magick
    try:
        blob = img.make_blob()
    except _wand_errors() as exc:
        raise BadRequest(f"The image cannot be written as {fmt.ext}: {_short(exc)}.") from None
    if not blob:
        raise BadRequest(f"The image cannot be written as {fmt.ext}.")
    if cancelled.is_set():
        raise _Cancelled
    target = output_path(workdir, fmt.ext, stem)
    try:
        with open(target, "xb") as out:
            out.write(blob)
        if cancelled.is_set():
            raise _Cancelled
    except BaseException:
        with suppress(OSError):
            target.unlink()
        raise
    return TransformOutput(path=target, ext=fmt.ext, content_type=content_type_for(fmt.ext),
                           width=int(img.width), height=int(img.height))


def _output_format(magick: str) -> ImageFormat:
    """The format an image is written in when the transform keeps its format (PNG if unknown)."""
    return FORMATS.get(magick, FORMATS["PNG"])


# --------------------------------------------------------------------------- running off the loop

_pool_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def worker_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The process-wide pool ImageMagick work runs in: one thread per CPU, at most 4.

    ImageMagick itself may use 2 threads per call (policy ``thread``), so this keeps
    the machine busy without oversubscribing it. Independent of any event loop.
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            size = max(1, min(4, os.cpu_count() or 1))
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=size, thread_name_prefix="aiport-magick")
        return _pool


async def run_in_pool(name: str, limit: float, fn: Callable[[threading.Event], Any]) -> Any:
    """Run ``fn(cancelled)`` in :func:`worker_pool`, giving up after ``limit`` seconds.

    ``cancelled`` is set when the caller stops waiting; ``fn`` must then write
    nothing (see :func:`_write`). A timeout is a 504 ``Timeout``.
    """
    cancelled = threading.Event()
    future = asyncio.get_running_loop().run_in_executor(worker_pool(), fn, cancelled)
    try:
        return await asyncio.wait_for(future, limit)
    except TimeoutError:
        cancelled.set()
        raise GatewayTimeout(f"{name} did not finish within {limit:g} s.", error_code="Timeout") from None
    except BaseException:
        cancelled.set()
        raise


# --------------------------------------------------------------------------- the transforms


async def scale_image(request: TransformRequest) -> list[TransformOutput]:
    """ScaleImage: resize to ``Width`` and/or ``Height``; with one side only, the aspect ratio is kept.

    With ``fit="within"`` (image variants) both sides are a bounding box and the
    aspect ratio is kept too.
    """
    args = Args(request.args)
    width = args.integer("width", ge=1, le=MAX_SCALE_SIDE)
    height = args.integer("height", ge=1, le=MAX_SCALE_SIDE)
    within = args.raw("fit") == "within"
    if width is None and height is None and not args.errors:
        args.error("width", "NotEmpty", "must not be empty: give Width, Height or both.")
    args.check()
    source = request.input("image")

    def work(cancelled: threading.Event) -> list[TransformOutput]:
        data, info = _read_checked(source.path, source.field)
        if width and height and within:
            ratio = min(width / info.width, height / info.height)
            size = (max(1, round(info.width * ratio)), max(1, round(info.height * ratio)))
        elif width and height:
            size = (width, height)
        elif width:
            size = (width, max(1, round(info.height * width / info.width)))
        else:
            assert height is not None
            size = (max(1, round(info.width * height / info.height)), height)
        if size[0] * size[1] * info.frames > MAX_TOTAL_PIXELS:
            raise BadRequest(f"The scaled image would be {size[0]}x{size[1]}, which is too large.")
        with _decode(data, info, source.field) as img:
            img.resize(*size)
            img.reset_coords()
            return [_write(img, _output_format(info.magick), request.workdir, "scaled", cancelled)]

    return await run_in_pool("ScaleImage", request.timeout, work)


async def crop_image(request: TransformRequest) -> list[TransformOutput]:
    """CropImage: the rectangle at ``X``,``Y`` of ``Width``x``Height``, clipped to the image."""
    args = Args(request.args)
    x = args.integer("x", required=True, ge=0)
    y = args.integer("y", required=True, ge=0)
    width = args.integer("width", required=True, ge=1)
    height = args.integer("height", required=True, ge=1)
    args.check()
    assert x is not None and y is not None and width is not None and height is not None
    source = request.input("image")

    def work(cancelled: threading.Event) -> list[TransformOutput]:
        data, info = _read_checked(source.path, source.field)
        bounds = Args({})
        if x >= info.width:
            bounds.error("X", "InclusiveBetween", f"must be less than the image width ({info.width}).")
        if y >= info.height:
            bounds.error("Y", "InclusiveBetween", f"must be less than the image height ({info.height}).")
        bounds.check()
        w, h = min(width, info.width - x), min(height, info.height - y)
        with _decode(data, info, source.field) as img:
            _for_each_frame(img, lambda frame: frame.crop(left=x, top=y, width=w, height=h))
            img.reset_coords()
            return [_write(img, _output_format(info.magick), request.workdir, "cropped", cancelled)]

    return await run_in_pool("CropImage", request.timeout, work)


#: WatermarkImage/WatermarkVideo ``Position`` values -> (horizontal, vertical) anchor.
POSITIONS: dict[str, tuple[str, str]] = {
    "TopLeft": ("left", "top"),
    "TopRight": ("right", "top"),
    "BottomLeft": ("left", "bottom"),
    "BottomRight": ("right", "bottom"),
    "Center": ("center", "center"),
}


def watermark_offset(position: str, size: tuple[int, int], mark: tuple[int, int],
                     inset: int = WATERMARK_INSET) -> tuple[int, int]:
    """Top-left corner of a ``mark``-sized watermark at ``position`` on a ``size`` image."""
    (width, height), (mw, mh) = size, mark
    horizontal, vertical = POSITIONS[position]
    left = {"left": inset, "right": width - mw - inset, "center": (width - mw) // 2}[horizontal]
    top = {"top": inset, "bottom": height - mh - inset, "center": (height - mh) // 2}[vertical]
    return max(0, left), max(0, top)


def prepare_watermark(path: Path, field: str, base_width: int, base_height: int, scale: float,
                      opacity: float, inset: int = WATERMARK_INSET) -> Any:
    """The watermark image scaled to ``scale`` x ``base_width`` (aspect kept, fitted inside the
    base minus insets) with its alpha multiplied by ``opacity``. Blocking; the caller closes it."""
    mark = load_image(path, field)
    try:
        target_w = max(1, round(base_width * scale))
        target_h = max(1, round(mark.height * target_w / mark.width))
        room_w, room_h = max(1, base_width - 2 * inset), max(1, base_height - 2 * inset)
        fit = min(1.0, room_w / target_w, room_h / target_h)
        target_w, target_h = max(1, int(target_w * fit)), max(1, int(target_h * fit))
        mark.resize(target_w, target_h)
        mark.alpha_channel = "set"  # adds an opaque alpha channel; keeps an existing one
        if opacity < 1:
            mark.evaluate(operator="multiply", value=opacity, channel="alpha")
        return mark
    except BaseException:
        mark.close()
        raise


async def watermark_image(request: TransformRequest) -> list[TransformOutput]:
    """WatermarkImage: draw ``watermark`` on ``image`` at ``Position`` (default BottomRight, 10 px
    inset), ``WatermarkScale`` x the image's width wide (default .2), at ``Opacity`` (default .5)."""
    args = Args(request.args)
    position = args.choice("position", list(POSITIONS), default="BottomRight")
    opacity = args.number("opacity", ge=0, le=1, default=0.5)
    scale = args.number("watermark_scale", gt=0, le=1, default=0.2)
    args.check()
    assert position is not None and opacity is not None and scale is not None
    source, mark_input = request.input("image"), request.input("watermark")

    def work(cancelled: threading.Event) -> list[TransformOutput]:
        data, info = _read_checked(source.path, source.field)
        with _decode(data, info, source.field) as img:
            mark = prepare_watermark(mark_input.path, mark_input.field, img.width, img.height, scale, opacity)
            with mark:
                left, top = watermark_offset(position, (img.width, img.height), (mark.width, mark.height))
                _for_each_frame(img, lambda frame: frame.composite(mark, left=left, top=top, operator="over"))
            return [_write(img, _output_format(info.magick), request.workdir, "watermarked", cancelled)]

    return await run_in_pool("WatermarkImage", request.timeout, work)


async def convert_image(request: TransformRequest) -> list[TransformOutput]:
    """ConvertImage: re-encode as ``OutputFormat`` (jpg, png, gif, bmp, tiff, webp, avif).

    Animated and multi-page images stay so in gif, tiff and webp; other formats get the
    first frame. Transparency is flattened onto white for jpg.
    """
    args = Args(request.args)
    magick = args.choice("output_format", OUTPUT_FORMATS, required=True)
    args.check()
    fmt = FORMATS[magick]
    source = request.input("image")

    def work(cancelled: threading.Event) -> list[TransformOutput]:
        data, info = _read_checked(source.path, source.field)
        with _decode(data, info, source.field) as img:
            if len(img.sequence) > 1 and not fmt.multi_frame:
                with _first_frame_only(img) as first:
                    return [_write(first, fmt, request.workdir, "converted", cancelled)]
            return [_write(img, fmt, request.workdir, "converted", cancelled)]

    return await run_in_pool("ConvertImage", request.timeout, work)


TRANSFORMS = (
    TransformSpec(name="ScaleImage", kind="image", run=scale_image,
                  description="Resize an image; with only Width or Height the aspect ratio is kept."),
    TransformSpec(name="CropImage", kind="image", run=crop_image,
                  description="Cut the X, Y, Width, Height rectangle out of an image."),
    TransformSpec(name="WatermarkImage", kind="image", run=watermark_image,
                  description="Draw a watermark image at a corner or the centre, scaled and translucent."),
    TransformSpec(name="ConvertImage", kind="image", run=convert_image,
                  description="Re-encode an image as jpg, png, gif, bmp, tiff, webp or avif."),
)


@hookimpl
def register_transforms(register: Callable[[TransformSpec], None]) -> None:
    """Register the ImageMagick image transforms."""
    for spec in TRANSFORMS:
        register(spec)
