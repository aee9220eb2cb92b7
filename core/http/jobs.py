"""Job status and cancellation APIs, and the request-side helpers of the call styles
(:mod:`aiport.core.jobs.styles`) every job-backed API uses."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
from aiohttp import web

from .. import state
from ..errors import BadRequest, NotFound
from ..jobs.engine import JobEngine
from ..jobs.model import Job, JobSpec, JobState, replace_spec
from ..jobs.styles import accept_reply_to, enqueue, raise_for_job, run_sync
from .auth import Principal
from .dto import api, field, response_model
from .routes import add_api, base_url

ENGINE = state.ENGINE


# --------------------------------------------------------------------------- responses


@response_model()
@attrs.define
class QueueGenerationResponse:
    """What a queued call returns at once."""

    job_id: int
    ref_id: str
    job_state: str
    status: str
    status_url: str


@response_model()
@attrs.define
class QueueOpenAiChatResponse:
    """A queued chat call's answer; the job id is named ``id``, as in AI Server."""

    id: int
    ref_id: str
    job_state: str
    status: str
    status_url: str


@response_model()
@attrs.define
class ArtifactOutput:
    url: str
    file_name: str
    provider: str | None = None


@response_model()
@attrs.define
class TextOutput:
    text: str


@response_model()
@attrs.define
class GenerationStatusResponse:
    """``GetArtifactGenerationStatus`` / ``GetTextGenerationStatus``: results once completed."""

    job_id: int
    ref_id: str
    job_state: str
    status: str
    progress: float | None = None
    results: list[Any] | None = None
    duration: dt.timedelta | None = None


@response_model()
@attrs.define
class ChatStatusResponse:
    """``GetOpenAiChatStatus``: the chat completion once completed."""

    job_id: int
    ref_id: str
    job_state: str
    status: str
    result: dict[str, Any] | None = None


# --------------------------------------------------------------------------- requests


@api(methods=("GET", "POST"), auth="key", response=GenerationStatusResponse, tags=["jobs"])
@attrs.define
class GetArtifactGenerationStatus:
    """Status of a media job; ``results`` are the artifact URLs once it completed."""

    job_id: int | None = field(ge=1)
    ref_id: str | None = field(max_length=200)


@api(methods=("GET", "POST"), auth="key", response=GenerationStatusResponse, tags=["jobs"])
@attrs.define
class GetTextGenerationStatus:
    """Status of a text-producing media job (image-to-text, speech-to-text)."""

    job_id: int | None = field(ge=1)
    ref_id: str | None = field(max_length=200)


@api(methods=("GET", "POST"), auth="key", response=ChatStatusResponse, tags=["jobs", "chat"])
@attrs.define
class GetOpenAiChatStatus:
    """Status of a queued chat; ``RefId`` takes precedence over ``JobId``."""

    job_id: int | None = field(ge=1)
    ref_id: str | None = field(max_length=200)


@api(methods=("POST", "DELETE"), auth="key", response=GenerationStatusResponse, tags=["jobs"])
@attrs.define
class CancelJob:
    """Cancel a queued or running job (no retry); its ReplyTo is told."""

    job_id: int | None = field(ge=1)
    ref_id: str | None = field(max_length=200)


# --------------------------------------------------------------------------- helpers


def engine_of(request: web.Request) -> JobEngine:
    return request.app[ENGINE]


def principal_of(request: web.Request) -> Principal:
    principal = request.get(state.PRINCIPAL)
    return principal if isinstance(principal, Principal) else Principal()


async def find_job(request: web.Request, job_id: int | None, ref_id: str | None,
                   *, ref_first: bool = False) -> Job:
    """A job the caller may see (its own, or any for the admin); 404 otherwise."""
    if job_id is None and not ref_id:
        raise BadRequest("Send JobId or RefId.", error_code="NotEmpty")
    store = engine_of(request).store
    job = None
    if ref_first and ref_id:
        job = await store.get(ref_id=ref_id)
    if job is None and job_id is not None:
        job = await store.get(job_id=job_id)
    if job is None and ref_id and not ref_first:
        job = await store.get(ref_id=ref_id)
    principal = principal_of(request)
    if job is None or (not principal.is_admin and job.key_id != principal.key_id):
        what = f"RefId {ref_id!r}" if ref_id else f"JobId {job_id}"
        raise NotFound(f"No job with {what}.")
    return job


def status_url(request: web.Request, status_api: str, job: Job) -> str:
    return f"{base_url(request)}/api/{status_api}?RefId={job.ref_id}"


def artifact_results(request: web.Request, job: Job) -> list[ArtifactOutput]:
    base = base_url(request)
    out = []
    for item in (job.response or {}).get("results", []):
        url = item.get("url") or f"{base}/artifacts/{item['path']}"
        out.append(ArtifactOutput(url=url, file_name=item.get("fileName") or item.get("path", "").rsplit("/", 1)[-1],
                                  provider=item.get("provider") or job.provider))
    return out


