"""The job store's contracts: what the engine asks of every store, and of one that defers.

A store is a plugin (``register_job_stores``). :class:`JobStore` is what every store
must do; :class:`DeferringJobStore` is what a store may add to keep a sync call's job
in memory while it runs and write it, finished, in a batch with others (the SQLite
store does: a sync request's two writes become a share of one batch).

:func:`check_job_store` is how the engine tells which of the two a store is, once,
when the engine is built: a store that lacks a required method is refused there,
with the names of what it lacks, instead of failing on the first request that
needs it.

Conventions of every method:

- Times are timezone-aware UTC; ``now`` is the engine's clock, never the store's.
- Every method is atomic: it happens entirely or not at all, also when several
  workers (in one process or many) share the store.
- Every state change is conditional on the job's current state and, for a
  worker's change, on the worker holding the job's lease: ``owner`` is the
  worker's id (``node:queue``) and a worker may change a ``Started`` or
  ``Executed`` job only while ``lease_owner`` is ``owner``. A change whose
  condition does not hold changes nothing and answers ``False`` (or ``None``),
  never raises: another worker, a cancel or the recovery won the job.
- A job's ``ReplyTo`` callback job is written in the same transaction as the
  state change that makes it due, so a crash never loses one.
"""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast, runtime_checkable

import attrs

from .model import Job, JobResult, JobSpec, JobState, Usage


@attrs.frozen
class JobQuery:
    """A filter for listing jobs (the admin job browser); newest first."""

    states: Sequence[JobState] = ()
    queue: str | None = None
    tag: str | None = None
    key_id: int | None = None
    api: str | None = None
    limit: int = 100
    offset: int = 0


