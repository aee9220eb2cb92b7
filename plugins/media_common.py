"""What the HTTP media-generation providers share: downloads, output files, measuring, deadlines.

:class:`HttpMediaProvider` extends the SDK's :class:`~aiport.core.sdk.HttpProvider`
(so requests, error mapping, ``Retry-After``, key handling and probing behave
exactly the same for chat and media backends) with what a media provider needs
on top:

- :meth:`~HttpMediaProvider.deadline`: a task's ``timeout`` as one
  :class:`~aiport.core.errors.ProviderError` (``Timeout``, retryable);
- :meth:`~HttpMediaProvider.download`: an output URL streamed into the task's
  ``workdir``; the API key only goes along when the URL is on the provider's own
  origin (output files usually live on a CDN that must never see it);
- :meth:`~HttpMediaProvider.save`: bytes the backend sent inline (base64 images,
  speech) written the same way.

Each output is measured from its first bytes (image width and height from the
PNG, JPEG, GIF or WebP header; WAV duration from the RIFF chunks) without
decoding it, so no native library runs on the event loop.

This module is not a plugin itself: it implements no hook.
"""

from __future__ import annotations

import asyncio
import re
import struct
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import aiofiles
import aiohttp
from aiport.core.media import CONTENT_TYPES, GeneratedOutput, content_type_for, normalize_ext
from aiport.core.sdk import HttpProvider

#: The largest output file accepted from a backend (a misbehaving one must not fill the disk).
MAX_OUTPUT_BYTES = 256 * 1024 * 1024
#: How much of a file is kept to measure it (image headers and WAV chunk lists live at the start).
_HEAD = 64 * 1024

#: Content types that say nothing about the file (the URL or the bytes must tell instead).
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/binary"})
#: Content types whose extension is not the first one :data:`CONTENT_TYPES` lists for them.
_TYPE_ALIASES = {
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/vnd.wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/opus": "opus",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/aac": "aac",
}


# --------------------------------------------------------------------------- file kinds


def ext_for_content_type(content_type: str | None) -> str | None:
    """The extension for a content type (``image/webp`` -> ``webp``); ``None`` when it is generic or unknown."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime in _GENERIC_TYPES:
        return None
    if mime in _TYPE_ALIASES:
        return _TYPE_ALIASES[mime]
    for ext, known in CONTENT_TYPES.items():
        if known.split(";", 1)[0] == mime:
            return ext
    return None


def ext_for_url(url: str) -> str | None:
    """The extension of a URL's last path segment (query and fragment ignored); ``None`` if it has none."""
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    if "." not in name:
        return None
    try:
        ext = normalize_ext(name.rsplit(".", 1)[-1])
    except ValueError:
        return None
    return "jpg" if ext == "jpeg" else ext


def sniff_ext(head: bytes) -> str | None:
    """The extension that a file's magic bytes announce (images and WAV), or ``None``."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "mp3"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    return None


def image_size(head: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the header of a PNG, GIF, WebP or JPEG image; ``None`` if not one of them."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return width, height
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(head)
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(head)
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        b0, b1, b2, b3 = head[21:25]
        return 1 + (((b1 & 0x3F) << 8) | b0), 1 + (((b3 & 0x0F) << 10) | (b2 << 2) | ((b1 & 0xC0) >> 6))
    if chunk == b"VP8X" and len(head) >= 30:
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    return None


# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", head[i + 2:i + 4])
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", head[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def wav_duration(head: bytes, size: int) -> float | None:
    """Seconds of PCM audio in a WAV file of ``size`` bytes whose first bytes are ``head``.

    The ``data`` chunk's declared length is trusted only as far as the file goes:
    streamed WAV (as speech APIs send it) declares an unknown length (``0xFFFFFFFF``
    or 0), so the audio then runs to the end of the file.
    """
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    i, byte_rate = 12, 0
    while i + 8 <= len(head):
        chunk, length = head[i:i + 4], int.from_bytes(head[i + 4:i + 8], "little")
        if chunk == b"fmt " and i + 16 <= len(head):
            byte_rate = int.from_bytes(head[i + 16:i + 20], "little")
        elif chunk == b"data":
            if not byte_rate:
                return None
            available = max(0, size - (i + 8))
            data = available if length in (0, 0xFFFFFFFF) else min(length, available)
            return data / byte_rate
        i += 8 + length + (length & 1)  # chunks are padded to an even length
    return None


def describe(path: Path, ext: str, head: bytes, size: int) -> GeneratedOutput:
    """The :class:`GeneratedOutput` for a written file, measured from its ``head``."""
    dims = image_size(head) if content_type_for(ext).startswith("image/") else None
    duration = wav_duration(head, size) if ext == "wav" else None
    return GeneratedOutput(path=path, ext=ext, content_type=content_type_for(ext),
                           width=dims[0] if dims else None, height=dims[1] if dims else None, duration=duration)


def output_file(workdir: Path, ext: str, stem: str) -> Path:
    """A fresh file name in ``workdir`` (unique, so several outputs and providers can share the folder)."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", stem)[:40] or "output"
    return workdir / f"{safe}-{uuid.uuid4().hex[:12]}.{normalize_ext(ext)}"


