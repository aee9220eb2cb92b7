"""Admin APIs for the job browser: find any key's jobs, cancel them, run failed ones again."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import structlog
from aiohttp import web

from .. import state
from ..errors import BadRequest, NotFound
from ..jobs.engine import JobEngine
from ..jobs.model import Job, JobState
from ..jobs.store import JobQuery
from .admin_common import TAGS
from .dto import api, response_model
from .dto import field as dfield
from .routes import add_api
from .scrubbing import scrubbed_response

log = structlog.get_logger("aiport.admin")


@response_model()
@attrs.define
class JobInfo:
    """A job as the job browser shows it."""

    id: int
    ref_id: str
    api: str
    queue: str
    state: str
    status: str
    key_id: int
    attempts: int
    max_attempts: int
    created_date: dt.datetime
    provider: str | None = None
    progress: float | None = None
    tag: str | None = None
    parent_id: int | None = None
    started_date: dt.datetime | None = None
    completed_date: dt.datetime | None = None
    duration: dt.timedelta | None = None
    error: dict[str, Any] | None = None
    reply_to: str | None = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    outputs: list[str] | None = None


@response_model()
@attrs.define
class QueryJobsResponse:
    """A page of jobs; ``hasMore`` when another page follows."""

    offset: int
    has_more: bool
    results: list[JobInfo]


@api(methods=("GET", "POST"), auth="admin", response=QueryJobsResponse, tags=TAGS)
@attrs.define
class QueryJobs:
    """Browse jobs (active ones and those finished in the last minutes), newest first."""

    states: list[str] | None = dfield(aliases=("state",), description="Queued, Started, Completed, Failed...")
    provider: str | None = dfield(aliases=("queue",))
    tag: str | None = dfield()
    key_id: int | None = dfield(ge=0)
    api: str | None = dfield()
    job_id: int | None = dfield(ge=1)
    ref_id: str | None = dfield()
    skip: int | None = dfield(ge=0)
    take: int | None = dfield(ge=1, le=1000)
    include_details: bool | None = dfield(description="Include request, response, outputs and ReplyTo")


@api(methods=("POST", "DELETE"), auth="admin", response=JobInfo, tags=TAGS)
@attrs.define
class AdminCancelJob:
    """Cancel any key's queued or running job."""

    job_id: int | None = dfield(ge=1)
    ref_id: str | None = dfield()


@api(methods=("POST",), auth="admin", response=JobInfo, tags=TAGS)
@attrs.define
class RequeueJob:
    """Run a failed or cancelled job again, from its first attempt."""

    job_id: int | None = dfield(ge=1)
    ref_id: str | None = dfield()


# --------------------------------------------------------------------------- handlers


def job_info(job: Job, details: bool = False) -> JobInfo:
    """A job as the job browser shows it; ``details`` adds request, response, outputs and ReplyTo."""
    started = job.started_at
    info = JobInfo(
        id=job.id, ref_id=job.ref_id, api=job.api, queue=job.queue, state=job.state.value, status=job.status_text,
        key_id=job.key_id, attempts=job.attempts, max_attempts=job.max_attempts, created_date=job.created_at,
        provider=job.provider, progress=job.progress, tag=job.tag, parent_id=job.parent_id, started_date=started,
        completed_date=job.completed_at,
        duration=dt.timedelta(milliseconds=job.duration_ms) if job.duration_ms is not None else None,
        error=dict(job.error) if job.error else None)
    if details:
        info.reply_to = job.reply_to
        info.request = dict(job.request)
        info.response = dict(job.response) if job.response else None
        info.outputs = list(job.outputs) or None
    return info


def _states(values: list[str] | None) -> tuple[JobState, ...]:
    out = []
    for value in values or ():
        match = next((s for s in JobState if s.value.lower() == value.strip().lower()), None)
        if match is None:
            raise BadRequest(f"Unknown job state {value!r}; states: {', '.join(s.value for s in JobState)}.",
                             error_code="InvalidValue")
        out.append(match)
    return tuple(out)


async def query_jobs(request: web.Request, dto: QueryJobs) -> web.Response:
    engine: JobEngine = request.app[state.ENGINE]
    skip, take = dto.skip or 0, dto.take or 50
    if dto.job_id is not None or dto.ref_id:
        found = await engine.store.get(job_id=dto.job_id, ref_id=dto.ref_id)
        jobs = [found] if found is not None else []
        more = False
    else:
        query = JobQuery(states=_states(dto.states), queue=dto.provider, tag=dto.tag, key_id=dto.key_id,
                         api=dto.api, limit=take + 1, offset=skip)
        jobs = await engine.store.list_jobs(query)
        more = len(jobs) > take
        jobs = jobs[:take]
    results = [job_info(j, bool(dto.include_details)) for j in jobs]
    return scrubbed_response(request, QueryJobsResponse(offset=skip, has_more=more, results=results))


async def _job(request: web.Request, job_id: int | None, ref_id: str | None) -> Job:
    if job_id is None and not ref_id:
        raise BadRequest("Send JobId or RefId.", error_code="NotEmpty")
    store = request.app[state.ENGINE].store
    job = await store.get(job_id=job_id) if job_id is not None else await store.get(ref_id=ref_id)
    if job is None:
        raise NotFound(f"No job with {'JobId ' + str(job_id) if job_id is not None else 'RefId ' + repr(ref_id)}.")
    return job


async def admin_cancel_job(request: web.Request, dto: AdminCancelJob) -> web.Response:
    job = await _job(request, dto.job_id, dto.ref_id)
    job = await request.app[state.ENGINE].cancel(job, "Cancelled by an administrator")
    return scrubbed_response(request, job_info(job))


async def requeue_job(request: web.Request, dto: RequeueJob) -> web.Response:
    job = await _job(request, dto.job_id, dto.ref_id)
    job = await request.app[state.ENGINE].requeue(job)
    log.info("job requeued by an administrator", job_id=job.id)
    return scrubbed_response(request, job_info(job))


def install(app: web.Application) -> None:
    """Serve the job browser's admin APIs."""
    add_api(app, QueryJobs, query_jobs)
    add_api(app, AdminCancelJob, admin_cancel_job)
    add_api(app, RequeueJob, requeue_job)
