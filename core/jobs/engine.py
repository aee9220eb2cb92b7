"""The job engine: queues, workers, retries, timeouts, callbacks and sync waits.

Each queue (one per provider, plus ``callbacks`` and the local media queues)
has a fixed number of :class:`Slots`, its ``concurrency``; a job is claimed from
the store only when a slot is free, so a provider never runs more jobs at once
than configured. Streamed requests that bypass the queue take the same slots.

APIs plug in an :class:`Executor` per API name: it runs a job, says what its
``ReplyTo`` callback carries, and may send a failed job to another queue
(failover). The engine owns everything else: claiming, leases, retries with
backoff, the job timeout, cancellation, waking sync callers, and the callback
job that delivers each result.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from ..config import Config
from ..errors import Conflict, GatewayTimeout, NotFound, ProviderError
from .deadlines import Deadlines
from .executor import Executor, JobContext, error_of, is_retryable
from .model import STATE_TEXT, Job, JobEvent, JobSpec, JobState, Usage, replace_job, replace_spec
from .queues import Slots, WorkQueue
from .store import JobStore, check_job_store

log = structlog.get_logger("aiport.jobs")

Clock = Callable[[], dt.datetime]
CALLBACK_QUEUE = "callbacks"
CALLBACK_API = "Callback"
#: A worker keeps its jobs' leases this long past its last renewal.
LEASE_SECONDS = 60.0
#: How often idle queues look for work from other nodes or delayed retries.
POLL_SECONDS = 1.0
#: Most jobs a queue claims in one write.
CLAIM_BATCH = 32


def system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _cancel_task(task: asyncio.Task[Any], expired: list[bool]) -> None:
    expired.append(True)
    task.cancel()


class JobEngine:
    """Runs jobs from a :class:`~aiport.core.jobs.store.JobStore` on this node.

    Raises :class:`TypeError` for a store that does not meet the contract (see
    :func:`~aiport.core.jobs.store.check_job_store`).
    """

    def __init__(self, config: Config, store: JobStore, *, clock: Clock = system_clock,
                 node_id: str | None = None) -> None:
        self.config = config
        self.store = store
        # Checked once here; a deferring store starts and finishes sync jobs in memory,
        # without awaiting it (see call and _run), through these bound methods.
        self._deferring = check_job_store(store)
        self._start_in_memory: Callable[[JobSpec, dt.datetime, str, float, int], Job | None] | None = (
            self._deferring.start_in_memory if self._deferring is not None else None)
        self._finish_in_memory: Callable[[Job, Usage], bool] | None = (
            self._deferring.finish_in_memory if self._deferring is not None else None)
        self.clock = clock
        self.node_id = node_id or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.queues: dict[str, WorkQueue] = {}
        self.executors: dict[str, Executor] = {}
        self._waiters: dict[int, list[asyncio.Future[Job]]] = {}
        self._running: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._maintenance: asyncio.Task[None] | None = None
        #: Jobs created by the current submit call, until its caller starts waiting.
        self._just_submitted: set[int] = set()
        self._started = False
        #: Seconds after finishing that a job moves to its monthly archive.
        self.archive_after = 300.0
        self.stats: dict[str, dict[str, int]] = {}
        #: Told of every request that finished, and of every retry (metrics, token limits).
        self.listeners: list[Callable[[JobEvent], None]] = []
        #: Job and wait timeouts: one loop timer per tick instead of one per request.
        self.deadlines = Deadlines()

    # ------------------------------------------------------------------ set-up

    def register_executor(self, api: str, executor: Executor) -> None:
        if api in self.executors:
            raise ValueError(f"an executor for {api!r} is already registered")
        self.executors[api] = executor

    def add_queue(self, name: str, concurrency: int) -> WorkQueue:
        """Create (or resize) a queue; its dispatcher starts with the engine."""
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = WorkQueue(name, concurrency, f"{self.node_id}:{name}")
            if self._started:
                queue.task = asyncio.create_task(self._dispatch(queue), name=f"aiport-queue-{name}")
        return queue

    def slots(self, name: str) -> Slots:
        return self.queues[name].slots

    async def start(self) -> None:
        """Recover jobs a previous process left running, then start the workers."""
        requeued, failed = await self.store.recover(self.clock(), all_started=True)
        if requeued or failed:
            log.warning("recovered interrupted jobs", requeued=requeued, failed=failed)
        self._started = True
        for queue in self.queues.values():
            queue.task = asyncio.create_task(self._dispatch(queue), name=f"aiport-queue-{queue.name}")
        self._maintenance = asyncio.create_task(self._maintain(), name="aiport-jobs-maintenance")

    async def stop(self) -> None:
        """Stop workers. Running jobs are left ``Started``: the next start requeues them."""
        self._started = False
        tasks = [q.task for q in self.queues.values() if q.task] + list(self._running.values())
        if self._maintenance:
            tasks.append(self._maintenance)
        tasks += list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.cancel()
        self._waiters.clear()

    # ------------------------------------------------------------------ submit and wait

    def prepared(self, spec: JobSpec, **changes: Any) -> JobSpec:
        """``spec`` with ``changes`` and the engine's defaults (``max_attempts``), in one copy."""
        if spec.max_attempts is None and "max_attempts" not in changes:
            changes["max_attempts"] = self.config.jobs.retries + 1
        return replace_spec(spec, **changes) if changes else spec

    async def submit(self, spec: JobSpec) -> Job:
        """Store a new job (or return the existing one for a repeated RefId) and wake its queue."""
        spec = self.prepared(spec)
        job, new = await self.store.enqueue(spec, self.clock())
        if new:
            self._remember_new(job.id)
            queue = self.queues.get(job.queue)
            if queue is not None:
                queue.slots.waiting += 1
                queue.wake.set()
        return job

    async def call(self, spec: JobSpec, timeout: float) -> Job:
        """A sync call: when the job's queue has a free slot on this node, start it at once here
        (one write instead of enqueue-then-claim, no hop through the queue's worker), else
        queue it; then wait for it.

        Returns the finished job; after ``timeout`` raises a 504 that names the job,
        which carries on.
        """
        loop = asyncio.get_running_loop()
        queue = self.queues.get(spec.queue)
        if not self._started or queue is None or not queue.slots.try_acquire():
            return await self.wait(await self.submit(spec), timeout)
        job = None
        if self._start_in_memory is not None:  # no write and no await (see DeferringJobStore)
            job = self._start_in_memory(spec, self.clock(), queue.owner, LEASE_SECONDS,
                                        spec.max_attempts or self.config.jobs.retries + 1)
        if job is None:
            try:
                job, new = await self.store.enqueue(self.prepared(spec), self.clock(), owner=queue.owner,
                                                    lease=LEASE_SECONDS, defer=True)
            except BaseException:
                queue.slots.release()
                raise
            if not new:  # a repeated RefId: the job already exists
                queue.slots.release()
                return await self.wait(job, timeout)
        # No task name: formatting and setting one per request costs more than the task itself.
        self._running[job.id] = loop.create_task(self._run(job, queue.owner, queue))
        # The job's task has not run yet: nothing can have finished it before this waiter exists.
        future: asyncio.Future[Job] = loop.create_future()
        self._waiters[job.id] = [future]
        deadline = self.deadlines.call_later(timeout, _expire, future)
        try:
            return await future
        except TimeoutError:
            raise await self._sync_timeout(job, timeout) from None
        finally:
            self.deadlines.cancel(deadline)
            self._forget_waiter(job.id, future)

    def _remember_new(self, job_id: int) -> None:
        if len(self._just_submitted) > 10_000:  # queued calls nobody waits for
            self._just_submitted.clear()
        self._just_submitted.add(job_id)

    async def wait(self, job: Job, timeout: float) -> Job:
        """Wait (on an event, not by polling) until ``job`` finishes or ``timeout`` passes.

        On timeout raises a 504 whose body names the job, which carries on.
        """
        if job.state.finished:
            return job
        future: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job.id, []).append(future)
        try:
            if job.id in self._just_submitted:
                # Created by this call and not yet yielded to its worker: it cannot have
                # finished before the waiter above was registered, so no re-read is needed.
                self._just_submitted.discard(job.id)
            else:  # an existing job (a repeated RefId) may have finished meanwhile
                current = await self.store.get(job_id=job.id)
                if current is not None and current.state.finished:
                    return current
            # The future is only a notice: failing it on timeout leaves the job running.
            deadline = self.deadlines.call_later(timeout, _expire, future)
            try:
                return await future
            finally:
                self.deadlines.cancel(deadline)
        except TimeoutError:
            raise await self._sync_timeout(job, timeout) from None
        finally:
            self._forget_waiter(job.id, future)

    def _forget_waiter(self, job_id: int, future: asyncio.Future[Job]) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            with contextlib.suppress(ValueError):
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(job_id, None)

    async def _sync_timeout(self, job: Job, timeout: float) -> GatewayTimeout:
        """The 504 for a caller that stopped waiting; the job carries on."""
        if self._deferring is not None:  # a deferred sync job becomes durable now that its caller may poll it
            await self._deferring.persist(job.id)
        current = await self.store.get(job_id=job.id) or job
        return GatewayTimeout(
            f"The job did not finish within {timeout:g} s; it carries on. Poll its status with "
            f"JobId {job.id} or RefId {job.ref_id!r}.",
            error_code="Timeout",
            extra={"jobId": job.id, "refId": job.ref_id, "jobState": current.state.value},
        )

    async def cancel(self, job: Job, reason: str = "Cancelled by request", *, status: int = 409,
                     code: str = "Cancelled") -> Job:
        """Cancel a queued or running job (no retry); its ``ReplyTo`` is told."""
        if job.state.finished:
            return job
        error = {"errorCode": code, "message": reason}
        final = replace_job(job, state=JobState.CANCELLED, error=error, error_status=status)
        updated = await self.store.cancel(job.id, self.clock(), error, callback=self._callback_spec(final),
                                          error_status=status)
        if updated is None:
            raise NotFound(f"Job {job.id} does not exist.")
        task = self._running.get(job.id)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        elif job.state == JobState.QUEUED and job.queue in self.queues:
            self.queues[job.queue].slots.waiting = max(0, self.queues[job.queue].slots.waiting - 1)
        if updated.state == JobState.CANCELLED:
            self._emit(JobEvent(api=updated.api, state=updated.state.value, key_id=updated.key_id,
                                usage=Usage(provider=updated.provider), queue=updated.queue))
        self._wake(CALLBACK_QUEUE)
        self._notify(updated)
        return updated

    async def record(self, spec: JobSpec, *, state: JobState, response: Mapping[str, Any] | None,
                     error: Mapping[str, Any] | None, usage: Usage, duration_ms: int) -> int:
        """Store a request that ran outside the queue (a stream) as a finished job; returns its id."""
        job_id = await self.store.record(spec, state=state, response=response, error=error, usage=usage,
                                         duration_ms=duration_ms, now=self.clock())
        self._emit(JobEvent(api=spec.api, state=state.value, key_id=spec.key_id, usage=usage, queue=spec.queue))
        return job_id

    def _emit(self, event: JobEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as exc:  # accounting must not fail the request it accounts for
                log.error("a job listener failed", listener=repr(listener), error=repr(exc))

    # ------------------------------------------------------------------ workers

    def _wake(self, name: str) -> None:
        queue = self.queues.get(name)
        if queue is not None:
            queue.wake.set()

    async def _dispatch(self, queue: WorkQueue) -> None:
        owner = queue.owner
        slots = queue.slots
        while True:
            await slots.acquire()
            # Claim as many jobs as are waiting (up to a batch), in one write; not every free
            # place, which for a wide queue would be hundreds of acquire/release pairs per wake-up.
            taken = 1
            while taken < min(slots.waiting, CLAIM_BATCH) and slots.try_acquire():
                taken += 1
            try:
                jobs = await self.store.claim(queue.name, owner, LEASE_SECONDS, self.clock(), limit=taken)
            except Exception as exc:
                jobs = []
                log.error("claiming a job failed", queue=queue.name, error=repr(exc))
                await asyncio.sleep(POLL_SECONDS)
            for _ in range(taken - len(jobs)):
                slots.release()
            if not jobs:
                slots.waiting = 0
                queue.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.wake.wait(), POLL_SECONDS)
                continue
            slots.waiting = max(0, slots.waiting - len(jobs))
            for job in jobs:
                task = asyncio.create_task(self._run(job, owner, queue), name=f"aiport-job-{job.id}")
                self._running[job.id] = task

    async def _run(self, job: Job, owner: str, queue: WorkQueue) -> None:
        executor = self.executors.get(job.api)
        bucket = self.stats.get(queue.name) or self.stats.setdefault(
            queue.name, {"received": 0, "completed": 0, "retries": 0, "failed": 0})
        bucket["received"] += 1
        # Whoever started this task put it in _running first (cheaper than current_task()).
        task = self._running.get(job.id) or asyncio.current_task()
        assert task is not None
        try:
            if executor is None:
                await self._finish_failed(job, owner, NotFound(f"No executor for API {job.api!r}."), None)
                return
            ctx = JobContext(job=job, engine=self, owner=owner)
            expired: list[bool] = []
            deadline = self.deadlines.call_later(self.config.jobs.timeout, _cancel_task, task, expired)
            try:
                try:
                    result = await executor.run(job, ctx)
                finally:
                    self.deadlines.cancel(deadline)
            except asyncio.CancelledError:
                if not expired or task.uncancel() > 0:
                    raise  # cancelled by CancelJob or shut-down, not by the timeout
                await self.cancel(job, f"The job ran longer than jobs.timeout ({self.config.jobs.timeout:g} s).",
                                  status=504, code="Timeout")
                bucket["failed"] += 1
                return
            except Exception as exc:
                await self._handle_failure(job, owner, executor, exc, bucket)
                return
            now = self.clock()
            final: Job | None = None
            callback = None
            if job.reply_to or job.id in self._waiters:  # only then is the finished job needed here
                started = job.started_at or job.created_at
                final = replace_job(job, state=JobState.COMPLETED, response=dict(result.response),
                                    outputs=tuple(result.outputs), provider=result.usage.provider or job.provider,
                                    completed_at=now, progress=1.0, lease_owner=None, lease_expires_at=None,
                                    duration_ms=int((now - started).total_seconds() * 1000))
                callback = self._callback_spec(final, executor) if job.reply_to else None
            if final is not None and callback is None and self._finish_in_memory is not None \
                    and self._finish_in_memory(final, result.usage):
                done = True
            else:
                done = await self.store.complete(job.id, owner, result, now, callback=callback, finished=final)
            if done:
                bucket["completed"] += 1
                self._emit(JobEvent(api=job.api, state=STATE_TEXT[JobState.COMPLETED], key_id=job.key_id,
                                    usage=result.usage, queue=job.queue))
                if callback is not None:
                    self._wake(CALLBACK_QUEUE)
                if final is not None:  # wake sync callers without a read
                    self._notify(final)
        except asyncio.CancelledError:
            # Cancelled by CancelJob (the store already says Cancelled) or by shut-down
            # (the job stays Started and the next start requeues it).
            pass
        except Exception as exc:  # the store failed; the lease lapses and recovery retries the job
            log.error("job bookkeeping failed", job_id=job.id, error=repr(exc))
        finally:
            if self._running.get(job.id) is task:  # not a retry's task started since
                del self._running[job.id]
            queue.slots.release()
            if queue.slots.waiting:  # a place is free for a job that waits
                queue.wake.set()

    async def _handle_failure(self, job: Job, owner: str, executor: Executor, exc: Exception,
                              bucket: dict[str, int]) -> None:
        error, status = error_of(exc)
        provider = executor.provider_of(job)
        if is_retryable(exc) and job.attempts < job.max_attempts:
            other = executor.reroute(job, exc)
            if other is not None and other != job.queue:
                delay = 0.0
            elif isinstance(exc, ProviderError) and exc.retry_after is not None:
                delay = min(exc.retry_after, 300.0)
            else:
                delay = self._backoff(job)
            retry_at = self.clock() + dt.timedelta(seconds=delay)
            moved = await self.store.fail(job.id, owner, error, status, self.clock(), retry_at=retry_at,
                                          queue=other, provider=provider)
            if moved:
                bucket["retries"] += 1
                self._emit(JobEvent(api=job.api, state=JobState.QUEUED.value, key_id=job.key_id,
                                    usage=Usage(provider=provider), queue=job.queue, retry=True))
                target = other or job.queue
                if target in self.queues:
                    self.queues[target].slots.waiting += 1
                log.info("job will be retried", job_id=job.id, attempt=job.attempts, delay_s=round(delay, 2),
                         queue=target, error=error.get("message"))
                loop = asyncio.get_running_loop()
                loop.call_later(delay, self._wake, target)
            return
        bucket["failed"] += 1
        await self._finish_failed(job, owner, exc, executor, provider=provider)

    def _backoff(self, job: Job) -> float:
        base = self.config.jobs.retry_backoff
        return min(base * (2 ** max(0, job.attempts - 1)), 300.0)

    async def _finish_failed(self, job: Job, owner: str, exc: BaseException, executor: Executor | None,
                             provider: str | None = None) -> None:
        error, status = error_of(exc)
        final = replace_job(job, state=JobState.FAILED, error=error, error_status=status)
        callback = self._callback_spec(final, executor) if executor else None
        if await self.store.fail(job.id, owner, error, status, self.clock(), provider=provider,
                                 callback=callback):
            log.info("job failed", job_id=job.id, attempts=job.attempts, error=error.get("message"))
            self._emit(JobEvent(api=job.api, state=JobState.FAILED.value, key_id=job.key_id,
                                usage=Usage(provider=provider), queue=job.queue))
            self._wake(CALLBACK_QUEUE)
            await self._notify_by_id(job.id)

    def _callback_spec(self, job: Job, executor: Executor | None = None) -> JobSpec | None:
        if not job.reply_to or job.api == CALLBACK_API:
            return None
        executor = executor or self.executors.get(job.api)
        body = executor.callback_body(job) if executor else None
        if body is None:
            return None
        return JobSpec(
            api=CALLBACK_API, queue=CALLBACK_QUEUE, key_id=job.key_id, tag=job.tag, reply_to=job.reply_to,
            parent_id=job.id, max_attempts=self.config.jobs.callback_attempts,
            request={"replyTo": job.reply_to, "body": dict(body), "parentId": job.id, "parentRefId": job.ref_id},
        )

    # ------------------------------------------------------------------ waking sync callers

    async def _notify_by_id(self, job_id: int) -> None:
        if job_id in self._waiters:
            job = await self.store.get(job_id=job_id)
            if job is not None:
                self._notify(job)

    def _notify(self, job: Job) -> None:
        for future in self._waiters.get(job.id, ()):
            if not future.done():
                future.set_result(job)

    # ------------------------------------------------------------------ maintenance

    async def _maintain(self) -> None:
        """Renew this node's leases, recover expired ones, archive finished jobs."""
        last_archive = 0.0
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                await self.store.renew_owner(self.node_id, LEASE_SECONDS, self.clock())
                await self.store.recover(self.clock(), all_started=False)
                if time.monotonic() - last_archive > 60:
                    last_archive = time.monotonic()
                    await self.archive_now()
            except Exception as exc:
                log.error("job maintenance failed", error=repr(exc))

    async def archive_now(self) -> int:
        """Move jobs finished more than ``archive_after`` seconds ago to their monthly archive."""
        return await self.store.archive(self.clock() - dt.timedelta(seconds=self.archive_after))

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run background work that the engine cancels on stop."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def resize_queue(self, name: str, concurrency: int) -> None:
        """Change how many jobs a queue runs at once (a provider changed at run time).

        Growing hands the new places to jobs already waiting for one; shrinking takes
        effect as running jobs finish.
        """
        queue = self.queues.get(name)
        if queue is None:
            return
        slots = queue.slots
        grown = concurrency - slots.concurrency
        slots.concurrency = concurrency
        for _ in range(max(0, grown)):
            # Take the new place and give it back: release() hands it to the first waiter, if any.
            slots.running += 1
            slots.release()
        queue.wake.set()

    async def requeue(self, job: Job) -> Job:
        """Put a failed or cancelled job back in its queue to run again from its first attempt."""
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            raise Conflict(f"Job {job.id} is {job.state.value}; only failed or cancelled jobs can be requeued.")
        updated = await self.store.requeue(job.id, self.clock())
        if updated is None:
            raise Conflict(f"Job {job.id} changed meanwhile; look at it again.")
        queue = self.queues.get(updated.queue)
        if queue is not None:
            queue.slots.waiting += 1
            queue.wake.set()
        return updated
