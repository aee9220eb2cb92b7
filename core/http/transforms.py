"""Media transform APIs, stored artifacts, image variants and file deletion.

Every transform (``ScaleImage``, ``TrimVideo``...) is a registered
:class:`~aiport.core.registry.TransformSpec`; this module serves each one sync
and queued (``Queue*``) on the job engine. Uploaded inputs are kept in the
artifact store under ``input/...`` before the job is queued, so a queued job
survives a restart; outputs are stored as artifacts and returned as URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
from aiohttp import web

from .. import state
from ..errors import ApiError, BadRequest, FieldError, Forbidden, MethodNotAllowed, NotFound, ValidationFailed
from ..jobs.executor import Executor, JobContext
from ..jobs.model import Job, JobResult, JobSpec, Usage
from ..jobs.styles import accept_reply_to, raise_for_job
from ..media import MediaInput, TransformRequest, content_type_for, owner_key_id
from ..registry import TransformSpec
from .auth import authorize
from .dto import api, api_meta, field, response_model
from .inputs import RequestInput, UploadedFile
from .jobs import (
    ArtifactOutput,
    QueueGenerationResponse,
    artifact_results,
    engine_of,
    generation_callback_body,
    principal_of,
    queued_response,
    reply_to_of,
    submit,
    tag_of,
)
from .routes import add_api, add_plain

ARTIFACTS = state.ARTIFACTS
#: How many transforms of a kind run at once on this node (CPU-bound work).
_CPUS = os.cpu_count() or 2
TRANSFORM_CONCURRENCY = {"image": min(4, _CPUS), "video": max(1, _CPUS // 2), "audio": max(1, _CPUS // 2)}
_VARIANT = re.compile(r"(width|height)=(\d{1,5})")
MAX_VARIANT_SIDE = 4096


# --------------------------------------------------------------------------- responses


@response_model()
@attrs.define
class ArtifactGenerationResponse:
    """A sync media call's result: artifact URLs and how long the job took."""

    results: list[ArtifactOutput]
    duration: dt.timedelta | None = None
    job_id: int | None = None
    ref_id: str | None = None


@response_model()
@attrs.define
class DeleteFilesResponse:
    deleted: list[str]
    missing: list[str]
    failed: list[str]


# --------------------------------------------------------------------------- transform DTOs

Position = Literal["TopLeft", "TopRight", "BottomLeft", "BottomRight", "Center"]
ImageFormat = Literal["jpg", "jpeg", "png", "gif", "bmp", "tiff", "webp", "avif"]
VideoFormat = Literal["mp4", "mov", "webm", "mkv", "avi", "wmv", "mpeg", "ogg"]
AudioFormat = Literal["mp3", "wav", "aac", "flac", "ogg", "m4a", "wma"]


@attrs.define
class _JobFields:
    ref_id: str | None = field(max_length=200, description="Client reference, unique; used to poll")
    tag: str | None = field(max_length=200)
    reply_to: str | None = field(max_length=2000, aliases=["ReplyTo"],
                                 description="URL the result is POSTed to (also the ReplyTo header)")


@attrs.define
class ScaleImageFields(_JobFields):
    width: int | None = field(ge=1, le=8192)
    height: int | None = field(ge=1, le=8192)
    image: UploadedFile | None = field(required=True)


@attrs.define
class CropFields(_JobFields):
    x: int = field(required=True, ge=0)
    y: int = field(required=True, ge=0)
    width: int = field(required=True, ge=1)
    height: int = field(required=True, ge=1)


@attrs.define
class CropImageFields(CropFields):
    image: UploadedFile | None = field(required=True)


@attrs.define
class _WatermarkFields(_JobFields):
    position: Position | None = field()
    opacity: float | None = field(ge=0, le=1)
    watermark_scale: float | None = field(gt=0, le=1)


