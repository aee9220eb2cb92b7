"""Provider instances at run time, their health, and choosing one for a request.

Candidates for a model are the providers that are enabled, online and serve it.
The default strategy picks the one with the most free slots, then the higher
``priority``, then the earlier one in the config. A provider that fails with a
retryable error goes into a cooldown and is probed in the background until it
answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import structlog

from ..catalog import ModelCatalog
from ..config import ModelMapping, ProviderConfig
from ..errors import ApiError, BadRequest, ConfigError, NotFound, ProviderError, ServiceUnavailable
from ..jobs.engine import JobEngine
from ..jobs.queues import Slots
from ..registry import ProviderContext
from .providers import ResolvedProvider

log = structlog.get_logger("aiport.routing")

#: First cooldown after a failure; doubles while probes keep failing, up to the maximum.
COOLDOWN_SECONDS = 5.0
MAX_COOLDOWN_SECONDS = 60.0


@attrs.define
class Health:
    online: bool = True
    #: Forced by an admin (``ChangeAiProviderStatus``): probes do not change it.
    forced: bool = False
    last_error: str | None = None
    last_error_at: float | None = None
    cooldown_until: float = 0.0
    failures: int = 0


@attrs.define(eq=False)
class RuntimeProvider:
    """One configured provider, built and running."""

    config: ProviderConfig
    kind: str
    type_name: str
    instance: Any
    slots: Slots
    #: gateway model id -> the provider's model id
    models: dict[str, str]
    order: int
    #: media providers: gateway model id -> the task it performs
    tasks: dict[str, str] = attrs.field(factory=dict)
    #: Started without a config entry (a local fallback): tried after configured providers.
    implicit: bool = False
    health: Health = attrs.field(factory=Health)
    #: Smoothed seconds of recent successful calls (``None`` until the first).
    latency: float | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def available(self) -> bool:
        return self.health.online and time.monotonic() >= self.health.cooldown_until

    def api_model(self, model: str) -> str:
        return self.models.get(model, model)


class ProviderManager:
    """The app's provider instances, by name, with health tracking and background probes."""

    def __init__(self, engine: JobEngine, catalog: ModelCatalog | None = None) -> None:
        self.engine = engine
        self.catalog = catalog or ModelCatalog(())
        self.providers: dict[str, RuntimeProvider] = {}
        self._probes: dict[str, asyncio.Task[None]] = {}
        #: Routing strategy: orders candidates, best first.
        self.strategy: Callable[[list[RuntimeProvider]], list[RuntimeProvider]] = least_busy

    def build(self, resolved: Iterable[ResolvedProvider], http: Any, app_config: Any,
              registry: Any = None) -> None:
        for order, item in enumerate(resolved):
            ctx = ProviderContext(provider=item.config, options=item.options, http=http, config=app_config,
                                  registry=registry)
            try:
                instance = item.type.factory(ctx)
            except (ValueError, TypeError, ApiError) as exc:
                raise ConfigError([f"providers ({item.config.name!r}, type {item.type.name!r}): {exc}"]) from None
            queue = self.engine.add_queue(item.config.name, item.config.concurrency)
            mapping = dict(item.type.api_models)
            models = {}
            tasks: dict[str, str] = {}
            if item.kind == "media":
                type_tasks = dict(getattr(item.type, "model_tasks", {}))
                # A media provider with no models listed serves every model of its type.
                for m in item.config.models or [ModelMapping(model=k) for k in mapping]:
                    models[m.model] = m.api_model or mapping.get(m.model, m.model)
                    if m.model in type_tasks:
                        tasks[m.model] = type_tasks[m.model]
            else:
                for m in item.config.models:
                    model = self.catalog.qualify(m.model, strict=False)
                    models[model] = m.api_model or mapping.get(model) or mapping.get(m.model) or m.model
            self.providers[item.config.name] = RuntimeProvider(
                config=item.config, kind=item.kind, type_name=item.type.name, instance=instance,
                slots=queue.slots, models=models, order=order, tasks=tasks, implicit=item.implicit)

    async def close(self) -> None:
        for task in self._probes.values():
            task.cancel()
        await asyncio.gather(*self._probes.values(), return_exceptions=True)
        for provider in self.providers.values():
            closer = getattr(provider.instance, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()

    def get(self, name: str) -> RuntimeProvider | None:
        return self.providers.get(name)

    def of_kind(self, kind: str) -> list[RuntimeProvider]:
        return [p for p in self.providers.values() if p.kind == kind]

    def models(self, kind: str = "chat") -> list[str]:
        return sorted({m for p in self.of_kind(kind) for m in p.models})

    def media_candidates(self, task: str, model: str | None, *, provider: str | None = None,
                         exclude: Iterable[str] = ()) -> tuple[str, list[RuntimeProvider]]:
        """The model to use for ``task`` (the request's, else the first one served) and the
        providers that serve it, best first. An unknown model is a 400 listing the valid ids."""
        serving = [p for p in self.of_kind("media")
                   if task in p.tasks.values() and (provider is None or p.name == provider)]
        valid = sorted({m for p in serving for m, t in p.tasks.items() if t == task})
        if not serving or not valid:
            raise ServiceUnavailable(f"No media provider can run {task}"
                                     + (f" as {provider!r}" if provider else "") + "; configure one.")
        if model is None:
            preferred = [p for p in serving if not p.implicit] or serving
            model = next(m for p in self.strategy(preferred) for m, t in p.tasks.items() if t == task)
        elif model not in valid:
            raise BadRequest(f"Model {model!r} cannot run {task}; valid models: {', '.join(valid)}.",
                             error_code="InvalidModel")
        chosen = [p for p in serving if p.tasks.get(model) == task]
        return model, self.candidates(model, kind="media", provider=provider, exclude=exclude) if chosen else []

    # ------------------------------------------------------------------ choosing

    def candidates(self, model: str, *, kind: str = "chat", provider: str | None = None,
                   exclude: Iterable[str] = ()) -> list[RuntimeProvider]:
        """Providers that can serve ``model`` now, best first. Raises 404 for an unknown model
        or provider, 503 when every one that serves it is unavailable."""
        excluded = set(exclude)
        serving = [p for p in self.providers.values() if p.kind == kind and model in p.models]
        if provider is not None:
            chosen = self.providers.get(provider)
            if chosen is None or chosen.kind != kind:
                names = ", ".join(sorted(p.name for p in self.of_kind(kind))) or "none"
                raise NotFound(f"Provider {provider!r} does not exist; providers: {names}.")
            if model not in chosen.models:
                raise NotFound(f"Provider {provider!r} does not serve model {model!r}; it serves: "
                               f"{', '.join(sorted(chosen.models)) or 'nothing'}.")
            serving = [chosen]
        if not serving:
            known = self.models(kind)
            close = difflib.get_close_matches(model, known, n=5, cutoff=0.4)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise NotFound(f"Model {model!r} is not served by any provider.{hint}",
                           extra={"closeMatches": close} if close else None)
        online = [p for p in serving if p.health.online and p.name not in excluded]
        if not online:
            down = "; ".join(f"{p.name}: {p.health.last_error or 'offline'}" for p in serving)
            raise ServiceUnavailable(f"No provider serving {model!r} is available right now ({down}).",
                                     headers={"Retry-After": str(int(COOLDOWN_SECONDS))})
        ready = [p for p in online if p.available]
        if len(ready) == len(online) == 1:  # one provider up: nothing to order
            return ready
        # Providers cooling down after a failure come last, soonest-back first: better a
        # provider that may have recovered than no answer at all.
        cooling = sorted((p for p in online if not p.available), key=lambda p: p.health.cooldown_until)
        ordered = [*self.strategy(ready), *cooling]
        # Implicit local instances are a fallback: configured providers come first.
        return [p for p in ordered if not p.implicit] + [p for p in ordered if p.implicit]

    # ------------------------------------------------------------------ health

    def report_failure(self, provider: RuntimeProvider, error: BaseException) -> None:
        """A call failed: a retryable failure starts a cooldown and a background probe."""
        provider.health.last_error = str(error)[:300]
        provider.health.last_error_at = time.time()
        if not (isinstance(error, ProviderError) and error.retryable) or provider.health.forced:
            return
        provider.health.failures += 1
        delay = min(COOLDOWN_SECONDS * 2 ** (provider.health.failures - 1), MAX_COOLDOWN_SECONDS)
        if isinstance(error, ProviderError) and error.retry_after:
            delay = max(delay, min(error.retry_after, MAX_COOLDOWN_SECONDS))
        provider.health.cooldown_until = time.monotonic() + delay
        log.warning("provider cooling down", provider=provider.name, seconds=round(delay, 1),
                    error=provider.health.last_error)
        if provider.name not in self._probes:
            self._probes[provider.name] = asyncio.create_task(self._probe_until_healthy(provider))

    def report_success(self, provider: RuntimeProvider, seconds: float | None = None) -> None:
        if seconds is not None:  # exponentially weighted: recent calls count most
            provider.latency = seconds if provider.latency is None else 0.8 * provider.latency + 0.2 * seconds
        if provider.health.failures and not provider.health.forced:
            provider.health.failures = 0
            provider.health.cooldown_until = 0.0

    async def _probe_until_healthy(self, provider: RuntimeProvider) -> None:
        try:
            while True:
                await asyncio.sleep(max(0.05, provider.health.cooldown_until - time.monotonic()))
                if provider.health.forced:
                    return
                if await self.probe(provider):
                    provider.health.failures = 0
                    provider.health.cooldown_until = 0.0
                    log.info("provider is healthy again", provider=provider.name)
                    return
                provider.health.failures += 1
                delay = min(COOLDOWN_SECONDS * 2 ** (provider.health.failures - 1), MAX_COOLDOWN_SECONDS)
                provider.health.cooldown_until = time.monotonic() + delay
        finally:
            self._probes.pop(provider.name, None)

    async def probe(self, provider: RuntimeProvider) -> bool:
        """Ask the backend whether it is healthy (its heartbeat URL or its own probe)."""
        try:
            await provider.instance.probe()
        except Exception as exc:
            provider.health.last_error = str(exc)[:300]
            provider.health.last_error_at = time.time()
            return False
        return True

    async def check(self, provider: RuntimeProvider) -> bool:
        """Probe ``provider`` now (an admin's check); a healthy answer ends its cooldown."""
        healthy = await self.probe(provider)
        if healthy:
            self.report_success(provider)
        return healthy

    def set_online(self, provider: RuntimeProvider, online: bool) -> None:
        """Force a provider on or offline (admin); probes leave a forced state alone."""
        provider.health.online = online
        provider.health.forced = not online
        provider.health.failures = 0
        provider.health.cooldown_until = 0.0

    def describe(self) -> list[Mapping[str, Any]]:
        now = time.monotonic()
        return [{
            "name": p.name, "type": p.type_name, "kind": p.kind, "online": p.available,
            "concurrency": p.slots.concurrency, "running": p.slots.running, "priority": p.config.priority,
            "models": sorted(p.models), "lastError": p.health.last_error,
            "cooldownSeconds": round(max(0.0, p.health.cooldown_until - now), 1) or None,
        } for p in self.providers.values()]

    def add(self, resolved: ResolvedProvider, http: Any, app_config: Any, registry: Any = None) -> RuntimeProvider:
        """Start one more provider while the app runs (admin APIs); it routes after the others
        of equal standing. Its queue is created, or resized if the name was used before."""
        name = resolved.config.name
        if name in self.providers:
            raise ValueError(f"provider {name!r} is already running")
        order = max((p.order for p in self.providers.values()), default=-1) + 1
        self.build([resolved], http, app_config, registry)
        provider = self.providers[name]
        provider.order = order
        self.engine.resize_queue(name, resolved.config.concurrency)
        return provider

    async def remove(self, name: str) -> RuntimeProvider | None:
        """Stop routing to a provider and close it. Its queued jobs fail over to another
        provider of the model when they run (the executors find it gone)."""
        provider = self.providers.pop(name, None)
        if provider is None:
            return None
        probe = self._probes.pop(name, None)
        if probe is not None:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
        closer = getattr(provider.instance, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
        return provider


def least_busy(candidates: list[RuntimeProvider]) -> list[RuntimeProvider]:
    """Most free slots first, then higher priority, then config order."""
    return sorted(candidates, key=lambda p: (-p.slots.free, -p.config.priority, p.order))


def weighted(candidates: list[RuntimeProvider]) -> list[RuntimeProvider]:
    """A random order drawn by ``weight`` (a provider with weight 3 leads three times as often
    as one with weight 1); providers with no free slot go last."""
    pool = [p for p in candidates if p.slots.free > 0] or list(candidates)
    rest = [p for p in candidates if p not in pool]
    ordered = []
    while pool:
        pick = random.choices(pool, weights=[p.config.weight for p in pool])[0]
        ordered.append(pick)
        pool.remove(pick)
    return ordered + rest


def fastest(candidates: list[RuntimeProvider]) -> list[RuntimeProvider]:
    """Lowest recent latency first (untried providers first, to learn theirs); full ones last."""
    return sorted(candidates, key=lambda p: (p.slots.free <= 0, p.latency if p.latency is not None else -1.0,
                                             -p.config.priority, p.order))
