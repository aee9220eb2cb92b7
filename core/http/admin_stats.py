"""Admin APIs for the dashboard: usage (``GetSummaryStats``), queues (``GetWorkerStats``)
and totals (``AdminData``), in AI Server's shapes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import attrs
from aiohttp import web

from .. import state
from ..jobs.engine import CALLBACK_API, JobEngine
from ..jobs.model import Job, JobState
from ..jobs.store import JobQuery
from .admin_common import TAGS
from .admin_providers import list_providers
from .dto import api, response_model
from .dto import field as dfield
from .keys import KeyService
from .routes import add_api
from .scrubbing import scrubbed_response


@response_model()
@attrs.define
class SummaryStat:
    """Usage of one provider, model, month, key or API."""

    name: str
    total: int
    total_prompt_tokens: int
    total_completion_tokens: int
    total_minutes: float
    tokens_per_second: float
    errors: int
    key_id: int | None = None


@response_model()
@attrs.define
class SummaryStatsResponse:
    """``GetSummaryStats``: AI Server's three groupings plus per key and per API."""

    provider_stats: list[SummaryStat]
    model_stats: list[SummaryStat]
    month_stats: list[SummaryStat]
    key_stats: list[SummaryStat]
    api_stats: list[SummaryStat]


@api(methods=("GET", "POST"), auth="admin", response=SummaryStatsResponse, tags=TAGS)
@attrs.define
class GetSummaryStats:
    """Usage by provider, model, month, API key and API: requests, tokens, minutes, tokens/s, errors."""

    from_: dt.datetime | None = dfield(wire_name="From")
    to: dt.datetime | None = dfield()


@response_model()
@attrs.define
class WorkerStats:
    """One queue (a provider, ``callbacks``, ``local-*``) on this node."""

    name: str
    queued: int
    received: int
    completed: int
    retries: int
    failed: int
    running: int
    concurrency: int | None = None
    running_job: int | None = None
    running_time: dt.timedelta | None = None


@response_model()
@attrs.define
class WorkerStatsResponse:
    """``GetWorkerStats``: per queue, and the queued count of each."""

    results: list[WorkerStats]
    queue_counts: dict[str, int]


@api(methods=("GET", "POST"), auth="admin", response=WorkerStatsResponse, tags=TAGS)
@attrs.define
class GetWorkerStats:
    """Per queue (provider): queued, received, completed, retries, failed, and the longest-running job."""


@response_model()
@attrs.define
class PageStat:
    """One dashboard total."""

    label: str
    total: int


@response_model()
@attrs.define
class AdminDataResponse:
    """``AdminData``: the dashboard totals."""

    page_stats: list[PageStat]


@api(methods=("GET", "POST"), auth="admin", response=AdminDataResponse, tags=TAGS)
@attrs.define
class AdminData:
    """Totals for the admin dashboard."""


# --------------------------------------------------------------------------- handlers


@attrs.define
class _Totals:
    total: int = 0
    prompt: int = 0
    completion: int = 0
    duration_ms: int = 0
    #: Time of the requests that reported completion tokens (for tokens per second).
    generating_ms: int = 0
    errors: int = 0

    def add(self, row: Mapping[str, Any]) -> None:
        self.total += 1
        self.prompt += row.get("promptTokens") or 0
        completion = row.get("completionTokens") or 0
        self.completion += completion
        duration = row.get("durationMs") or 0
        self.duration_ms += duration
        if completion:
            self.generating_ms += duration
        if row.get("state") == JobState.FAILED.value:
            self.errors += 1

    def stat(self, name: str, key_id: int | None = None) -> SummaryStat:
        tps = self.completion / (self.generating_ms / 1000) if self.generating_ms else 0.0
        return SummaryStat(name=name, total=self.total, total_prompt_tokens=self.prompt,
                           total_completion_tokens=self.completion,
                           total_minutes=round(self.duration_ms / 60_000, 3), tokens_per_second=round(tps, 2),
                           errors=self.errors, key_id=key_id)