@attrs.define
class WatermarkImageFields(_WatermarkFields):
    image: UploadedFile | None = field(description="The image (or the first uploaded file)")
    watermark: UploadedFile | None = field(description="The watermark (or the second uploaded file)")


@attrs.define
class ConvertImageFields(_JobFields):
    output_format: ImageFormat = field(required=True)
    image: UploadedFile | None = field(required=True)


@attrs.define
class ScaleVideoFields(_JobFields):
    width: int | None = field(ge=2, le=7680)
    height: int | None = field(ge=2, le=4320)
    video: UploadedFile | None = field(required=True)


@attrs.define
class CropVideoFields(CropFields):
    video: UploadedFile | None = field(required=True)


@attrs.define
class WatermarkVideoFields(_WatermarkFields):
    video: UploadedFile | None = field(description="The video (or the first uploaded file)")
    watermark: UploadedFile | None = field(description="The watermark image (or the second uploaded file)")


@attrs.define
class ConvertVideoFields(_JobFields):
    output_format: VideoFormat = field(required=True)
    video: UploadedFile | None = field(required=True)


@attrs.define
class TrimVideoFields(_JobFields):
    start_time: str = field(required=True, max_length=20, description="Seconds or [h:]mm:ss[.fff]")
    end_time: str | None = field(max_length=20)
    video: UploadedFile | None = field(required=True)


@attrs.define
class ConvertAudioFields(_JobFields):
    output_format: AudioFormat = field(required=True)
    audio: UploadedFile | None = field(required=True)


#: transform name -> (fields class, upload fields in order, summary)
TRANSFORMS: dict[str, tuple[type, tuple[str, ...], str]] = {
    "ScaleImage": (ScaleImageFields, ("image",), "Resize an image; one side given keeps the aspect ratio"),
    "CropImage": (CropImageFields, ("image",), "Crop an image to X, Y, Width, Height"),
    "WatermarkImage": (WatermarkImageFields, ("image", "watermark"), "Watermark an image"),
    "ConvertImage": (ConvertImageFields, ("image",), "Convert an image to another format"),
    "ScaleVideo": (ScaleVideoFields, ("video",), "Resize a video; one side given keeps the aspect ratio"),
    "CropVideo": (CropVideoFields, ("video",), "Crop a video to X, Y, Width, Height"),
    "WatermarkVideo": (WatermarkVideoFields, ("video", "watermark"), "Watermark a video"),
    "ConvertVideo": (ConvertVideoFields, ("video",), "Convert a video to another container/codec"),
    "TrimVideo": (TrimVideoFields, ("video",), "Cut a video to StartTime..EndTime"),
    "ConvertAudio": (ConvertAudioFields, ("audio",), "Convert audio to another format"),
}


def _make_dto(name: str, fields: type, summary: str, queued: bool) -> type:
    cls = attrs.make_class(name, {}, bases=(fields,))
    cls.__doc__ = summary
    response = QueueGenerationResponse if queued else ArtifactGenerationResponse
    return api(name, methods=("POST",), auth="key", uploads=True, response=response, summary=summary,
               tags=["transforms"])(cls)


DTOS: dict[str, tuple[type, type]] = {
    name: (_make_dto(name, fields, summary, False), _make_dto(f"Queue{name}", fields, summary, True))
    for name, (fields, _uploads, summary) in TRANSFORMS.items()
}


# --------------------------------------------------------------------------- staging inputs


def _assign_uploads(inp: RequestInput, wanted: tuple[str, ...]) -> dict[str, UploadedFile]:
    """Uploads by the fields a transform wants; files under other names fill the gaps in order
    (AI Server's WatermarkImage takes its two files by position)."""
    named = {f.field.lower(): f for f in inp.files}
    chosen = {w: named[w] for w in wanted if w in named}
    spare = [f for f in inp.files if f.field.lower() not in wanted]
    for w in wanted:
        if w not in chosen and spare:
            chosen[w] = spare.pop(0)
    missing = [w for w in wanted if w not in chosen]
    if missing:
        raise ValidationFailed([FieldError("NotEmpty", m.capitalize(),
                                           f"'{m.capitalize()}' must not be empty: upload a file in the '{m}' field.")
                                for m in missing])
    return chosen


