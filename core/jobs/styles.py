"""The three call styles every job-backed API offers, on the job engine.

- **sync**: the caller waits; the job starts at once on a free slot of its queue
  (else it queues) and its result or error is the answer. After the API's sync
  timeout the caller gets a 504 naming the job, which carries on.
- **queued**: the job is stored and its reference returned at once; the caller
  polls a status API.
- **ReplyTo**: a queued job whose result is POSTed to a URL when it finishes. The
  URL is checked once (:func:`accept_reply_to`, the SSRF guard) before anything
  is stored.

Handlers in :mod:`aiport.core.http` build a :class:`~aiport.core.jobs.model.JobSpec`
and hand it to one of these; none of them runs a provider itself.
"""

from __future__ import annotations

from typing import Any

from ..errors import ApiError, FieldError
from .callbacks import check_reply_to
from .engine import JobEngine
from .model import Job, JobSpec, JobState


async def run_sync(engine: JobEngine, spec: JobSpec, timeout: float) -> Job:
    """Run ``spec`` as a sync call and wait up to ``timeout`` seconds: the completed job, or the
    error its failure calls for (:func:`raise_for_job`); a 504 naming the job after ``timeout``."""
    job = await engine.call(spec, timeout)
    raise_for_job(job)
    return job


async def accept_reply_to(reply_to: str | None, *, allow_private: bool) -> str | None:
    """``reply_to`` once it passed the SSRF guard (no loopback, link-local or private target
    unless ``allow_private``); ``None`` when there is none. Call it once per request, before
    keeping any input, then hand the spec to :func:`enqueue`."""
    if reply_to:
        await check_reply_to(reply_to, allow_private=allow_private)
    return reply_to or None


async def enqueue(engine: JobEngine, spec: JobSpec) -> Job:
    """Store ``spec`` as a queued job (its ``reply_to`` already accepted); a ``ref_id`` the key
    used before for the same API returns that job (idempotent submit)."""
    return await engine.submit(engine.prepared(spec))


async def wait_finished(engine: JobEngine, job: Job, timeout: float) -> Job:
    """Wait for a job already submitted (a sync call whose inputs had to be stored first)."""
    job = await engine.wait(job, timeout)
    raise_for_job(job)
    return job


def job_ref(job: Job) -> dict[str, Any]:
    """What names a job in an error or a callback: ids, state and status text."""
    return {"jobId": job.id, "refId": job.ref_id, "jobState": job.state.value, "status": job.status_text}


def raise_for_job(job: Job) -> None:
    """A failed or cancelled job becomes the error that fits its cause, still naming the job."""
    if job.state in (JobState.FAILED, JobState.CANCELLED):
        error = dict(job.error or {})
        status = job.error_status or 500
        err = ApiError(str(error.get("message") or f"Job {job.state.value.lower()}."),
                       error_code=str(error.get("errorCode") or job.state.value),
                       extra=job_ref(job))
        err.status = status if 400 <= status < 600 else 500
        if error.get("errors"):
            err.errors = [FieldError(e.get("errorCode", ""), e.get("fieldName", ""), e.get("message", ""))
                          for e in error["errors"]]
        raise err
