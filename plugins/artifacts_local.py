"""The ``local`` artifact store: generated files and uploaded inputs in a folder on this machine.

Layout, as AI Server's (spec section 5), content-addressed so identical bytes are
stored once and different outputs never overwrite each other::

    {root}/{yyyy}/{MM}/{dd}/{keyId}/{sha256}.{ext}          outputs
    {root}/input/{yyyy}/{MM}/{dd}/{keyId}/{sha256}.{ext}    uploaded inputs

Dates are UTC. A file appears in its final place atomically (written to a
hidden temporary file in the same folder, then ``os.replace``), so readers never
see half a file; a spooled upload or a transform output on the same filesystem
is moved in with one rename.

Paths handed to :meth:`LocalArtifactStore.resolve` (and so to ``stat``, ``open``,
``delete``) come from URLs: they are checked to be relative, free of ``..``,
backslashes and NUL, and to stay inside the root after symlinks are followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import aiofiles
from aiport.core import hookimpl
from aiport.core.errors import BadRequest, NotFound
from aiport.core.media import ArtifactFile, StoredArtifact, content_type_for, normalize_ext, owner_key_id
from aiport.core.registry import ArtifactStoreType

if TYPE_CHECKING:
    from aiport.core.config import Config

Kind = Literal["output", "input"]
__all__ = ["LocalArtifactStore", "artifact_path", "check_relative_path", "owner_key_id"]

_CHUNK = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_PATH = 1024


def check_relative_path(path: str) -> list[str]:
    """The segments of an artifact path from a request, or a 400/404 if it is not a plain relative path.

    Refused with 400: empty, too long, NUL, backslashes, absolute paths (``/x``,
    ``C:x``), empty, ``.`` and ``..`` segments. Refused with 404: hidden names
    (``.x``), which only the store's temporary files have.
    """
    if not isinstance(path, str) or not path or len(path) > _MAX_PATH:
        raise BadRequest("The artifact path is empty or too long.")
    if "\x00" in path or "\\" in path:
        raise BadRequest("The artifact path contains characters that are not allowed.")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        raise BadRequest("The artifact path must be relative.")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BadRequest("The artifact path may not contain empty, '.' or '..' segments.")
    if any(part.startswith(".") for part in parts):
        raise NotFound("No such artifact.")
    return parts


def artifact_path(*, sha256: str, ext: str, key_id: int, kind: Kind = "output",
                  when: dt.datetime | None = None) -> str:
    """The relative path a file with digest ``sha256`` gets (naive ``when`` is taken as UTC)."""
    if kind not in ("output", "input"):
        raise ValueError(f"kind must be 'output' or 'input', not {kind!r}")
    if isinstance(key_id, bool) or not isinstance(key_id, int) or key_id < 0:
        raise ValueError(f"key_id must be an integer >= 0, not {key_id!r}")
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a lower-case hex sha256: {sha256!r}")
    when = when or dt.datetime.now(dt.UTC)
    when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    rel = f"{when:%Y}/{when:%m}/{when:%d}/{key_id}/{sha256}.{normalize_ext(ext)}"
    return f"input/{rel}" if kind == "input" else rel


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class LocalArtifactStore:
    """Artifacts in the folder ``root`` (see the module doc for the layout)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ writing

    async def put_file(
        self,
        source: Path | bytes,
        *,
        ext: str,
        key_id: int,
        kind: Kind = "output",
        when: dt.datetime | None = None,
        sha256: str | None = None,
        keep_source: bool = False,
    ) -> StoredArtifact:
        """Store ``source`` content-addressed and return its record.

        :param source: bytes, or a local file. A file is **moved** in (a rename when
            it is on the same filesystem, else a copy and delete) unless ``keep_source``.
        :param ext: the extension to name it with (``png``; lower-cased, 1-8 letters/digits).
        :param key_id: the API key id owning it (0 for requests without a key).
        :param kind: ``output`` (generated) or ``input`` (an upload, under ``input/``).
        :param when: the date for the path (default: now, UTC); injectable for tests.
        :param sha256: the file's hex digest when the caller already has it (an
            :class:`~aiport.core.http.inputs.UploadedFile` does), saving a second read.
        :returns: the :class:`~aiport.core.media.StoredArtifact`; storing bytes that
            are already stored under the same path keeps the existing file.
        """
        ext = normalize_ext(ext)
        if sha256 is not None and not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a lower-case hex sha256: {sha256!r}")
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
            digest = sha256 or hashlib.sha256(data).hexdigest()
            rel = artifact_path(sha256=digest, ext=ext, key_id=key_id, kind=kind, when=when)
            size = await asyncio.to_thread(self._put_bytes, data, rel)
        else:
            rel, digest, size = await asyncio.to_thread(
                self._put_path, Path(source), ext, key_id, kind, when, sha256, keep_source
            )
        return StoredArtifact(path=rel, size=size, sha256=digest, content_type=content_type_for(ext))

    def _target(self, rel: str) -> Path:
        target = self.root.joinpath(*rel.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def _temp(self, target: Path) -> Path:
        # Hidden (resolve() refuses dot-names) and in the target's folder, so os.replace is atomic.
        return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")

    def _put_bytes(self, data: bytes, rel: str) -> int:
        target = self._target(rel)
        if target.is_file():
            return target.stat().st_size  # same digest, same bytes: already stored
        temp = self._temp(target)
        try:
            with open(temp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return len(data)

    def _put_path(self, source: Path, ext: str, key_id: int, kind: Kind, when: dt.datetime | None,
                  sha256: str | None, keep_source: bool) -> tuple[str, str, int]:
        if not source.is_file():
            raise FileNotFoundError(errno.ENOENT, "not a file", str(source))
        if sha256 is None:
            sha256, size = _hash_file(source)
        else:
            size = source.stat().st_size
        rel = artifact_path(sha256=sha256, ext=ext, key_id=key_id, kind=kind, when=when)
        target = self._target(rel)
        if target.is_file():
            if not keep_source:
                with contextlib.suppress(OSError):
                    source.unlink()
            return rel, sha256, target.stat().st_size
        if not keep_source:
            try:
                os.replace(source, target)  # one rename: atomic, no copy
                return rel, sha256, size
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        temp = self._temp(target)
        try:
            shutil.copyfile(source, temp)
            with open(temp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        if not keep_source:
            with contextlib.suppress(OSError):
                source.unlink()
        return rel, sha256, size

    async def put_at(self, path: str, source: Path) -> ArtifactFile:
        """Store ``source`` (moved in) at the relative ``path`` itself, replacing what is there.

        For derived files kept beside their original (image variants), whose names
        say what they are rather than what they contain.
        """
        def put() -> ArtifactFile:
            target = self._resolve(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = self._temp(target)
            shutil.move(str(source), temp)
            os.replace(temp, target)
            found = self._stat(path)
            assert found is not None
            return found

        return await asyncio.to_thread(put)

    # ------------------------------------------------------------------ reading

    def _resolve(self, path: str) -> Path:
        parts = check_relative_path(path)
        root = os.path.realpath(self.root)
        full = os.path.realpath(os.path.join(root, *parts))
        if os.path.commonpath([root, full]) != root:
            raise NotFound("No such artifact.")  # a symlink pointing out of the store
        return Path(full)

    async def resolve(self, path: str) -> Path:
        """The local file for the relative ``path``, after checking it stays inside the store.

        Raises :class:`~aiport.core.errors.BadRequest` for a malformed path and
        :class:`~aiport.core.errors.NotFound` for one that leaves the store; the
        file itself need not exist.
        """
        return await asyncio.to_thread(self._resolve, path)

    def _stat(self, path: str) -> ArtifactFile | None:
        try:
            full = self._resolve(path)
            st = full.stat()
        except (NotFound, FileNotFoundError, NotADirectoryError):
            return None
        if not full.is_file():
            return None
        return ArtifactFile(
            path=path,
            size=st.st_size,
            content_type=content_type_for(full.suffix),
            modified=dt.datetime.fromtimestamp(st.st_mtime, dt.UTC),
            local_path=full,
        )

    async def stat(self, path: str) -> ArtifactFile | None:
        """The stored file at ``path``, or ``None`` when there is none (400 for a malformed path)."""
        return await asyncio.to_thread(self._stat, path)

    async def open(self, path: str) -> ArtifactFile | None:
        """The stored file at ``path`` for serving, or ``None``.

        Serve ``local_path`` with ``aiohttp.web.FileResponse`` (sendfile, ranges and
        conditional requests for free), or stream it with :meth:`iter_chunks`.
        """
        return await self.stat(path)

    async def iter_chunks(self, path: str, chunk_size: int = _CHUNK) -> AsyncIterator[bytes]:
        """The bytes of the stored file at ``path``, in chunks; :class:`NotFound` when missing."""
        found = await self.stat(path)
        if found is None or found.local_path is None:
            raise NotFound("No such artifact.")
        async with aiofiles.open(found.local_path, "rb") as f:
            while chunk := await f.read(chunk_size):
                yield chunk

    async def read_bytes(self, path: str) -> bytes:
        """The whole stored file at ``path``; :class:`NotFound` when missing."""
        return b"".join([chunk async for chunk in self.iter_chunks(path)])

    # ------------------------------------------------------------------ deleting

    def _delete(self, path: str) -> bool:
        try:
            full = self._resolve(path)
            if not full.is_file():
                return False
            full.unlink()
        except (NotFound, FileNotFoundError, NotADirectoryError):
            return False
        return True

    async def delete(self, path: str) -> bool:
        """Delete the stored file at ``path``; ``False`` when there was none (400 for a malformed path)."""
        return await asyncio.to_thread(self._delete, path)


def _factory(config: Config) -> LocalArtifactStore:
    return LocalArtifactStore(config.resolve_path(config.storage.artifacts_path))


LOCAL_STORE = ArtifactStoreType(
    name="local",
    factory=_factory,
    description="Files in storage.artifacts_path, as {yyyy}/{MM}/{dd}/{keyId}/{sha256}.{ext}.",
)


@hookimpl
def register_artifact_stores(register: Callable[[ArtifactStoreType], None]) -> None:
    """Register the ``local`` artifact store."""
    register(LOCAL_STORE)
