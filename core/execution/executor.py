"""Executors whose queues are providers: the one place a provider call's outcome is told
to the provider's health, and the one failover rule, for queued, sync and streamed calls.

- A job (sync or queued) that fails with a retryable error is moved by the engine to the
  queue :meth:`ProviderExecutor.reroute` names: the next provider serving its model.
- A streamed call has no job while it streams: :meth:`ProviderExecutor.first_answer`
  walks the same candidates until one yields its first item, holding that provider's slot.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import structlog

from ..errors import ApiError, ProviderError, ServiceUnavailable
from ..jobs.executor import Executor
from ..jobs.model import Job
from .routing import ProviderManager, RuntimeProvider

log = structlog.get_logger("aiport.execution")

T = TypeVar("T")

#: Jobs whose failed providers are remembered at most; past it the memory is dropped (jobs that
#: failed for good are never told apart from ones still failing over).
_MAX_REMEMBERED_JOBS = 10_000


class ProviderExecutor(Executor):
    """Runs jobs on the provider their queue names; remembers which providers a job has
    tried, and fails it over to the next one serving its model."""

    #: Which providers to fail over to: ``chat`` or ``media``.
    kind = "chat"

    def __init__(self, providers: ProviderManager) -> None:
        self.providers = providers
        self._tried: dict[int, set[str]] = {}

    def provider_for(self, job: Job) -> RuntimeProvider:
        """The provider a job's queue stands for; a retryable error once it is gone."""
        provider = self.providers.get(job.queue)
        if provider is None:
            raise ProviderError(f"Provider {job.queue!r} is not configured any more.", provider=job.queue,
                                retryable=True)
        return provider

    # ------------------------------------------------------------------ health

    def served(self, provider: RuntimeProvider, seconds: float | None = None) -> None:
        """A call succeeded (after ``seconds``): its provider is healthy."""
        self.providers.report_success(provider, seconds)

    def failed(self, provider: RuntimeProvider, error: BaseException) -> None:
        """A call failed: a retryable error cools its provider down until a probe answers."""
        if isinstance(error, Exception):
            self.providers.report_failure(provider, error)

    # ------------------------------------------------------------------ failover

    @staticmethod
    def may_fail_over(error: BaseException, requested_provider: str | None) -> bool:
        """Whether another provider may be tried: a retryable error, and no provider the caller
        asked for by name (that one is never replaced)."""
        return isinstance(error, ProviderError) and error.retryable and not requested_provider

    def succeeded(self, job: Job) -> None:
        """A job finished: forget which providers it tried."""
        if self._tried:
            self._tried.pop(job.id, None)

    def reroute(self, job: Job, error: BaseException) -> str | None:
        if job.requested_provider:
            return None  # a provider the caller asked for is not replaced
        # Providers are remembered when they fail a job, not when they start one: most jobs
        # never fail over, and a job's current queue is always its latest try.
        if len(self._tried) >= _MAX_REMEMBERED_JOBS and job.id not in self._tried:
            self._tried.clear()
        tried = self._tried.setdefault(job.id, set())
        tried.add(job.queue)
        try:
            candidates = self.providers.candidates(str(job.request["model"]), kind=self.kind, exclude=tried)
        except ApiError:
            return None
        return candidates[0].name if candidates else None

    async def first_answer(self, candidates: Sequence[RuntimeProvider],
                           start: Callable[[RuntimeProvider], AsyncIterator[T]],
                           requested_provider: str | None) -> tuple[RuntimeProvider, AsyncIterator[T], T | None]:
        """Start ``start(provider)`` on the first candidate that yields its first item, holding
        one of its slots; a failure that may fail over moves on to the next candidate. Returns
        the provider, its iterator and the first item (``None`` for an empty stream). The caller
        must release the provider's slot and close the iterator."""
        last_error: BaseException | None = None
        for provider in candidates:
            await provider.slots.acquire()
            started = time.monotonic()
            items = start(provider)
            try:
                first = await anext(items)
            except StopAsyncIteration:
                first = None
            except BaseException as exc:
                provider.slots.release()
                await close_quietly(items)
                self.failed(provider, exc)
                if self.may_fail_over(exc, requested_provider):
                    last_error = exc
                    continue
                raise
            self.served(provider, time.monotonic() - started)
            return provider, items, first
        if last_error is None:
            raise ServiceUnavailable("No provider serving this model is available right now.")
        raise last_error


async def close_quietly(items: AsyncIterator[Any]) -> None:
    """Close an upstream iterator; closing a broken stream must not hide the real error."""
    closer = getattr(items, "aclose", None)
    if closer is not None:
        try:
            await closer()
        except Exception as exc:
            log.debug("closing upstream stream failed", error=repr(exc))