async def keep_inputs(request: web.Request, uploads: Mapping[str, UploadedFile]) -> dict[str, dict[str, Any]]:
    """Move uploads into the artifact store (``input/...``); their records for the job."""
    store: Any = request.app[ARTIFACTS]
    key_id = principal_of(request).key_id
    kept = {}
    for field_name, upload in uploads.items():
        stored = await store.put_file(upload.path, ext=upload.extension, key_id=key_id, kind="input",
                                      sha256=upload.sha256)
        kept[field_name] = {"path": stored.path, "contentType": upload.content_type, "fileName": upload.filename}
    return kept


async def stage_inputs(store: Any, inputs: Mapping[str, Any], workdir: Path) -> dict[str, MediaInput]:
    """Local files for a job's stored inputs: the store's own file when it has one, else a download."""
    staged = {}
    for field_name, record in inputs.items():
        found = await store.stat(record["path"])
        if found is None:
            raise NotFound(f"The uploaded {field_name} of this job is no longer stored.")
        path = found.local_path
        if path is None:
            path = workdir / f"input-{field_name}{Path(record['path']).suffix}"
            import aiofiles

            async with aiofiles.open(path, "wb") as out:
                async for chunk in store.iter_chunks(record["path"]):
                    await out.write(chunk)
        staged[field_name] = MediaInput(field=field_name, path=path, content_type=record.get("contentType") or
                                        content_type_for(Path(record["path"]).suffix),
                                        filename=record.get("fileName") or Path(record["path"]).name)
    return staged


class TransformExecutor(Executor):
    """Runs one transform: stage inputs, run it off the loop, store the outputs."""

    def __init__(self, spec: TransformSpec, store: Any, work_root: Path, timeout: float) -> None:
        self.spec = spec
        self.store = store
        self.work_root = work_root
        self.timeout = timeout

    async def run(self, job: Job, ctx: JobContext) -> JobResult:
        workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=f"job{job.id}-", dir=self.work_root))
        try:
            inputs = await stage_inputs(self.store, job.inputs, workdir)
            await ctx.progress(None, f"Running {self.spec.name}")
            try:
                outputs = await self.spec.run(TransformRequest(
                    inputs=inputs, args=dict(job.request.get("args", {})), workdir=workdir, timeout=self.timeout))
            except ApiError as exc:
                if exc.status < 500:  # the input is bad: it is not worth keeping
                    for record in job.inputs.values():
                        with contextlib.suppress(ApiError, OSError):
                            await self.store.delete(record["path"])
                raise
            await ctx.executed()
            results = []
            for out in outputs:
                stored = await self.store.put_file(out.path, ext=out.ext, key_id=job.key_id)
                results.append({"path": stored.path, "fileName": stored.path.rsplit("/", 1)[-1],
                                "outputFormat": out.ext, "width": out.width, "height": out.height,
                                "duration": out.duration, "size": stored.size})
            return JobResult(response={"results": results}, outputs=[r["path"] for r in results],
                             usage=Usage(provider="local", model=self.spec.name))
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)

    def callback_body(self, job: Job) -> Mapping[str, Any] | None:
        return generation_callback_body(job, (job.response or {}).get("results", []), text=False)

    def provider_of(self, job: Job) -> str | None:
        return "local"


def _args(dto: Any) -> dict[str, Any]:
    skip = {"ref_id", "tag", "reply_to", "image", "video", "audio", "watermark", "mask"}
    return {a.name: getattr(dto, a.name) for a in attrs.fields(type(dto)) if a.name not in skip}


