"""Jobs: the one durable unit of work every AI and media API runs on.

A job is created ``Queued`` on a named queue (usually a provider's name), claimed
by a worker (``Started``), and ends ``Completed``, ``Failed`` or ``Cancelled``.
``Executed`` marks a job whose backend finished while its outputs are being
stored. Every state change is conditional on the current state (and, for a
worker, on holding the job's lease), so several workers, in one process or
many, can share one store and exactly one of them wins each job.

The store is a plugin (``register_job_stores``); its contracts are in
:mod:`aiport.core.jobs.store`.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs


class JobState(enum.StrEnum):
    QUEUED = "Queued"
    STARTED = "Started"
    EXECUTED = "Executed"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


#: Each state's text: ``Enum.value`` is a property lookup, slow on a path run per request.
STATE_TEXT: dict[JobState, str] = {state: state.value for state in JobState}

ACTIVE_STATES = (JobState.QUEUED, JobState.STARTED, JobState.EXECUTED)
FINISHED_STATES = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_ref_random = random.Random(random.SystemRandom().getrandbits(128))
# A forked child must not repeat its parent's RefIds.
os.register_at_fork(after_in_child=lambda: _ref_random.seed(random.SystemRandom().getrandbits(128)))


def new_ref_id() -> str:
    """A fresh RefId: 32 hex digits, laid out like a UUIDv7 (milliseconds, then 80 random bits).

    Time first, so ids sort by creation and the store's RefId index grows at its end
    instead of touching a random page per job. RefIds name jobs, they guard nothing
    (status APIs check the caller's key), so a generator seeded once from the OS
    replaces a ``urandom`` call per request.
    """
    return f"{time.time_ns() // 1_000_000:012x}{_ref_random.getrandbits(80):020x}"


@attrs.frozen(slots=False)  # dict-backed: copied with one dict copy (see _replacer)
class JobSpec:
    """What an API submits."""

    api: str
    queue: str
    request: Mapping[str, Any]
    ref_id: str | None = None
    tag: str | None = None
    reply_to: str | None = None
    #: The provider the caller asked for (``Provider``), if any.
    requested_provider: str | None = None
    key_id: int = 0
    #: Uploaded inputs kept in the artifact store: field -> stored path.
    inputs: Mapping[str, Any] = attrs.field(factory=dict)
    #: Tries in all (first run plus retries); ``None``: ``jobs.retries`` + 1.
    max_attempts: int | None = None
    parent_id: int | None = None
    #: Earliest time a worker may start it (used for retry backoff).
    run_after: dt.datetime | None = None


@attrs.frozen(slots=False)  # dict-backed: built and copied several times per request
class Job:
    """One job as stored. Times are timezone-aware UTC."""

    id: int
    ref_id: str
    api: str
    queue: str
    state: JobState
    request: Mapping[str, Any]
    key_id: int = 0
    tag: str | None = None
    reply_to: str | None = None
    requested_provider: str | None = None
    #: The provider that actually ran it (last attempt).
    provider: str | None = None
    status: str | None = None
    progress: float | None = None
    attempts: int = 0
    max_attempts: int = 3
    response: Mapping[str, Any] | None = None
    #: ``responseStatus`` of a failed or cancelled job.
    error: Mapping[str, Any] | None = None
    #: HTTP status that fits the failure (e.g. 400 for a bad request, 502 for a backend error).
    error_status: int | None = None
    inputs: Mapping[str, Any] = attrs.field(factory=dict)
    outputs: Sequence[str] = ()
    parent_id: int | None = None
    created_at: dt.datetime = attrs.field(factory=utcnow)
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    run_after: dt.datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: dt.datetime | None = None
    duration_ms: int | None = None

    @property
    def status_text(self) -> str:
        """AI Server's ``status``: the job's free-text status, else its state name."""
        return self.status or self.state.value


@attrs.frozen(slots=False)  # built per request: dict-backed frozen classes build faster
class Usage:
    """Accounting for one finished request, kept in the analytics summary."""

    provider: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: Time to first token (streams) in ms.
    ttft_ms: int | None = None


@attrs.frozen(slots=False)  # built per request: dict-backed frozen classes build faster
class JobResult:
    """What a successful run produced."""

    response: Mapping[str, Any]
    outputs: Sequence[str] = ()
    usage: Usage = attrs.field(factory=Usage)


@attrs.frozen(slots=False)  # built per request: dict-backed frozen classes build faster
class JobEvent:
    """A request that finished (or a job that will be retried), as the engine saw it."""

    api: str
    state: str
    key_id: int
    usage: Usage
    queue: str | None = None
    retry: bool = False


def _replacer(cls: type) -> Any:
    """A ``replace(inst, **changes)`` for a frozen, dict-backed attrs class without validators or
    converters: what :func:`attrs.evolve` does at a tenth of its cost (one dict copy instead of a
    call per field); it runs several times per request."""
    fields = attrs.fields(cls)
    if any(f.validator or f.converter for f in fields) or "__dict__" not in dir(cls):
        return attrs.evolve
    names = frozenset(f.name for f in fields)
    new_object, set_attr = object.__new__, object.__setattr__

    def replace(inst: Any, **changes: Any) -> Any:
        if not changes.keys() <= names:
            raise TypeError(f"{cls.__name__} has no field {sorted(changes.keys() - names)[0]!r}")
        values = inst.__dict__.copy()
        values.update(changes)
        new: Any = new_object(cls)
        set_attr(new, "__dict__", values)
        return new

    return replace


#: ``replace_job(job, **changes)``: a changed copy of a :class:`Job` (like ``attrs.evolve``).
replace_job = _replacer(Job)
#: ``replace_spec(spec, **changes)``: a changed copy of a :class:`JobSpec`.
replace_spec = _replacer(JobSpec)