class JobStore(Protocol):
    """Durable storage of jobs and of the request history, shared by the engine's workers."""

    async def open(self) -> None:
        """Connect and bring the storage's schema up to date; called once, before any other method."""
        ...

    async def close(self) -> None:
        """Make everything acknowledged durable and release connections; the last call."""
        ...

    async def enqueue(self, spec: JobSpec, now: dt.datetime, *, owner: str | None = None,
                      lease: float = 0.0, defer: bool = False) -> tuple[Job, bool]:
        """Insert a ``Queued`` job, or with ``owner`` one already ``Started`` (attempts 1) by that
        worker holding a ``lease`` of that many seconds: a sync call run at once on this node.
        Returns the job and whether it is new.

        A ``ref_id`` already used by the same key for the same API returns the existing job
        and ``False`` (an idempotent submit); used by another key or API it raises
        :class:`~aiport.core.errors.Conflict`. Without a ``ref_id`` the store makes one.

        ``defer`` (set only with ``owner``, for a sync call whose caller waits for it): a
        store may keep the job in memory while it runs and write it once it finished (see
        :class:`DeferringJobStore`); a store that does not defer ignores it.
        """
        ...

    async def claim(self, queue: str, owner: str, lease: float, now: dt.datetime, limit: int = 1) -> list[Job]:
        """Take up to ``limit`` of the oldest due (``run_after`` unset or passed) ``Queued`` jobs of
        ``queue``, oldest first: each becomes ``Started`` with attempts + 1, ``started_at`` now
        and a lease held by ``owner`` for ``lease`` seconds. Two claims never get the same job."""
        ...

    async def renew_owner(self, owner_prefix: str, lease: float, now: dt.datetime) -> int:
        """Extend to ``now + lease`` the lease of every ``Started``/``Executed`` job whose
        ``lease_owner`` starts with ``owner_prefix`` (this node's id: all its workers at once);
        returns how many. The engine calls it every third of a lease, so a job that runs
        longer than a lease is not taken for abandoned by :meth:`recover`."""
        ...

    async def progress(self, job_id: int, owner: str, progress: float | None, status: str | None) -> bool:
        """Set the job's progress (0..1) and/or status line, where not ``None``; ``False`` when
        ``owner`` no longer holds it."""
        ...

    async def mark_executed(self, job_id: int, owner: str, provider: str | None) -> bool:
        """``Started -> Executed`` (the backend finished, outputs are being stored), recording the
        ``provider`` that ran it when given; ``False`` when ``owner`` no longer holds it."""
        ...

    async def complete(self, job_id: int, owner: str, result: JobResult, now: dt.datetime,
                       callback: JobSpec | None = None, finished: Job | None = None) -> bool:
        """``Started/Executed -> Completed`` with the result, its usage (for :meth:`summary`),
        ``duration_ms`` since it started, and the ``callback`` job (``Queued``), in one transaction.
        ``False`` when ``owner`` no longer holds it (nothing is written then).

        ``finished``, when the engine built it, is the job as it is once completed; a store
        that keeps the job in memory may keep that object instead of building its own.
        """
        ...

    async def fail(self, job_id: int, owner: str, error: Mapping[str, Any], error_status: int,
                   now: dt.datetime, *, retry_at: dt.datetime | None = None, queue: str | None = None,
                   provider: str | None = None, usage: Usage | None = None,
                   callback: JobSpec | None = None) -> bool:
        """A failed attempt, only while ``owner`` holds the job (else ``False``, nothing written).

        With ``retry_at``: back to ``Queued``, due at ``retry_at``, on ``queue`` when given
        (failover), keeping ``error`` as the last attempt's; attempts are not reset.
        Without: ``Failed`` with ``error``/``error_status``, its usage for :meth:`summary`
        and the ``callback`` job, in one transaction.
        """
        ...

    async def cancel(self, job_id: int, now: dt.datetime, error: Mapping[str, Any],
                     callback: JobSpec | None = None, error_status: int = 409) -> Job | None:
        """``Queued/Started/Executed -> Cancelled`` whoever holds it, with the ``callback`` job.
        Returns the job as it is afterwards (already finished: unchanged), ``None`` if unknown."""
        ...

    async def record(self, spec: JobSpec, *, state: JobState, response: Mapping[str, Any] | None,
                     error: Mapping[str, Any] | None, usage: Usage, duration_ms: int, now: dt.datetime) -> int:
        """Store a request that ran outside the queue (a stream) as a job already finished in
        ``state``, with its usage; returns its id. A ``ref_id`` already in use is replaced by a
        fresh one rather than refused (the request has run by then)."""
        ...

    async def get(self, job_id: int | None = None, ref_id: str | None = None) -> Job | None:
        """A job by id or RefId, wherever it is (active, archived, or kept in memory by a
        deferring store); ``None`` if unknown or neither is given."""
        ...

    async def recover(self, now: dt.datetime, *, all_started: bool) -> tuple[int, int]:
        """``Started``/``Executed`` jobs whose lease expired before ``now`` (``all_started``: every
        one, at the start of a store only this node uses) go back to ``Queued``, or to ``Failed``
        once their attempts are spent. Returns (requeued, failed)."""
        ...

    async def archive(self, before: dt.datetime) -> int:
        """Move jobs finished before ``before``, whose callback jobs are finished too, out of the
        active set (where :meth:`get` still finds them); returns how many moved."""
        ...

    async def requeue(self, job_id: int, now: dt.datetime) -> Job | None:
        """``Failed/Cancelled -> Queued`` with attempts, error, result and usage cleared (admin
        requeue), also for an archived job; the job afterwards, or ``None`` if it is unknown or
        not failed or cancelled."""
        ...

    async def queue_counts(self) -> dict[str, dict[str, int]]:
        """Per queue, how many jobs are in each active state (a state with none is left out; a
        deferring store's jobs still in memory need not be counted)."""
        ...

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        """Jobs matching ``query`` that are not archived, newest first (a deferring store's jobs
        still running in memory need not be among them; finished ones must)."""
        ...

    async def summary(self, since: dt.datetime | None = None,
                      until: dt.datetime | None = None) -> list[Mapping[str, Any]]:
        """One analytics row per finished request created in ``[since, until)``, archived or not,
        by id: ``id, refId, api, queue, provider, model, keyId, tag, state, attempts,
        promptTokens, completionTokens, durationMs, ttftMs, createdAt`` (epoch seconds) and
        ``month`` (``YYYY-MM`` of ``createdAt``)."""
        ...