def transform_handler(name: str, queued: bool) -> Any:
    spec_kind_uploads = TRANSFORMS[name][1]

    async def handle(request: web.Request, dto: Any) -> Any:
        registry = request.app[state.REGISTRY]
        if name not in registry.transforms:
            raise NotFound(f"No plugin provides the {name} transform (is it disabled?).")
        spec = registry.transforms[name]
        uploads = _assign_uploads(request[state.INPUT], spec_kind_uploads)
        job_spec = JobSpec(api=name, queue=f"local-{spec.kind}", request={"args": _args(dto)},
                           ref_id=dto.ref_id, tag=tag_of(request, dto.tag), reply_to=reply_to_of(request, dto.reply_to))
        # Checked before keeping anything, and only once.
        await accept_reply_to(job_spec.reply_to, allow_private=request.app[state.CONFIG].jobs.allow_private_callbacks)
        inputs = await keep_inputs(request, uploads)
        job = await submit(request, attrs.evolve(job_spec, inputs=inputs), reply_to_accepted=True)
        if queued:
            return queued_response(request, job, "GetArtifactGenerationStatus")
        return await finish_sync(request, job)

    return handle


async def finish_sync(request: web.Request, job: Job) -> ArtifactGenerationResponse:
    job = await engine_of(request).wait(job, request.app[state.CONFIG].jobs.sync_timeout_media)
    raise_for_job(job)
    return ArtifactGenerationResponse(
        results=artifact_results(request, job), job_id=job.id, ref_id=job.ref_id,
        duration=dt.timedelta(milliseconds=job.duration_ms) if job.duration_ms is not None else None)


# --------------------------------------------------------------------------- artifacts and variants


def _store(request: web.Request) -> Any:
    return request.app[ARTIFACTS]


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
    if "ScaleImage" not in registry.transforms or original.local_path is None:
        raise NotFound("Variants need the ScaleImage transform and a local artifact store.")
    work_root = request.app[state.SPOOL_DIR].parent / ".work"
    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="variant-", dir=work_root))
    try:
        image = MediaInput(field="image", path=original.local_path, content_type=original.content_type,
                           filename=original.path.rsplit("/", 1)[-1])
        (out,) = await registry.transforms["ScaleImage"].run(TransformRequest(
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


def setup_engine(app: web.Application) -> None:
    engine = app[state.ENGINE]
    config = app[state.CONFIG]
    work_root = app[state.SPOOL_DIR].parent / ".work"
    for spec in app[state.REGISTRY].transforms:
        engine.add_queue(f"local-{spec.kind}", TRANSFORM_CONCURRENCY.get(spec.kind, 1))
        engine.register_executor(spec.name, TransformExecutor(spec, app[ARTIFACTS], work_root, config.jobs.timeout))


async def artifact_store(app: web.Application) -> Any:
    """cleanup_ctx: the configured artifact store, and a scratch folder for running jobs."""
    config = app[state.CONFIG]
    registry = app[state.REGISTRY]
    app[ARTIFACTS] = registry.artifact_stores[config.storage.artifact_store].factory(config)
    work_root = app[state.SPOOL_DIR].parent / ".work"
    await asyncio.to_thread(work_root.mkdir, parents=True, exist_ok=True)
    yield
    with contextlib.suppress(OSError):
        await asyncio.to_thread(shutil.rmtree, work_root, True)


def install(app: web.Application) -> None:
    for name, (sync_dto, queue_dto) in DTOS.items():
        add_api(app, sync_dto, transform_handler(name, queued=False))
        add_api(app, queue_dto, transform_handler(name, queued=True))
    add_plain(app, "GET", "/artifacts/{path:.*}", get_artifact, "A stored artifact (Range, ETag, ?download=true)")
    add_plain(app, "GET", "/variants/{variant}/{path:.*}", get_variant,
              "A resized variant of an image artifact: /variants/width=N,height=N/{path}")
    add_plain(app, "DELETE", "/files/{path:.*}", delete_file, "Delete a stored file of the calling key")
    add_api(app, DeleteFiles, delete_files)
    app[state.ENGINE_SETUP].append(setup_engine)