def generation_status(request: web.Request, job: Job, *, text: bool) -> GenerationStatusResponse:
    raise_for_job(job)
    response = GenerationStatusResponse(job_id=job.id, ref_id=job.ref_id, job_state=job.state.value,
                                        status=job.status_text, progress=job.progress)
    if job.state == JobState.COMPLETED:
        if text:
            response.results = [TextOutput(text=r.get("text", "")) for r in (job.response or {}).get("results", [])]
        else:
            response.results = list(artifact_results(request, job))
        if job.duration_ms is not None:
            response.duration = dt.timedelta(milliseconds=job.duration_ms)
    return response


async def submit(request: web.Request, spec: JobSpec, *, reply_to_accepted: bool = False) -> Job:
    """Queue a job for the calling key; its ``ReplyTo`` is checked first (SSRF guard) unless the
    handler already did, before keeping the request's inputs."""
    if not reply_to_accepted:
        await accept_reply_to(spec.reply_to,
                              allow_private=request.app[state.CONFIG].jobs.allow_private_callbacks)
    key_id = principal_of(request).key_id
    return await enqueue(engine_of(request), spec if spec.key_id == key_id else replace_spec(spec, key_id=key_id))


async def call(request: web.Request, spec: JobSpec, timeout: float) -> Job:
    """A sync call for the calling key (no ``ReplyTo``): the completed job, or its error."""
    key_id = principal_of(request).key_id
    if spec.key_id != key_id:  # callers on the hot path build the spec with it already
        spec = replace_spec(spec, key_id=key_id)
    return await run_sync(engine_of(request), spec, timeout)


def queued_response(request: web.Request, job: Job, status_api: str) -> QueueGenerationResponse:
    return QueueGenerationResponse(job_id=job.id, ref_id=job.ref_id, job_state=job.state.value,
                                   status=job.status_text, status_url=status_url(request, status_api, job))


def reply_to_of(request: web.Request, value: str | None) -> str | None:
    """``ReplyTo`` from the DTO, else from the HTTP header (as AI Server's media APIs allow)."""
    return value or request.headers.get("ReplyTo") or None


def tag_of(request: web.Request, value: str | None) -> str | None:
    return value or request.headers.get("Tag") or None


# --------------------------------------------------------------------------- handlers


async def get_artifact_status(request: web.Request, dto: GetArtifactGenerationStatus) -> Any:
    return generation_status(request, await find_job(request, dto.job_id, dto.ref_id), text=False)


async def get_text_status(request: web.Request, dto: GetTextGenerationStatus) -> Any:
    return generation_status(request, await find_job(request, dto.job_id, dto.ref_id), text=True)


async def get_chat_status(request: web.Request, dto: GetOpenAiChatStatus) -> Any:
    job = await find_job(request, dto.job_id, dto.ref_id, ref_first=True)
    raise_for_job(job)
    result = dict(job.response) if job.state == JobState.COMPLETED and job.response else None
    return ChatStatusResponse(job_id=job.id, ref_id=job.ref_id, job_state=job.state.value,
                              status=job.status_text, result=result)


async def cancel_job(request: web.Request, dto: CancelJob) -> Any:
    job = await find_job(request, dto.job_id, dto.ref_id)
    job = await engine_of(request).cancel(job)
    return GenerationStatusResponse(job_id=job.id, ref_id=job.ref_id, job_state=job.state.value,
                                    status=job.status_text)


def install(app: web.Application) -> None:
    add_api(app, GetArtifactGenerationStatus, get_artifact_status)
    add_api(app, GetTextGenerationStatus, get_text_status)
    add_api(app, GetOpenAiChatStatus, get_chat_status)
    add_api(app, CancelJob, cancel_job)


@response_model()
@attrs.define
class ArtifactGenerationResponse:
    """A sync media call's result: artifact URLs and how long the job took."""

    results: list[ArtifactOutput]
    duration: dt.timedelta | None = None
    job_id: int | None = None
    ref_id: str | None = None


async def finish_sync(request: web.Request, job: Job) -> ArtifactGenerationResponse:
    """Wait for a submitted media job (up to ``jobs.sync_timeout_media``) and answer with its artifacts."""
    job = await engine_of(request).wait(job, request.app[state.CONFIG].jobs.sync_timeout_media)
    raise_for_job(job)
    return ArtifactGenerationResponse(
        results=artifact_results(request, job), job_id=job.id, ref_id=job.ref_id,
        duration=dt.timedelta(milliseconds=job.duration_ms) if job.duration_ms is not None else None)