@runtime_checkable
class DeferringJobStore(Protocol):
    """What a store adds to keep sync calls' jobs in memory while they run.

    The engine, for a sync call it can start at once on this node, calls
    :meth:`start_in_memory` instead of awaiting ``enqueue``, and
    :meth:`finish_in_memory` instead of awaiting ``complete``: no await, no I/O, on
    the request path. The store writes the finished jobs later, many in one batch; a
    crash loses only jobs whose callers' connections broke with it.

    Between start and finish the job is the store's to keep consistent: ``get`` must
    find it (listings and counts need not, while it runs; once it finished,
    ``list_jobs`` and ``summary`` must include it, written or not); ``progress`` and
    ``mark_executed`` must apply to it; ``fail``, ``cancel`` and a ``complete`` with a
    callback must write it first, as ``Started``, so the change applies to the
    written job.
    """

    def start_in_memory(self, spec: JobSpec, now: dt.datetime, owner: str, lease: float,
                        max_attempts: int) -> Job | None:
        """Start a sync job in memory, ``Started`` by ``owner`` (attempts 1, ``max_attempts`` unless
        the spec sets it), like ``enqueue(spec, now, owner=owner, lease=lease, defer=True)`` but
        without I/O. ``None``: the store cannot start this one that way now (for instance it
        has a RefId, whose uniqueness only the storage can check); the engine then awaits
        ``enqueue``."""
        ...

    def finish_in_memory(self, finished: Job, usage: Usage) -> bool:
        """Complete a job started in memory and still there, without I/O: ``finished`` is the
        job as it is once completed; it is written with ``usage`` in a later batch and ``get``
        finds it meanwhile. ``False``: the job is not in memory (it was written meanwhile, by a
        retry, a cancel or :meth:`persist`), and the engine awaits ``complete`` instead."""
        ...

    async def persist(self, job_id: int) -> bool:
        """Write a job kept in memory now, as ``Started``, and stop keeping it (its caller stopped
        waiting and may poll for it from another node). ``False``: it is not kept in memory."""
        ...


def _methods(protocol: type) -> tuple[str, ...]:
    return tuple(name for name, value in vars(protocol).items()
                 if not name.startswith("_") and inspect.isfunction(value))


#: The methods every store has.
JOB_STORE_METHODS = _methods(JobStore)
#: The methods a deferring store adds; a store has all of them or none.
DEFERRING_METHODS = _methods(DeferringJobStore)
#: Of those, the ones the engine calls on the request path without awaiting.
_WITHOUT_IO = ("start_in_memory", "finish_in_memory")


def check_job_store(store: object) -> DeferringJobStore | None:
    """Check ``store`` against the contracts; returns it as a :class:`DeferringJobStore` if it is one.

    Raises :class:`TypeError` naming every missing method when ``store`` lacks one of
    :class:`JobStore`'s, or offers only some of :class:`DeferringJobStore`'s, or makes one
    of the methods that must do no I/O a coroutine.
    """
    name = type(store).__qualname__
    missing = [method for method in JOB_STORE_METHODS if not callable(getattr(store, method, None))]
    if missing:
        raise TypeError(f"the job store {name} lacks {', '.join(missing)} (see aiport.core.jobs.store.JobStore)")
    offered = [method for method in DEFERRING_METHODS if callable(getattr(store, method, None))]
    if not offered:
        return None
    if len(offered) < len(DEFERRING_METHODS):
        lacking = [method for method in DEFERRING_METHODS if method not in offered]
        raise TypeError(f"the job store {name} offers {', '.join(offered)} but lacks {', '.join(lacking)}: "
                        "a deferring store has all of them (see aiport.core.jobs.store.DeferringJobStore)")
    awaiting = [method for method in _WITHOUT_IO if inspect.iscoroutinefunction(getattr(store, method))]
    if awaiting:
        raise TypeError(f"the job store {name} makes {', '.join(awaiting)} async; they run on the request "
                        "path without I/O and must be plain methods")
    return cast(DeferringJobStore, store)
