"""Generative media APIs: TextToImage, ImageToImage, ImageWithMask, ImageUpscale, ImageToText,
TextToSpeech and SpeechToText, each sync and queued (``Queue*``) on the job engine.

Requests are validated (sizes, batch, prompt length, uploaded media type) before
anything is kept or queued; uploads are kept under ``input/...``; the job runs on
the media provider that serves the model with the most free slots, fails over
to the next one on a retryable error, and its outputs become artifacts. Unlike AI
Server, ``RefId`` and ``Tag`` are kept for every call, sync ones included.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any

import attrs
from aiohttp import web

from .. import state
from ..errors import FieldError, ValidationFailed
from ..execution.generation import GenerationExecutor
from ..execution.staging import keep_inputs
from ..jobs.model import JobSpec
from ..jobs.styles import accept_reply_to, raise_for_job
from ..media import (
    IMAGE_TO_IMAGE,
    IMAGE_TO_TEXT,
    IMAGE_UPSCALE,
    IMAGE_WITH_MASK,
    SPEECH_TO_TEXT,
    TEXT_TASKS,
    TEXT_TO_IMAGE,
    TEXT_TO_SPEECH,
)
from ..state import ARTIFACTS
from .dto import api, field, response_model
from .inputs import UploadedFile
from .jobs import (
    ArtifactGenerationResponse,
    QueueGenerationResponse,
    TextOutput,
    engine_of,
    finish_sync,
    principal_of,
    queued_response,
    reply_to_of,
    submit,
    tag_of,
)
from .routes import add_api

MAX_PROMPT = 4000
#: Image sides must be multiples of this (latent-space models work in 8-pixel blocks).
SIZE_MULTIPLE = 8
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
_AUDIO_MAGIC = (b"RIFF", b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"OggS", b"fLaC", b"\x1aE\xdf\xa3")


@response_model()
@attrs.define
class TextGenerationResponse:
    results: list[TextOutput]
    duration: dt.timedelta | None = None
    job_id: int | None = None
    ref_id: str | None = None


# --------------------------------------------------------------------------- request fields


@attrs.define
class _Common:
    model: str | None = field(max_length=200, description="Gateway model id (default: the task's first model)")
    seed: int | None = field(ge=0)
    ref_id: str | None = field(max_length=200)
    tag: str | None = field(max_length=200)
    reply_to: str | None = field(max_length=2000, description="URL the result is POSTed to")
    provider: str | None = field(description="Force this media provider")


@attrs.define
class TextToImageFields(_Common):
    positive_prompt: str = field(required=True, max_length=MAX_PROMPT)
    negative_prompt: str | None = field(max_length=MAX_PROMPT)
    width: int | None = field(ge=64, le=2048)
    height: int | None = field(ge=64, le=2048)
    batch_size: int | None = field(ge=1, le=10)


@attrs.define
class ImageToImageFields(_Common):
    positive_prompt: str = field(required=True, max_length=MAX_PROMPT)
    negative_prompt: str | None = field(max_length=MAX_PROMPT)
    denoise: float | None = field(ge=0, le=1)
    batch_size: int | None = field(ge=1, le=10)
    image: UploadedFile | None = field(required=True)


@attrs.define
class ImageWithMaskFields(_Common):
    positive_prompt: str = field(required=True, max_length=MAX_PROMPT)
    negative_prompt: str | None = field(max_length=MAX_PROMPT)
    denoise: float | None = field(ge=0, le=1)
    image: UploadedFile | None = field(required=True)
    mask: UploadedFile | None = field(required=True)


@attrs.define
class ImageUpscaleFields(_Common):
    image: UploadedFile | None = field(required=True)


@attrs.define
class ImageToTextFields(_Common):
    prompt: str | None = field(max_length=MAX_PROMPT)
    image: UploadedFile | None = field(required=True)


@attrs.define
class TextToSpeechFields(_Common):
    input: str | None = field(max_length=MAX_PROMPT, aliases=["Text"], description="The text to speak")
    voice: str | None = field(max_length=100)


@attrs.define
class QueueTextToSpeechFields(_Common):
    text: str | None = field(max_length=MAX_PROMPT, aliases=["Input"], description="The text to speak")
    voice: str | None = field(max_length=100)


@attrs.define
class SpeechToTextFields(_Common):
    audio: UploadedFile | None = field(required=True)


#: task -> (sync fields, queue fields, uploads, summary)
TASKS: dict[str, tuple[type, type, tuple[str, ...], str]] = {
    TEXT_TO_IMAGE: (TextToImageFields, TextToImageFields, (), "Generate images from a text prompt"),
    IMAGE_TO_IMAGE: (ImageToImageFields, ImageToImageFields, ("image",), "Generate images from an image and a prompt"),
    IMAGE_WITH_MASK: (ImageWithMaskFields, ImageWithMaskFields, ("image", "mask"),
                      "Repaint the masked area of an image from a prompt"),
    IMAGE_UPSCALE: (ImageUpscaleFields, ImageUpscaleFields, ("image",), "Upscale an image 2x"),
    IMAGE_TO_TEXT: (ImageToTextFields, ImageToTextFields, ("image",), "Describe an image"),
    TEXT_TO_SPEECH: (TextToSpeechFields, QueueTextToSpeechFields, (), "Speak a text (sync: Input, queued: Text)"),
    SPEECH_TO_TEXT: (SpeechToTextFields, SpeechToTextFields, ("audio",), "Transcribe speech"),
}


def _dto(name: str, fields: type, summary: str, queued: bool, text: bool) -> type:
    cls = attrs.make_class(name, {}, bases=(fields,))
    cls.__doc__ = summary
    response = QueueGenerationResponse if queued else (TextGenerationResponse if text else ArtifactGenerationResponse)
    return api(name, methods=("POST",), auth="key", uploads=True, response=response, summary=summary,
               tags=["generation"])(cls)


DTOS = {task: (_dto(task, sync_fields, summary, False, task in TEXT_TASKS),
               _dto(f"Queue{task}", queue_fields, summary, True, task in TEXT_TASKS))
        for task, (sync_fields, queue_fields, _uploads, summary) in TASKS.items()}


# --------------------------------------------------------------------------- validation


def _validate(task: str, dto: Any, uploads: Mapping[str, UploadedFile], head: Mapping[str, bytes]) -> None:
    errors = []
    for side in ("width", "height"):
        value = getattr(dto, side, None)
        if value is not None and value % SIZE_MULTIPLE:
            name = side.capitalize()
            errors.append(FieldError("MultipleOf", name, f"'{name}' must be a multiple of {SIZE_MULTIPLE}."))
    if task == TEXT_TO_SPEECH:
        text = getattr(dto, "input", None) or getattr(dto, "text", None)
        if not text or not text.strip():
            name = "Input" if hasattr(dto, "input") else "Text"
            errors.append(FieldError("NotEmpty", name, f"'{name}' must not be empty."))
    for field_name in uploads:
        magic = _AUDIO_MAGIC if field_name == "audio" else _IMAGE_MAGIC
        data = head.get(field_name, b"")
        is_media = any(data.startswith(m) for m in magic) or (field_name == "audio" and data[4:8] == b"ftyp")
        if field_name != "audio" and data.startswith(b"RIFF") and data[8:12] != b"WEBP":
            is_media = False
        if not is_media:
            name = field_name.capitalize()
            kind = "an audio file" if field_name == "audio" else "an image (PNG, JPEG, WebP, GIF, BMP or TIFF)"
            errors.append(FieldError("InvalidFile", name, f"'{name}' must be {kind}."))
    if errors:
        raise ValidationFailed(errors)


async def _heads(uploads: Mapping[str, UploadedFile]) -> dict[str, bytes]:
    def read() -> dict[str, bytes]:
        out = {}
        for name, upload in uploads.items():
            with upload.path.open("rb") as f:
                out[name] = f.read(16)
        return out

    return await asyncio.to_thread(read)


def _args(task: str, dto: Any) -> dict[str, Any]:
    skip = {"model", "ref_id", "tag", "reply_to", "provider", "image", "mask", "audio"}
    args = {a.name: getattr(dto, a.name) for a in attrs.fields(type(dto))
            if a.name not in skip and getattr(dto, a.name) is not None}
    if task == TEXT_TO_SPEECH:  # one name for providers, whichever the DTO used
        args["text"] = args.pop("input", None) or args.pop("text", None)
    return args


# --------------------------------------------------------------------------- execution


def generation_handler(task: str, queued: bool) -> Any:
    uploads_wanted = TASKS[task][2]

    async def handle(request: web.Request, dto: Any) -> Any:
        inp: Any = request[state.INPUT]
        by_field = {f.field.lower(): f for f in inp.files}
        uploads = {name: by_field[name] for name in uploads_wanted if name in by_field}
        _validate(task, dto, uploads, await _heads(uploads))
        manager = request.app[state.PROVIDERS]
        model, candidates = manager.media_candidates(task, dto.model, provider=dto.provider)
        spec = JobSpec(api=task, queue=candidates[0].name, request={"model": model, "args": _args(task, dto)},
                       ref_id=dto.ref_id, tag=tag_of(request, dto.tag), reply_to=reply_to_of(request, dto.reply_to),
                       requested_provider=dto.provider)
        # Checked before keeping anything, and only once.
        await accept_reply_to(spec.reply_to, allow_private=request.app[state.CONFIG].jobs.allow_private_callbacks)
        kept = await keep_inputs(request.app[state.ARTIFACTS], uploads, principal_of(request).key_id)
        spec = attrs.evolve(spec, inputs=kept)
        job = await submit(request, spec, reply_to_accepted=True)
        status_api = "GetTextGenerationStatus" if task in TEXT_TASKS else "GetArtifactGenerationStatus"
        if queued:
            return queued_response(request, job, status_api)
        if task not in TEXT_TASKS:
            return await finish_sync(request, job)
        job = await engine_of(request).wait(job, request.app[state.CONFIG].jobs.sync_timeout_media)
        raise_for_job(job)
        return TextGenerationResponse(
            results=[TextOutput(text=r.get("text", "")) for r in (job.response or {}).get("results", [])],
            job_id=job.id, ref_id=job.ref_id,
            duration=dt.timedelta(milliseconds=job.duration_ms) if job.duration_ms is not None else None)

    return handle


# --------------------------------------------------------------------------- media models


@response_model()
@attrs.define
class KeyValue:
    key: str
    value: str


@response_model()
@attrs.define
class MediaModelsResponse:
    results: list[KeyValue]


@api(methods=("GET",), auth="key", response=MediaModelsResponse, tags=["generation"])
@attrs.define
class ActiveMediaModels:
    """The gateway ids of the media models some provider serves (text-to-image unless ``Task`` says)."""

    task: str | None = field(description="A task name (TextToImage, TextToSpeech...); default TextToImage")


async def active_media_models(request: web.Request, dto: ActiveMediaModels) -> MediaModelsResponse:
    task = dto.task or TEXT_TO_IMAGE
    found: dict[str, str] = {}
    for provider in request.app[state.PROVIDERS].of_kind("media"):
        for model, model_task in provider.tasks.items():
            if model_task == task:
                found.setdefault(model, provider.models.get(model, model))
    return MediaModelsResponse(results=[KeyValue(key=k, value=v) for k, v in sorted(found.items())])


def setup_engine(app: web.Application) -> None:
    engine = app[state.ENGINE]
    work_root = app[state.SPOOL_DIR].parent / ".work"
    for task in TASKS:
        engine.register_executor(task, GenerationExecutor(task, app[state.PROVIDERS], app[ARTIFACTS], work_root,
                                                          app[state.CONFIG].jobs.timeout, text=task in TEXT_TASKS))


def install(app: web.Application) -> None:
    for task, (sync_dto, queue_dto) in DTOS.items():
        add_api(app, sync_dto, generation_handler(task, queued=False))
        add_api(app, queue_dto, generation_handler(task, queued=True))
    add_api(app, ActiveMediaModels, active_media_models)
    app[state.ENGINE_SETUP].append(setup_engine)
