"""``GET /metrics``: Prometheus text exposition (format 0.0.4), written by hand.

What is counted, and where it comes from:

- a middleware (outermost, so it sees the final status) counts every request by
  API, provider (the ``X-Aiport-Provider`` header), model and status, and times it;
- a listener of the job engine's events sees every finished request (queued
  jobs, sync jobs and streams alike) with its usage: tokens, time to first
  token, final state, and the outcome of ``ReplyTo`` callbacks. Another reports
  each key's tokens to the rate limiter (tokens-per-minute limits);
- gauges (queue depth, running jobs, provider up/down, limiter refusals) are read
  from the engine, the store and the provider manager when scraped.

Recording is plain dict increments on tuples of label values; all formatting
happens at scrape time.
"""

from __future__ import annotations

import bisect
import hmac
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from .. import state
from ..jobs.engine import CALLBACK_API
from ..jobs.model import STATE_TEXT, JobEvent, JobState
from ..version import __version__
from . import limits
from .auth import API_NAME, authorize, credential
from .dto import ApiMeta
from .routes import add_plain

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
#: Series of the request counter before new model labels are folded into ``other``
#: (model names come from requests; this bounds what a client can make us remember).
MAX_SERIES = 5_000
_COMPLETED, _FAILED = STATE_TEXT[JobState.COMPLETED], STATE_TEXT[JobState.FAILED]
_METRICS_META = ApiMeta(name="Metrics", methods=("GET",), routes=(), auth="admin", response=None,
                        summary="Prometheus metrics", tags=(), naming="pascal", uploads=False)


