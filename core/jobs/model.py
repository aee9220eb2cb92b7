"""Jobs: the one durable unit of work every AI and media API runs on.

A job is created ``Queued`` on a named queue (usually a provider's name), claimed
by a worker (``Started``), and ends ``Completed``, ``Failed`` or ``Cancelled``.
``Executed`` marks a job whose backend finished while its outputs are being
stored. Every state change is conditional on the current state (and, for a
worker, on holding the job's lease), so several workers, in one process or
many, can share one store and exactly one of them wins each job.

The store is a plugin (``register_job_stores``); :class:`JobStore` is its
contract.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

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


@attrs.frozen
class JobQuery:
    """A filter for listing jobs (the admin job browser)."""

    states: Sequence[JobState] = ()
    queue: str | None = None
    tag: str | None = None
    key_id: int | None = None
    api: str | None = None
    limit: int = 100
    offset: int = 0


class JobStore(Protocol):
    """Durable storage of jobs. Every method is atomic; state changes are conditional.

    ``owner`` is a worker's id (``node:pid:worker``); a worker may change a
    ``Started`` job only while it holds the job's lease.

    A store that defers sync jobs (see ``enqueue``) may also offer these, which the
    engine uses when present, without awaiting: ``start_in_memory(spec, now, owner,
    lease, max_attempts) -> Job | None`` (the deferred ``enqueue``, or ``None`` when it
    cannot start the job that way) and ``finish_in_memory(finished, usage) -> bool``
    (``complete`` for such a job still in memory; ``False`` sends the engine to
    ``complete``). Both must do no I/O.
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self, spec: JobSpec, now: dt.datetime, *, owner: str | None = None,
                      lease: float = 0.0, defer: bool = False) -> tuple[Job, bool]:
        """Insert a ``Queued`` job (or, with ``owner``, one already ``Started`` by that worker
        holding a ``lease``: a sync call run at once); returns it and whether it is new.

        ``defer`` (a sync call whose caller waits for it): a store may keep the job in
        memory while it runs and write it when it finishes, in a batch; ``persist``
        writes it at once. Stores that do not defer ignore it.

        A ``ref_id`` already used by the same key for the same API returns the
        existing job (idempotent submit); used otherwise, it raises ``Conflict``.
        """
        ...

    async def claim(self, queue: str, owner: str, lease: float, now: dt.datetime, limit: int = 1) -> list[Job]:
        """Atomically take up to ``limit`` of the oldest due ``Queued`` jobs of ``queue``:
        each becomes ``Started`` with attempts + 1 and a lease held by ``owner``."""
        ...

    async def renew(self, job_id: int, owner: str, lease: float, now: dt.datetime) -> bool:
        """Extend the lease; ``False`` when the worker no longer holds the job."""
        ...

    async def progress(self, job_id: int, owner: str, progress: float | None, status: str | None) -> bool: ...

    async def mark_executed(self, job_id: int, owner: str, provider: str | None) -> bool: ...

    async def complete(self, job_id: int, owner: str, result: JobResult, now: dt.datetime,
                       callback: JobSpec | None = None, finished: Job | None = None) -> bool:
        """``Started/Executed -> Completed`` with the result, the analytics row, and the
        ``ReplyTo`` callback job (if any) in one transaction.

        ``finished``, when the engine built it, is the job as it is once completed; a store
        that keeps the job in memory may keep that object instead of building its own.
        """
        ...

    async def fail(self, job_id: int, owner: str, error: Mapping[str, Any], error_status: int,
                   now: dt.datetime, *, retry_at: dt.datetime | None = None, queue: str | None = None,
                   provider: str | None = None, usage: Usage | None = None,
                   callback: JobSpec | None = None) -> bool:
        """With ``retry_at``: back to ``Queued`` (optionally on another ``queue``);
        else ``Failed`` with the error, the analytics row and the callback job."""
        ...

    async def cancel(self, job_id: int, now: dt.datetime, error: Mapping[str, Any],
                     callback: JobSpec | None = None, error_status: int = 409) -> Job | None:
        """``Queued/Started/Executed -> Cancelled``; the job as it is afterwards, or ``None`` if unknown."""
        ...

    async def record(self, spec: JobSpec, *, state: JobState, response: Mapping[str, Any] | None,
                     error: Mapping[str, Any] | None, usage: Usage, duration_ms: int, now: dt.datetime) -> int:
        """Store a request that ran outside the queue (a stream) as a finished job; returns its id."""
        ...

    async def get(self, job_id: int | None = None, ref_id: str | None = None) -> Job | None:
        """A job by id or ref id, from the active table or the monthly archives."""
        ...

    async def recover(self, now: dt.datetime, *, all_started: bool) -> tuple[int, int]:
        """Requeue (or fail, once attempts are spent) ``Started`` jobs whose lease expired
        (``all_started``: every ``Started`` job, for a store only one node uses).
        Returns (requeued, failed)."""
        ...

    async def archive(self, before: dt.datetime) -> int:
        """Move jobs finished before ``before`` to their monthly archive; returns how many."""
        ...

    async def queue_counts(self) -> dict[str, dict[str, int]]:
        """Per queue: how many jobs are in each active state."""
        ...

    async def list_jobs(self, query: JobQuery) -> list[Job]: ...

    async def due_queues(self, now: dt.datetime) -> list[str]:
        """Queues that have a ``Queued`` job due now."""
        ...

    async def summary(self, since: dt.datetime | None = None,
                      until: dt.datetime | None = None) -> list[Mapping[str, Any]]:
        """The analytics rows (one per finished request) in a time range."""
        ...

    async def requeue(self, job_id: int, now: dt.datetime) -> Job | None:
        """``Failed/Cancelled -> Queued`` with attempts, error and result cleared (admin requeue),
        also for a job already moved to its archive; the job afterwards, or ``None`` if it is
        unknown or not failed or cancelled."""
        ...
