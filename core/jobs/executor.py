"""How an API's jobs run: the :class:`Executor` an API registers with the engine, the
:class:`JobContext` it runs with, and which failures are worth a retry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import ApiError, ProviderError
from .model import Job, JobResult

if TYPE_CHECKING:
    from .engine import JobEngine


@attrs.define
class JobContext:
    """What an executor gets besides the job: progress reporting and the engine's services."""

    job: Job
    engine: JobEngine
    owner: str
    _last_progress: float = 0.0

    async def progress(self, value: float | None = None, status: str | None = None) -> None:
        """Report progress (0..1) and/or a status line; persisted at most a few times a second."""
        now = time.monotonic()
        if value is not None and value < 1.0 and now - self._last_progress < 0.25 and status is None:
            return
        self._last_progress = now
        await self.engine.store.progress(self.job.id, self.owner, value, status)

    async def executed(self, provider: str | None = None) -> None:
        """The backend finished; outputs are being stored."""
        await self.engine.store.mark_executed(self.job.id, self.owner, provider)


class Executor:
    """How one API's jobs run. Subclass and override :meth:`run`."""

    async def run(self, job: Job, ctx: JobContext) -> JobResult:
        raise NotImplementedError

    def callback_body(self, job: Job) -> Mapping[str, Any] | None:
        """The JSON a ``ReplyTo`` receives for a finished ``job`` (``None``: send nothing)."""
        return None

    def reroute(self, job: Job, error: BaseException) -> str | None:
        """Another queue to try a failed job on at once (failover), or ``None``."""
        return None

    def provider_of(self, job: Job) -> str | None:
        """The provider a job's queue stands for (recorded with its result)."""
        return job.queue


def is_retryable(error: BaseException) -> bool:
    """Connection errors, timeouts, 429 and 5xx may succeed on a retry; a bad request will not."""
    if isinstance(error, ProviderError):
        return error.retryable
    if isinstance(error, ApiError):
        return error.status >= 500
    return isinstance(error, OSError | asyncio.TimeoutError | ConnectionError)


def error_of(error: BaseException) -> tuple[dict[str, Any], int]:
    """The ``responseStatus`` and HTTP status recorded for a failure."""
    if isinstance(error, ApiError):
        return error.response_status(), error.status
    return {"errorCode": type(error).__name__, "message": str(error) or type(error).__name__}, 500