class Histogram:
    """Counts per bucket (non-cumulative; summed when rendered), plus sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


class Metrics:
    """The app's counters and histograms."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, str], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.ttft: dict[tuple[str, str], Histogram] = {}
        self.tokens: dict[tuple[str, str, str], int] = {}
        self.jobs: dict[tuple[str, str, str], int] = {}
        self.retries: dict[str, int] = {}
        self.callbacks_delivered = 0
        self.callback_failures: dict[str, int] = {}

    def observe_request(self, api: str, provider: str, model: str, status: int, seconds: float) -> None:
        key = (api, provider, model, str(status))
        if key not in self.requests and len(self.requests) >= MAX_SERIES:
            key = (api, provider, "other", str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get(api)
        if histogram is None:
            histogram = self.latency[api] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def job_event(self, event: JobEvent) -> None:
        if event.api == CALLBACK_API:
            if event.state == _COMPLETED:
                self.callbacks_delivered += 1
            elif event.retry or event.state == _FAILED:
                final = "false" if event.retry else "true"
                self.callback_failures[final] = self.callback_failures.get(final, 0) + 1
            return
        if event.retry:
            queue = event.queue or ""
            self.retries[queue] = self.retries.get(queue, 0) + 1
            return
        usage = event.usage
        provider, model = usage.provider or "", usage.model or ""
        key = (event.api, provider, event.state)
        self.jobs[key] = self.jobs.get(key, 0) + 1
        for kind, value in (("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens)):
            if value:
                tkey = (provider, model, kind)
                self.tokens[tkey] = self.tokens.get(tkey, 0) + value
        if usage.ttft_ms is not None and event.state == _COMPLETED:
            histogram = self.ttft.get((provider, model))
            if histogram is None:
                histogram = self.ttft[(provider, model)] = Histogram(TTFT_BUCKETS)
            histogram.observe(usage.ttft_ms / 1000)


METRICS = web.AppKey("aiport.metrics", Metrics)


# --------------------------------------------------------------------------- exposition


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Iterable[str], values: Iterable[str]) -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, names: Iterable[str], values: Iterable[str], value: float) -> None:
        self.lines.append(f"{name}{_labels(names, values)} {_number(value)}")

    def counter(self, name: str, help_text: str, names: tuple[str, ...],
                series: Mapping[Any, float]) -> None:
        self.family(name, "counter", help_text)
        for values, value in sorted(series.items()):
            self.sample(name, names, values, value)

    def gauge(self, name: str, help_text: str, names: tuple[str, ...],
              series: Mapping[Any, float]) -> None:
        self.family(name, "gauge", help_text)
        for values, value in sorted(series.items()):
            self.sample(name, names, values, value)

    def histogram(self, name: str, help_text: str, names: tuple[str, ...],
                  series: Mapping[Any, Histogram]) -> None:
        self.family(name, "histogram", help_text)
        for values, hist in sorted(series.items()):
            running = 0
            for bound, count in zip((*hist.bounds, float("inf")), hist.counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else _number(bound)
                self.sample(f"{name}_bucket", (*names, "le"), (*values, le), running)
            self.sample(f"{name}_sum", names, values, hist.sum)
            self.sample(f"{name}_count", names, values, hist.count)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


async def exposition(app: web.Application) -> str:
    """The whole metrics page of ``app``."""
    metrics = app[METRICS]
    out = _Writer()
    out.gauge("aiport_info", "aiport's version.", ("version",), {(__version__,): 1})
    out.counter("aiport_requests_total", "HTTP requests by API, provider, model and status.",
                ("api", "provider", "model", "status"), metrics.requests)
    out.histogram("aiport_request_duration_seconds", "HTTP request latency, to the last byte (streams included).",
                  ("api",), {(api,): h for api, h in metrics.latency.items()})
    out.histogram("aiport_time_to_first_token_seconds",
                  "Time to the first token of chat requests (whole backend call when not streamed).",
                  ("provider", "model"), metrics.ttft)
    out.counter("aiport_tokens_total", "Tokens by provider, model and type (prompt, completion).",
                ("provider", "model", "type"), metrics.tokens)
    out.counter("aiport_jobs_finished_total", "Finished requests (jobs and streams) by API, provider and state.",
                ("api", "provider", "state"), metrics.jobs)
    out.counter("aiport_job_retries_total", "Jobs sent back to a queue for another try.",
                ("queue",), {(q,): n for q, n in metrics.retries.items()})
    out.counter("aiport_callback_deliveries_total", "ReplyTo callbacks delivered.", (),
                {(): metrics.callbacks_delivered})
    out.counter("aiport_callback_failures_total", "Failed ReplyTo callback attempts (final: given up).",
                ("final",), {(f,): n for f, n in metrics.callback_failures.items()})
    limiter = app.get(limits.LIMITER)
    if limiter is not None:
        out.counter("aiport_auth_failures_total", "Refused credentials (401).", (), {(): limiter.auth_failures})
        out.counter("aiport_rate_limited_total", "Requests refused with 429, by reason.", ("reason",),
                    {(r,): n for r, n in limiter.refused.items()})
    engine = app.get(state.ENGINE)
    if engine is not None:
        try:
            counts = await engine.store.queue_counts()
        except Exception:  # a scrape must not fail because the store is busy
            counts = {}
        names = set(engine.queues) | set(counts)
        out.gauge("aiport_queue_depth", "Jobs waiting in each queue (provider name, callbacks, local-*).",
                  ("queue",), {(q,): counts.get(q, {}).get(JobState.QUEUED.value, 0) for q in names})
        out.gauge("aiport_jobs_running", "Requests running on this node per queue (streams included).", ("queue",),
                  {(q,): engine.queues[q].slots.running if q in engine.queues else 0 for q in names})
    providers = app.get(state.PROVIDERS)
    if providers is not None:
        out.gauge("aiport_provider_up", "1 while a provider is enabled, online and not cooling down.",
                  ("provider", "type", "kind"),
                  {(p.name, p.type_name, p.kind): 1 if p.available else 0 for p in providers.providers.values()})
    return out.text()


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics`` (protected when ``metrics.require_auth`` or ``metrics.token`` is set)."""
    config = request.app[state.CONFIG].metrics
    if config.require_auth or config.token:
        token = credential(request)
        scraper = bool(token and config.token and hmac.compare_digest(token.encode(), config.token.reveal().encode()))
        if not scraper:
            await authorize(request, _METRICS_META)
    return web.Response(text=await exposition(request.app), headers={"Content-Type": CONTENT_TYPE})


# --------------------------------------------------------------------------- request counting


def _api_label(request: web.Request) -> str:
    name = request.get(API_NAME)
    if name:
        return name
    resource = request.match_info.route.resource if request.match_info.route else None
    return resource.canonical if resource is not None else "unmatched"


def _model_label(request: web.Request) -> str:
    inp = request.get(state.INPUT)
    data = getattr(inp, "data", None)
    if not isinstance(data, dict):
        return ""
    model = data.get("model") or data.get("Model")
    if model is None:
        inner = data.get("request") or data.get("Request")
        model = inner.get("model") if isinstance(inner, dict) else None
    return model[:100] if isinstance(model, str) else ""


def observe_request(request: web.Request, response: web.StreamResponse | None, status: int,
                    seconds: float) -> None:
    """Count and time a request that ended (a ``REQUEST_END`` function)."""
    metrics = request.app.get(METRICS)
    if metrics is not None:
        provider = response.headers.get("X-Aiport-Provider", "") if response is not None else ""
        # The model label only for answered requests: a refused one may name anything.
        model = _model_label(request) if status < 400 else ""
        metrics.observe_request(_api_label(request), provider, model, status, seconds)


# --------------------------------------------------------------------------- job events


def _count_tokens(limiter: limits.Limiter) -> Callable[[JobEvent], None]:
    def listener(event: JobEvent) -> None:
        if event.key_id and not event.retry:
            limiter.add_tokens(event.key_id, (event.usage.prompt_tokens or 0) + (event.usage.completion_tokens or 0))
    return listener


async def observe_jobs(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the engine's): feed the engine's job events to metrics and token limits."""
    engine = app[state.ENGINE]
    listeners: list[Callable[[JobEvent], None]] = []
    metrics = app.get(METRICS)
    if metrics is not None:
        listeners.append(metrics.job_event)
    limiter = app.get(limits.LIMITER)
    if limiter is not None:
        listeners.append(_count_tokens(limiter))
    engine.listeners.extend(listeners)
    try:
        yield
    finally:
        for listener in listeners:
            engine.listeners.remove(listener)


def install(app: web.Application) -> None:
    """Serve ``/metrics`` and count requests (when ``metrics.enabled``)."""
    if not app[state.CONFIG].metrics.enabled:
        return
    app[METRICS] = Metrics()
    app[state.REQUEST_END].append(observe_request)
    add_plain(app, "GET", "/metrics", metrics_handler, "Prometheus metrics (text exposition format)")
