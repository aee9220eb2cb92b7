"""Media transform APIs, built from the registry: every registered transform is served sync and queued.

Each :class:`~aiport.core.registry.TransformSpec` becomes two request DTOs at
``create_app`` time: ``/api/{Name}`` (answers with the artifact URLs) and
``/api/Queue{Name}`` (answers at once; poll ``GetArtifactGenerationStatus``). Both
are made of the same attributes, in AI Server's order: the job fields core adds
(``RefId``, ``Tag``, ``ReplyTo``), the transform's own ``fields``, then its
uploads; so both validate alike and the OpenAPI document lists them from the
declaration. Uploads are kept in the artifact store before the job is queued (see
:mod:`aiport.core.execution.staging`) and the job runs on a
:class:`~aiport.core.execution.transforms.TransformExecutor`.
"""

from __future__ import annotations

from typing import Any

import attrs
from aiohttp import web

from .. import state
from ..errors import FieldError, PluginError, ValidationFailed
from ..execution.staging import keep_inputs
from ..execution.transforms import TRANSFORM_CONCURRENCY, TransformExecutor, transform_queue
from ..jobs.model import JobSpec
from ..jobs.styles import accept_reply_to
from ..registry import TransformSpec
from .dto import api, field, type_hints
from .inputs import RequestInput, UploadedFile
from .jobs import (
    ArtifactGenerationResponse,
    QueueGenerationResponse,
    finish_sync,
    principal_of,
    queued_response,
    reply_to_of,
    submit,
    tag_of,
)
from .routes import add_api

_ORDINALS = ("first", "second", "third", "fourth", "fifth")
#: The type of an upload attribute (``Any``: attrs types a field's ``type`` as a class, not a union).
_UPLOAD_TYPE: Any = UploadedFile | None


@attrs.define
class JobFields:
    """The fields every transform request has; core adds them, a plugin does not declare them."""

    ref_id: str | None = field(max_length=200, description="Client reference, unique; used to poll")
    tag: str | None = field(max_length=200)
    reply_to: str | None = field(max_length=2000, aliases=["ReplyTo"],
                                 description="URL the result is POSTed to (also the ReplyTo header)")


# --------------------------------------------------------------------------- request DTOs


def _copy(attribute: attrs.Attribute, hint: Any) -> Any:
    return attrs.field(default=attribute.default, validator=attribute.validator, converter=attribute.converter,
                       metadata=attribute.metadata, type=hint)


def _upload_field(name: str, position: int, count: int) -> Any:
    if count == 1:
        return attrs.field(default=None, metadata=field(required=True).metadata, type=_UPLOAD_TYPE)
    # With several uploads files are matched by position too (see _assign_uploads), so none is
    # required here: a missing one is reported once the files are assigned.
    ordinal = _ORDINALS[position] if position < len(_ORDINALS) else f"#{position + 1}"
    described = field(description=f"The {name} (or the {ordinal} uploaded file)")
    return attrs.field(default=None, metadata=described.metadata, type=_UPLOAD_TYPE)


def request_attributes(spec: TransformSpec) -> dict[str, Any]:
    """The attributes of a transform's request DTOs, in wire order: job fields, its fields, its uploads."""
    taken: dict[str, str] = {}
    out: dict[str, Any] = {}
    sources: list[tuple[type, str]] = [(JobFields, "a job field core adds")]
    if spec.fields is not None:
        sources.append((spec.fields, f"a field of {spec.fields.__name__}"))
    for cls, what in sources:
        hints = type_hints(cls)
        for attribute in attrs.fields(cls):
            if attribute.name in taken:
                raise PluginError(f"transform {spec.name!r}: {attribute.name!r} is {what} and already "
                                  f"{taken[attribute.name]}")
            taken[attribute.name] = what
            out[attribute.name] = _copy(attribute, hints.get(attribute.name, Any))
    for position, upload in enumerate(spec.uploads):
        if upload in taken:
            raise PluginError(f"transform {spec.name!r}: the upload {upload!r} is already {taken[upload]}")
        taken[upload] = "an upload"
        out[upload] = _upload_field(upload, position, len(spec.uploads))
    return out


def request_dtos(spec: TransformSpec) -> tuple[type, type]:
    """The sync ``{Name}`` and queued ``Queue{Name}`` request DTOs of a transform."""
    summary = spec.summary or spec.description.strip().split("\n")[0] or spec.name
    dtos = []
    for name, response in ((spec.name, ArtifactGenerationResponse), (f"Queue{spec.name}", QueueGenerationResponse)):
        cls = attrs.make_class(name, request_attributes(spec))
        cls.__doc__ = summary
        dtos.append(api(name, methods=("POST",), auth="key", uploads=True, response=response, summary=summary,
                        tags=["transforms"])(cls))
    return dtos[0], dtos[1]


# --------------------------------------------------------------------------- handling a request


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


def transform_handler(spec: TransformSpec, *, queued: bool) -> Any:
    """The handler of a transform's sync (or, with ``queued``, its ``Queue*``) DTO."""
    arg_names = tuple(a.name for a in attrs.fields(spec.fields)) if spec.fields is not None else ()

    async def handle(request: web.Request, dto: Any) -> Any:
        uploads = _assign_uploads(request[state.INPUT], spec.uploads)
        args = {name: getattr(dto, name) for name in arg_names}
        job_spec = JobSpec(api=spec.name, queue=transform_queue(spec), request={"args": args}, ref_id=dto.ref_id,
                           tag=tag_of(request, dto.tag), reply_to=reply_to_of(request, dto.reply_to))
        # Checked before keeping anything, and only once.
        await accept_reply_to(job_spec.reply_to, allow_private=request.app[state.CONFIG].jobs.allow_private_callbacks)
        inputs = await keep_inputs(request.app[state.ARTIFACTS], uploads, principal_of(request).key_id)
        job = await submit(request, attrs.evolve(job_spec, inputs=inputs), reply_to_accepted=True)
        if queued:
            return queued_response(request, job, "GetArtifactGenerationStatus")
        return await finish_sync(request, job)

    return handle


# --------------------------------------------------------------------------- wiring


def setup_engine(app: web.Application) -> None:
    """A queue per transform kind and an executor per transform, once the engine exists."""
    engine = app[state.ENGINE]
    config = app[state.CONFIG]
    work_root = app[state.SPOOL_DIR].parent / ".work"
    for spec in app[state.REGISTRY].transforms:
        engine.add_queue(transform_queue(spec), TRANSFORM_CONCURRENCY.get(spec.kind, 1))
        engine.register_executor(spec.name, TransformExecutor(spec, app[state.ARTIFACTS], work_root,
                                                              config.jobs.timeout))


def install(app: web.Application) -> None:
    """Serve every registered transform, sync and queued."""
    for spec in app[state.REGISTRY].transforms:
        sync_dto, queue_dto = request_dtos(spec)
        add_api(app, sync_dto, transform_handler(spec, queued=False))
        add_api(app, queue_dto, transform_handler(spec, queued=True))
    app[state.ENGINE_SETUP].append(setup_engine)
