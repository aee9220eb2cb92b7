"""Real media files for the media-backend fakes: images via ImageMagick (wand), WAV via ``wave``.

The fakes answer with files a client can decode and measure, so tests check
real outputs (an image of the size asked for, a WAV whose header and length
agree) rather than placeholder bytes.

A WAV may carry text in a ``LIST``/``INFO``/``ICMT`` chunk after its audio
(:func:`render_wav`); :func:`wav_comment` reads it back. The fake speech API
writes the spoken text there and the fake transcription API returns it, so a
text-to-speech -> speech-to-text round trip gives the text back.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import wave

from wand.color import Color
from wand.image import Image

#: wand format names by file extension.
_FORMATS = {"png": "png", "webp": "webp", "jpg": "jpeg", "jpeg": "jpeg", "gif": "gif"}


def colour_for(*parts: object) -> str:
    """A stable colour for a prompt/seed, so different requests give different images."""
    digest = hashlib.sha256(repr(parts).encode()).hexdigest()
    return f"#{digest[:6]}"


def render_image(width: int, height: int, ext: str, colour: str = "#3a7bd5") -> bytes:
    """An image file of exactly ``width`` x ``height`` in format ``ext`` (png, webp, jpg, gif)."""
    with Image(width=width, height=height, background=Color(colour)) as img:
        img.format = _FORMATS[ext]
        if ext == "webp":
            img.compression_quality = 80  # lossy WebP ("VP8 "), what the FLUX models send
        return bytes(img.make_blob())


def render_wav(seconds: float, *, rate: int = 24000, comment: str | None = None,
               unknown_length: bool = False) -> bytes:
    """A 16-bit mono WAV with a quiet tone lasting ``seconds``.

    ``comment`` is stored in a ``LIST``/``INFO``/``ICMT`` chunk after the audio.
    ``unknown_length`` writes the header a streaming server sends before it knows
    the length: RIFF and data sizes of ``0xFFFFFFFF`` (no comment chunk then,
    since nothing can follow data of unknown length).
    """
    frames = max(1, int(seconds * rate))
    samples = b"".join(struct.pack("<h", int(3000 * math.sin(2 * math.pi * 440 * i / rate)))
                       for i in range(frames))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples)
    data = bytearray(buffer.getvalue())
    if unknown_length:
        data[4:8] = b"\xff\xff\xff\xff"
        data[40:44] = b"\xff\xff\xff\xff"
        return bytes(data)
    if comment:
        text = comment.encode("utf-8") + b"\x00"
        if len(text) % 2:
            text += b"\x00"
        info = b"INFO" + b"ICMT" + struct.pack("<I", len(text)) + text
        data += b"LIST" + struct.pack("<I", len(info)) + info
        data[4:8] = struct.pack("<I", len(data) - 8)
    return bytes(data)


def wav_comment(data: bytes) -> str | None:
    """The ``ICMT`` text of a WAV written by :func:`render_wav`, or ``None``."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    i = 12
    while i + 8 <= len(data):
        chunk, length = data[i:i + 4], int.from_bytes(data[i + 4:i + 8], "little")
        if length == 0xFFFFFFFF:
            return None
        body = data[i + 8:i + 8 + length]
        if chunk == b"LIST" and body[:4] == b"INFO":
            j = 4
            while j + 8 <= len(body):
                sub, size = body[j:j + 4], int.from_bytes(body[j + 4:j + 8], "little")
                if sub == b"ICMT":
                    return body[j + 8:j + 8 + size].rstrip(b"\x00").decode("utf-8", "replace")
                j += 8 + size + (size & 1)
        i += 8 + length + (length & 1)
    return None


def is_wav(data: bytes) -> bool:
    """Whether ``data`` opens as a PCM WAV with ``wave`` (what the fake transcriber accepts as audio)."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            return w.getnframes() > 0 and w.getframerate() > 0
    except (wave.Error, EOFError, struct.error):
        return False
