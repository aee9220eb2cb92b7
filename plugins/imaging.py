"""ImageMagick (through wand) made safe for untrusted images: the helpers the transform plugins share.

A named helper module, not a plugin: ``transforms_image`` and ``transforms_ffmpeg``
(its WatermarkVideo decodes the watermark here) import it; it registers nothing.

Safety, in layers, because decoders of untrusted images are the classic attack surface:

1. **Magic bytes.** An input is only decoded when its first bytes are those of a
   format listed in :data:`FORMATS`, and then with that format named explicitly,
   so ImageMagick never guesses a coder (no MVG, MSL, SVG, text, URL ... from an upload).
2. **Header first.** The header is read alone ("ping") and images larger than
   :data:`MAX_PIXELS` (or with too many frames) are refused before any pixel is decoded.
3. **Policy.** ``plugins/data/imagemagick/policy.xml`` allows only those coders and
   sets memory, map, disk, area and width/height limits. :func:`load_wand` points
   ``MAGICK_CONFIGURE_PATH`` at it just before it first imports wand, when image work
   first runs (ImageMagick reads its policy once per process, when wand loads it):
   importing this module, or loading a disabled plugin, changes nothing. The limits
   are also applied through wand's API, in case something imported wand earlier.

All ImageMagick work runs in a small thread pool (ImageMagick releases the GIL in
its C calls), never on the event loop. Work that runs out of time answers at
once; its thread finishes in the background and writes nothing.
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
from aiport.core.errors import BadRequest, GatewayTimeout, ServiceUnavailable
from aiport.core.media import TransformOutput, bad_input, content_type_for, output_path

log = structlog.get_logger(__name__)

POLICY_DIR = Path(__file__).resolve().parent / "data" / "imagemagick"


def _use_policy() -> None:
    """Put aiport's policy folder first on ImageMagick's configure path (before wand loads it)."""
    current = os.environ.get("MAGICK_CONFIGURE_PATH", "")
    parts = [p for p in current.split(os.pathsep) if p]
    if str(POLICY_DIR) not in parts:
        os.environ["MAGICK_CONFIGURE_PATH"] = os.pathsep.join([str(POLICY_DIR), *parts])

# --------------------------------------------------------------------------- limits and formats

#: Largest image (pixels of one frame) decoded; bigger ones are refused from their header.
MAX_PIXELS = 64_000_000
#: Longest side accepted, in pixels (also the policy's width/height limit).
MAX_SIDE = 16_000
#: Pixels of all frames of an animated image together.
MAX_TOTAL_PIXELS = 128_000_000
#: Frames of an animated image.
MAX_FRAMES = 500
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
    answer 503), and so that aiport's policy is put in place only when image work
    runs, just before ImageMagick starts and reads it.
    """
    with _wand_lock:
        if "image" not in _wand_modules:
            wand_was_loaded = "wand.api" in sys.modules
            _use_policy()
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
            if wand_was_loaded:
                log.warning("imagemagick_policy_maybe_inactive",
                            hint="wand was imported before aiport's image transforms first ran; "
                                 "only the resource limits and format checks apply")
            _wand_modules["image"] = wand.image
        return _wand_modules["image"]


def wand_errors() -> tuple[type[BaseException], ...]:
    import wand.exceptions

    return (wand.exceptions.WandException, ValueError, MemoryError)


def short_error(exc: BaseException) -> str:
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


def read_checked(path: Path, field: str) -> tuple[bytes, ImageInfo]:
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
    except wand_errors() as exc:
        raise bad_input(field, f"The {field} file is not a valid {magick} image: {short_error(exc)}.") from None
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
def decode(data: bytes, info: ImageInfo, field: str) -> Iterator[Any]:
    """The decoded image (all frames, coalesced when animated), closed on exit."""
    image_mod = load_wand()
    try:
        img = image_mod.Image(blob=data, format=info.magick)
    except wand_errors() as exc:
        raise bad_input(field, f"The {field} file is not a valid {info.magick} image: {short_error(exc)}.") from None
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
    data, info = read_checked(path, field)
    image_mod = load_wand()
    try:
        img = image_mod.Image(blob=data, format=info.magick)
    except wand_errors() as exc:
        raise bad_input(field, f"The {field} file is not a valid {info.magick} image: {short_error(exc)}.") from None
    if len(img.sequence) > 1:
        first = image_mod.Image(image=img.sequence[0])
        img.close()
        img = first
    img.reset_coords()
    return img


def first_frame_only(img: Any) -> Any:
    """A new single-frame image of ``img``'s first frame (the caller closes both)."""
    return load_wand().Image(image=img.sequence[0])


def for_each_frame(img: Any, fn: Callable[[Any], None]) -> None:
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


def write_image(img: Any, fmt: ImageFormat, workdir: Path, stem: str, cancelled: threading.Event) -> TransformOutput:
    """Encode ``img`` as ``fmt`` into a new file in ``workdir``; nothing is left behind on failure."""
    if not fmt.alpha and img.alpha_channel:
        # Formats without alpha would show transparent pixels as their (often black) colour.
        import wand.color

        img.background_color = wand.color.Color("white")
        img.alpha_channel = "remove"
    img.format = fmt.magick
    try:
        blob = img.make_blob()
    except wand_errors() as exc:
        raise BadRequest(f"The image cannot be written as {fmt.ext}: {short_error(exc)}.") from None
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


def kept_format(magick: str) -> ImageFormat:
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
    nothing (see :func:`write_image`). A timeout is a 504 ``Timeout``.
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



# --------------------------------------------------------------------------- watermarks

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