# --------------------------------------------------------------------------- the provider base


class HttpMediaProvider(HttpProvider):
    """Base of the HTTP media providers: the SDK's :class:`~aiport.core.sdk.HttpProvider` plus outputs and deadlines.

    Subclasses implement ``generate(task, progress)``; ``probe`` and ``aclose``
    come from :class:`~aiport.core.sdk.HttpProvider` (override :meth:`probe_url`).
    """

    def headers_for(self, url: str) -> dict[str, str]:
        """Request headers for ``url``: everything (key included) on our origin, nothing elsewhere."""
        return self.headers() if self.same_origin(url) else {}

    @asynccontextmanager
    async def deadline(self, seconds: float, what: str = "the generation") -> AsyncIterator[None]:
        """Run the block within ``seconds``; past them it is cancelled and a retryable ``Timeout`` raised.

        The block's own clean-up (cancelling remote work) runs during the
        cancellation, before the error is raised.
        """
        try:
            async with asyncio.timeout(seconds):
                yield
        except TimeoutError:
            raise self.error(f"{what} did not finish within {seconds:g}s (timeout)", retryable=True,
                             error_code="Timeout") from None

    async def download(self, url: str, workdir: Path, stem: str = "output") -> GeneratedOutput:
        """Stream ``url`` into a new file in ``workdir`` (see :meth:`save_response` for the extension)."""
        if urlsplit(url).scheme not in ("http", "https"):
            raise self.malformed(f"an output is not an http(s) URL: {url[:80]!r}")
        async with self.open("GET", url, headers=self.headers_for(url), stream=True) as resp:
            return await self.save_response(resp, workdir, stem)

    async def save_response(self, resp: aiohttp.ClientResponse, workdir: Path, stem: str = "output",
                            fallback_ext: str | None = None) -> GeneratedOutput:
        """Stream a successful response's body into a new file in ``workdir``.

        The extension comes from the Content-Type, else the URL, else
        ``fallback_ext``, else the file's magic bytes.
        """
        tmp = workdir / f".download-{uuid.uuid4().hex}"
        head, size = bytearray(), 0
        try:
            async with aiofiles.open(tmp, "wb") as out:
                async for chunk in resp.content.iter_chunked(256 * 1024):
                    size += len(chunk)
                    if size > MAX_OUTPUT_BYTES:
                        raise self.error(f"an output is larger than {MAX_OUTPUT_BYTES // 2**20} MiB",
                                         status=502, retryable=False)
                    if len(head) < _HEAD:
                        head += chunk[:_HEAD - len(head)]
                    await out.write(chunk)
            if not size:
                raise self.malformed(f"an output is empty ({resp.url.path.rsplit('/', 1)[-1] or resp.url.path!r})")
            ext = (ext_for_content_type(resp.headers.get("Content-Type")) or ext_for_url(str(resp.url))
                   or fallback_ext or sniff_ext(bytes(head)) or "bin")
            path = output_file(workdir, ext, stem)
            tmp.rename(path)
        finally:
            tmp.unlink(missing_ok=True)
        return describe(path, ext, bytes(head), size)

    async def save(self, data: bytes, workdir: Path, ext: str | None = None, stem: str = "output"
                   ) -> GeneratedOutput:
        """Write ``data`` to a new file in ``workdir`` (extension ``ext``, else sniffed, else ``bin``)."""
        if not data:
            raise self.malformed("an output is empty")
        ext = ext or sniff_ext(data[:_HEAD]) or "bin"
        path = output_file(workdir, ext, stem)
        async with aiofiles.open(path, "wb") as out:
            await out.write(data)
        return describe(path, ext, data[:_HEAD], len(data))