async def summary_stats(request: web.Request, dto: GetSummaryStats) -> web.Response:
    engine: JobEngine = request.app[state.ENGINE]
    rows = await engine.store.summary(dto.from_, dto.to)
    groups: dict[str, dict[Any, _Totals]] = {"provider": {}, "model": {}, "month": {}, "key": {}, "api": {}}
    for row in rows:
        if row.get("api") == CALLBACK_API:  # deliveries of results, not requests
            continue
        for group, value in (("provider", row.get("provider") or row.get("queue") or ""),
                             ("model", row.get("model") or ""), ("month", row.get("month") or ""),
                             ("key", int(row.get("keyId") or 0)), ("api", row.get("api") or "")):
            groups[group].setdefault(value, _Totals()).add(row)
    names: dict[int, str] = {0: "anonymous / admin"}
    service = request.app.get(state.KEYS)
    if isinstance(service, KeyService) and len(groups["key"]) > 1:
        keys, _ = await service.store.list(limit=100_000)
        names.update({k.id: k.name for k in keys})

    def ordered(group: str) -> list[SummaryStat]:
        items = sorted(groups[group].items(), key=lambda kv: (-kv[1].total, str(kv[0])))
        if group == "month":
            items = sorted(groups[group].items())
        if group == "key":
            return [t.stat(names.get(k, f"key {k}"), key_id=k) for k, t in items]
        return [t.stat(str(k)) for k, t in items]

    return scrubbed_response(request, SummaryStatsResponse(
        provider_stats=ordered("provider"), model_stats=ordered("model"), month_stats=ordered("month"),
        key_stats=ordered("key"), api_stats=ordered("api")))


async def worker_stats(request: web.Request, dto: GetWorkerStats) -> web.Response:
    engine: JobEngine = request.app[state.ENGINE]
    counts = await engine.store.queue_counts()
    running = await engine.store.list_jobs(JobQuery(states=(JobState.STARTED, JobState.EXECUTED), limit=10_000))
    oldest: dict[str, Job] = {}
    for job in running:
        current = oldest.get(job.queue)
        if job.started_at is not None and (current is None or (current.started_at or job.started_at) > job.started_at):
            oldest[job.queue] = job
    now = engine.clock()
    results = []
    for name in sorted(set(engine.queues) | set(counts) | set(engine.stats)):
        stats = engine.stats.get(name, {})
        queue = engine.queues.get(name)
        longest = oldest.get(name)
        results.append(WorkerStats(
            name=name, queued=counts.get(name, {}).get(JobState.QUEUED.value, 0), received=stats.get("received", 0),
            completed=stats.get("completed", 0), retries=stats.get("retries", 0), failed=stats.get("failed", 0),
            running=queue.slots.running if queue else 0, concurrency=queue.slots.concurrency if queue else None,
            running_job=longest.id if longest else None,
            running_time=(now - longest.started_at) if longest and longest.started_at else None))
    queue_counts = {q: c.get(JobState.QUEUED.value, 0) for q, c in counts.items()}
    return scrubbed_response(request, WorkerStatsResponse(results=results, queue_counts=queue_counts))


async def admin_data(request: web.Request, dto: AdminData) -> web.Response:
    engine: JobEngine = request.app[state.ENGINE]
    counts = await engine.store.queue_counts()
    admin = request.app.get(state.PROVIDER_ADMIN)
    chat = len(list_providers(admin, "chat")) if admin else len(request.app[state.PROVIDERS].of_kind("chat"))
    media = len(list_providers(admin, "media")) if admin else len(request.app[state.PROVIDERS].of_kind("media"))
    service = request.app.get(state.KEYS)
    keys = await service.store.count(active_at=service.clock()) if isinstance(service, KeyService) else 0
    stats = [PageStat("AiProviders", chat), PageStat("MediaProviders", media), PageStat("ApiKeys", keys),
             PageStat("QueuedJobs", sum(c.get(JobState.QUEUED.value, 0) for c in counts.values())),
             PageStat("RunningJobs", sum(c.get(JobState.STARTED.value, 0) + c.get(JobState.EXECUTED.value, 0)
                                         for c in counts.values()))]
    return scrubbed_response(request, AdminDataResponse(page_stats=stats))


def install(app: web.Application) -> None:
    """Serve the dashboard admin APIs."""
    add_api(app, GetSummaryStats, summary_stats)
    add_api(app, GetWorkerStats, worker_stats)
    add_api(app, AdminData, admin_data)
