"""Stored files over HTTP: artifacts, resized image variants, and deleting a key's files.

Artifacts are served from the configured artifact store under ``/artifacts/{path}``;
``/variants/width=N,height=N/{path}`` resizes an image artifact with the registered
``ScaleImage`` transform and caches the result beside the original.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web

from .. import state
from ..errors import BadRequest, Forbidden, MethodNotAllowed, NotFound
from ..media import MediaInput, TransformRequest, owner_key_id
from .auth import authorize
from .dto import api, api_meta, field, response_model
from .jobs import principal_of
from .routes import add_api, add_plain

_VARIANT = re.compile(r"(width|height)=(\d{1,5})")
MAX_VARIANT_SIDE = 4096
#: The transform variants are made with; its ``fit="within"`` argument keeps the aspect ratio.
VARIANT_TRANSFORM = "ScaleImage"


@response_model()
@attrs.define
class DeleteFilesResponse:
    """Which of the paths asked for were deleted, were not there, or may not be deleted."""

    deleted: list[str]
    missing: list[str]
    failed: list[str]


# --------------------------------------------------------------------------- artifacts and variants


def _store(request: web.Request) -> Any:
    return request.app[state.ARTIFACTS]


async def get_artifact(request: web.Request) -> web.StreamResponse:
    """``GET /artifacts/{path}``: the stored file, cacheable forever (its name is its hash)."""
    path = request.match_info["path"]
    found = await _store(request).stat(path)
    if found is None:
        raise NotFound("No such artifact.")
    return _serve(request, found, immutable=True)


def _serve(request: web.Request, found: Any, *, immutable: bool) -> web.StreamResponse:
    headers = {"Cache-Control": "public, max-age=31536000, immutable" if immutable else "public, max-age=3600",
               "Content-Type": found.content_type, "X-Content-Type-Options": "nosniff",
               # Uploads are served from aiport's own origin: an SVG or HTML file opened directly
               # must not run script there (where the UI keeps its key).
               "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'; media-src 'self'"}
    if request.query.get("download", "").lower() in ("true", "1"):
        headers["Content-Disposition"] = f'attachment; filename="{found.path.rsplit("/", 1)[-1]}"'
    if found.local_path is not None:
        return web.FileResponse(found.local_path, headers=headers)
    raise NotFound("This artifact store cannot serve files directly.")


def parse_variant(variant: str) -> tuple[int | None, int | None]:
    """``width=N``, ``height=N`` or both (comma-separated); anything else is a 400."""
    width = height = None
    for option in variant.split(","):
        m = _VARIANT.fullmatch(option.strip())
        if m is None:
            raise BadRequest(f"Unknown variant option {option!r}; use width=N, height=N or width=N,height=N.",
                             error_code="InvalidVariant")
        value = int(m.group(2))
        if not 1 <= value <= MAX_VARIANT_SIDE:
            raise BadRequest(f"Variant {m.group(1)} must be between 1 and {MAX_VARIANT_SIDE}.",
                             error_code="InvalidVariant")
        if m.group(1) == "width":
            width = value
        else:
            height = value
    if width is None and height is None:
        raise MethodNotAllowed("A variant needs width=N, height=N or both.")
    return width, height


async def get_variant(request: web.Request) -> web.StreamResponse:
    """``GET /variants/width=N,height=N/{path}``: a resized copy (aspect kept), cached beside the original."""
    width, height = parse_variant(request.match_info["variant"])
    path = request.match_info["path"]
    store = _store(request)
    original = await store.stat(path)
    if original is None:
        raise NotFound("No such artifact.")
    if not original.content_type.startswith("image/"):
        raise BadRequest("Variants are made of images only.", error_code="InvalidVariant")
    stem, _, ext = path.rpartition(".")
    suffix = f"_{width}w{height}h" if width and height else (f"_{width}w" if width else f"_{height}h")
    variant_path = f"{stem}{suffix}.{ext}"
    cached = await store.stat(variant_path)
    if cached is None or cached.modified < original.modified:
        cached = await _make_variant(request, original, variant_path, width, height)
    return _serve(request, cached, immutable=False)


async def _make_variant(request: web.Request, original: Any, variant_path: str, width: int | None,
                        height: int | None) -> Any:
    registry = request.app[state.REGISTRY]
    if VARIANT_TRANSFORM not in registry.transforms or original.local_path is None:
        raise NotFound(f"Variants need the {VARIANT_TRANSFORM} transform and a local artifact store.")
    work_root = request.app[state.SPOOL_DIR].parent / ".work"
    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="variant-", dir=work_root))
    try:
        image = MediaInput(field="image", path=original.local_path, content_type=original.content_type,
                           filename=original.path.rsplit("/", 1)[-1])
        (out,) = await registry.transforms[VARIANT_TRANSFORM].run(TransformRequest(
            inputs={"image": image}, args={"width": width, "height": height, "fit": "within"}, workdir=workdir,
            timeout=60.0))
        return await _store(request).put_at(variant_path, out.path)
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


# --------------------------------------------------------------------------- deleting files


@api(methods=("POST",), auth="key", response=DeleteFilesResponse, tags=["files"])
@attrs.define
class DeleteFiles:
    """Delete stored files; each must belong to the calling key (the admin may delete any)."""

    paths: list[str] = field(required=True, min_length=1, max_length=1000)


def _relative(path: str) -> str:
    path = path.strip()
    for prefix in ("/artifacts/", "artifacts/", "/"):
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


def _may_delete(request: web.Request, path: str) -> bool:
    principal = principal_of(request)
    return principal.is_admin or owner_key_id(path) == principal.key_id


async def delete_files(request: web.Request, dto: DeleteFiles) -> DeleteFilesResponse:
    result = DeleteFilesResponse(deleted=[], missing=[], failed=[])
    store = _store(request)
    for raw in dto.paths:
        path = _relative(raw)
        if not _may_delete(request, path):
            result.failed.append(raw)
            continue
        try:
            (result.deleted if await store.delete(path) else result.missing).append(raw)
        except (BadRequest, NotFound):
            result.failed.append(raw)
    return result


async def delete_file(request: web.Request) -> web.Response:
    """``DELETE /files/{path}``: 204 when deleted, 404 when absent, 403 when not the caller's."""
    await authorize(request, api_meta(DeleteFiles))
    path = _relative(request.match_info["path"])
    if not _may_delete(request, path):
        raise Forbidden("This file belongs to another API key.")
    if not await _store(request).delete(path):
        raise NotFound("No such file.")
    return web.Response(status=204)


# --------------------------------------------------------------------------- wiring


async def artifact_store(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the configured artifact store, and a scratch folder for running jobs."""
    config = app[state.CONFIG]
    registry = app[state.REGISTRY]
    app[state.ARTIFACTS] = registry.artifact_stores[config.storage.artifact_store].factory(config)
    work_root = app[state.SPOOL_DIR].parent / ".work"
    await asyncio.to_thread(work_root.mkdir, parents=True, exist_ok=True)
    yield
    with contextlib.suppress(OSError):
        await asyncio.to_thread(shutil.rmtree, work_root, True)


def install(app: web.Application) -> None:
    """Serve artifacts and variants, and the file deletion APIs."""
    add_plain(app, "GET", "/artifacts/{path:.*}", get_artifact, "A stored artifact (Range, ETag, ?download=true)")
    add_plain(app, "GET", "/variants/{variant}/{path:.*}", get_variant,
              "A resized variant of an image artifact: /variants/width=N,height=N/{path}")
    add_plain(app, "DELETE", "/files/{path:.*}", delete_file, "Delete a stored file of the calling key")
    add_api(app, DeleteFiles, delete_files)
