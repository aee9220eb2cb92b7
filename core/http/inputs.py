"""Reading a request's input: query string, path, JSON, form or multipart.

Bodies are read from the raw stream with aiport's own size limit
(``server.max_upload_size``), so the limit holds even when aiport is mounted
under a parent app whose ``client_max_size`` is smaller. Uploaded files are
streamed to disk (never held whole in memory) next to the artifact store, so
keeping one is a rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import aiofiles
import attrs
from aiohttp import BodyPartReader, web

from .. import jsoncodec
from ..errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

_CHUNK = 256 * 1024
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@attrs.frozen
class UploadedFile:
    """A file from a multipart request, spooled to ``path`` (deleted after the request
    unless something moves it away)."""

    field: str
    filename: str
    content_type: str
    path: Path
    size: int
    sha256: str

    @property
    def extension(self) -> str:
        """Lower-case extension from the file name, else from the content type, without the dot."""
        suffix = Path(self.filename).suffix.lower().lstrip(".")
        if suffix and re.fullmatch(r"[a-z0-9]{1,8}", suffix):
            return suffix
        subtype = self.content_type.split("/")[-1].split(";")[0].strip().lower()
        return {"jpeg": "jpg", "mpeg": "mp3", "x-wav": "wav", "wave": "wav", "quicktime": "mov",
                "svg+xml": "svg", "plain": "txt"}.get(subtype, subtype if subtype.isalnum() else "bin")


@attrs.define
class RequestInput:
    """Merged input of one request: ``data`` (names as sent) and uploaded ``files``."""

    data: dict[str, Any] = attrs.field(factory=dict)
    files: list[UploadedFile] = attrs.field(factory=list)

    def files_by_field(self) -> dict[str, Any]:
        """Files keyed by field name; a field sent more than once maps to a list."""
        out: dict[str, Any] = {}
        for f in self.files:
            if f.field in out:
                prev = out[f.field]
                out[f.field] = [*prev, f] if isinstance(prev, list) else [prev, f]
            else:
                out[f.field] = f
        return out


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than the {_human_size(limit)} this server accepts "
        "(server.max_upload_size)."
    )


def _human_size(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:g} {unit}" if value.is_integer() else f"{value:.1f} {unit}"
    return f"{n} bytes"


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole (non-file) body, refusing more than ``limit`` bytes with a 413."""
    length = request.content_length
    if length is not None:
        if length > limit:
            raise _too_large(limit)
        # Known length within the limit: one read, no chunk loop.
        data = await request.content.read(length)
        while len(data) < length:
            more = await request.content.read(length - len(data))
            if not more:
                break
            data += more
        return data
    chunks = []
    total = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _add(data: dict[str, Any], key: str, value: Any) -> None:
    if key in data:
        prev = data[key]
        data[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
    else:
        data[key] = value


_PLAIN_JSON = frozenset({"application/json", "application/json; charset=utf-8", "application/json;charset=utf-8",
                         "application/json; charset=UTF-8"})


async def read_input(request: web.Request, *, limit: int, spool_dir: Path, allow_files: bool) -> RequestInput:
    """Read every input source of ``request`` into one :class:`RequestInput`.

    Precedence (later wins): query string, body, path parameters.
    """
    result = RequestInput()
    if request.query_string:  # parsing an empty query still builds a multidict
        for key, value in request.query.items():
            _add(result.data, key, value)
    if request.can_read_body:
        # The common case without aiohttp's full Content-Type parse (an email-header parser).
        raw_type = request.headers.get("Content-Type", "")
        ctype = "application/json" if raw_type in _PLAIN_JSON else request.content_type
        if ctype == "application/json" or ctype.endswith("+json"):
            raw = await read_body(request, limit)
            if raw.strip():
                try:
                    body = jsoncodec.loads(raw)
                except ValueError as exc:
                    raise BadRequest(f"The request body is not valid JSON: {exc}",
                                     error_code="SerializationException") from None
                if not isinstance(body, dict):
                    raise BadRequest("The JSON request body must be an object.",
                                     error_code="SerializationException")
                result.data.update(body)
        elif ctype == "application/x-www-form-urlencoded":
            raw = await read_body(request, limit)
            form: dict[str, Any] = {}
            for key, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
                _add(form, key, value)
            result.data.update(form)
        elif ctype.startswith("multipart/"):
            await _read_multipart(request, result, limit=limit, spool_dir=spool_dir, allow_files=allow_files)
        elif ctype in ("", "application/octet-stream", "text/plain") and request.content_length in (None, 0):
            pass
        else:
            raw = await read_body(request, limit)
            if raw.strip():
                raise UnsupportedMediaType(
                    f"Content-Type {ctype!r} is not accepted; send application/json, "
                    "application/x-www-form-urlencoded or multipart/form-data."
                )
    if request.match_info:
        result.data.update(request.match_info)
    return result


async def _read_multipart(
    request: web.Request, result: RequestInput, *, limit: int, spool_dir: Path, allow_files: bool
) -> None:
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError) as exc:
        raise BadRequest(f"The multipart body cannot be read: {exc}") from None
    total = 0
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise BadRequest("Nested multipart bodies are not supported.")
            name = part.name or ""
            if part.filename is None:
                value = bytearray()
                while chunk := await part.read_chunk(_CHUNK):
                    total += len(chunk)
                    if total > limit:
                        raise _too_large(limit)
                    value += chunk
                _add(result.data, name, value.decode(part.get_charset("utf-8"), "replace"))
                continue
            if not allow_files:
                raise BadRequest(f"This API does not take file uploads (field {name!r}).")
            path = spool_dir / f"{uuid.uuid4().hex}.part"
            digest = hashlib.sha256()
            size = 0
            try:
                async with aiofiles.open(path, "wb") as out:
                    while chunk := await part.read_chunk(_CHUNK):
                        size += len(chunk)
                        total += len(chunk)
                        if total > limit:
                            raise _too_large(limit)
                        digest.update(chunk)
                        await out.write(chunk)
            except BaseException:
                with contextlib.suppress(OSError):
                    path.unlink()
                raise
            result.files.append(UploadedFile(
                field=name,
                filename=_SAFE_NAME.sub("_", os.path.basename(unquote(part.filename or "upload")))[:120] or "upload",
                content_type=part.headers.get("Content-Type", "application/octet-stream"),
                path=path,
                size=size,
                sha256=digest.hexdigest(),
            ))
    except BaseException:
        discard_files(result.files)
        raise


def discard_files(files: list[UploadedFile]) -> None:
    """Delete spooled uploads that nothing kept."""
    for f in files:
        with contextlib.suppress(OSError):
            f.path.unlink()
