"""Providers added, changed and removed while aiport runs.

:class:`ProviderAdmin` keeps the rows of the ``runtime_providers`` table in memory
and runs each change as one step: check it as a config provider would be checked
(the config converter, the plugin type's options class, the type's factory), stop
the old instance, start the new one in the provider manager, save the row. The
providers from the config and the built-in ones are read-only here.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import attrs
import structlog
from aiohttp import web

from .. import state
from ..config import Config, ProviderConfig, structure
from ..errors import ApiError, BadRequest, ConfigError, Conflict, FieldError, NotFound
from ..jobs.engine import CALLBACK_QUEUE
from .provider_secrets import known_secrets, redact_in_logs
from .provider_store import ProviderRow, ProviderStore
from .providers import ResolvedProvider, resolve_providers
from .routing import ProviderManager

log = structlog.get_logger("aiport.admin")

#: Provider names: shown in headers and used as queue names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:@()+-]{0,99}")
_PROVIDER_FIELDS = frozenset(a.name for a in attrs.fields(ProviderConfig))


class ProviderAdmin:
    """Providers added at run time: stored rows, validated and started in the provider manager."""

    def __init__(self, app: web.Application, store: ProviderStore) -> None:
        self.app = app
        self.store = store
        self.rows: dict[int, ProviderRow] = {}
        #: Why a stored provider is not running (bad options after an upgrade, a taken name...).
        self.problems: dict[str, str] = {}
        # One change at a time: each is check, stop the old instance, start the new one, save.
        self._lock = asyncio.Lock()

    @property
    def config(self) -> Config:
        """The app's config."""
        return self.app[state.CONFIG]

    @property
    def manager(self) -> ProviderManager:
        """The app's provider manager, where run-time providers run next to the others."""
        return self.app[state.PROVIDERS]

    def now(self) -> float:
        """The app clock's time, as a Unix timestamp (the rows' ``created_at`` and ``updated_at``)."""
        clock: Any = self.app[state.CLOCK]
        return float(clock().timestamp())

    async def load(self) -> None:
        """Start every stored provider; one that cannot start is listed with its problem."""
        redact_in_logs(known_secrets(self.app))
        for row in await self.store.all():
            self.rows[row.id] = row
            try:
                if row.name in self.static_names():
                    raise ConfigError([f"the name {row.name!r} is now used by the config; rename one of them"])
                self._start(row, self.resolve(row))
            except (ConfigError, ApiError) as exc:
                problem = "; ".join(exc.problems) if isinstance(exc, ConfigError) else exc.message
                self.problems[row.name] = problem
                log.warning("run-time provider not started", provider=row.name, problem=problem)

    def static_names(self) -> set[str]:
        """Names of providers from the config and the built-in ones (read-only here)."""
        runtime = {r.name for r in self.rows.values()}
        return {p.name for p in self.config.providers} | (set(self.manager.providers) - runtime)

    def resolve(self, row: ProviderRow) -> ResolvedProvider | None:
        """Check a row as the config would be checked; ``None``: valid but not to run (disabled,
        or its key variable is unset). Raises :class:`ConfigError`."""
        clash = sorted(set(row.options) & _PROVIDER_FIELDS)
        if clash:
            raise ConfigError([f"options.{clash[0]}: set it as a field of the provider, not as an option"])
        provider = structure(row.as_config(), ProviderConfig, "")
        resolved = resolve_providers(attrs.evolve(self.config, providers=[provider]), self.app[state.REGISTRY],
                                     os.environ)
        mine = [r for r in resolved if r.config.name == row.name and r.kind == row.kind and not r.implicit]
        return mine[0] if mine else None

    def _start(self, row: ProviderRow, resolved: ResolvedProvider | None) -> None:
        self.problems.pop(row.name, None)
        redact_in_logs(row.secret_values())
        if resolved is not None:
            self.manager.add(resolved, self.app[state.HTTP], self.config, self.app[state.REGISTRY])
            log.info("run-time provider started", provider=row.name, type=row.type)

    def _check_name(self, name: str, row_id: int = 0) -> None:
        if not _NAME.fullmatch(name):
            raise BadRequest("Name must start with a letter or digit and have at most 100 letters, digits, spaces "
                             "and . _ : @ ( ) + -", error_code="InvalidValue",
                             errors=[FieldError("InvalidValue", "Name", "Invalid provider name.")])
        if name in self.static_names():
            raise Conflict(f"Provider {name!r} is defined in the config file; choose another name.")
        if name == CALLBACK_QUEUE or name.startswith("local-"):
            raise Conflict(f"{name!r} is the name of an internal queue; choose another name.")
        if any(r.name == name and r.id != row_id for r in self.rows.values()):
            raise Conflict(f"Provider {name!r} already exists; change it with Update or delete it first.")

    def _validated(self, row: ProviderRow) -> ResolvedProvider | None:
        try:
            return self.resolve(row)
        except ConfigError as exc:
            raise BadRequest("The provider is not valid: " + "; ".join(exc.problems), error_code="InvalidValue",
                             extra={"problems": exc.problems}) from None

    async def create(self, row: ProviderRow) -> ProviderRow:
        """Check, start and store a new provider (``row.id`` 0); returns it with its id."""
        async with self._lock:
            self._check_name(row.name)
            resolved = self._validated(row)
            try:
                self._start(row, resolved)
            except ConfigError as exc:
                raise BadRequest("The provider could not start: " + "; ".join(exc.problems),
                                 error_code="InvalidValue") from None
            try:
                row = await self.store.save(row)
            except BaseException:
                await self.manager.remove(row.name)
                raise
            self.rows[row.id] = row
            log.info("run-time provider added", provider=row.name, kind=row.kind, type=row.type, id=row.id)
            return row

    def find(self, kind: str, row_id: int | None, name: str | None) -> ProviderRow:
        """A run-time provider by id or name; 409 for a read-only one, 404 for an unknown one."""
        if row_id is None and not name:
            raise BadRequest("Send Id or Name.", error_code="NotEmpty")
        for row in self.rows.values():
            if row.kind == kind and (row.id == row_id if row_id is not None else row.name == name):
                return row
        if name and name in self.static_names():
            raise Conflict(f"Provider {name!r} is defined in the config file (or built in) and is read-only here; "
                           "change it in the config file.", error_code="ReadOnly")
        raise NotFound(f"No run-time {'AI' if kind == 'chat' else 'media'} provider with "
                       + (f"Id {row_id}." if row_id is not None else f"Name {name!r}."))

    async def update(self, old: ProviderRow, new: ProviderRow) -> ProviderRow:
        """Replace ``old`` by ``new``; when ``new`` cannot start, ``old`` keeps running."""
        async with self._lock:
            if new.name != old.name:
                self._check_name(new.name, old.id)
            resolved = self._validated(new)
            previous = await self.manager.remove(old.name)
            try:
                self._start(new, resolved)
            except ConfigError as exc:
                restored = self.resolve(old) if previous is not None else None
                if restored is not None:  # put the old one back as it was
                    self.manager.add(restored, self.app[state.HTTP], self.config, self.app[state.REGISTRY])
                raise BadRequest("The provider could not start: " + "; ".join(exc.problems),
                                 error_code="InvalidValue") from None
            new = await self.store.save(attrs.evolve(new, updated_at=self.now()))
            self.rows[new.id] = new
            if new.name != old.name:
                self.problems.pop(old.name, None)
            log.info("run-time provider changed", provider=new.name, id=new.id, enabled=new.enabled)
            return new

    async def delete(self, row: ProviderRow) -> None:
        """Stop a run-time provider and remove its row."""
        async with self._lock:
            await self.manager.remove(row.name)
            await self.store.delete(row.id)
            self.rows.pop(row.id, None)
            self.problems.pop(row.name, None)
            log.info("run-time provider deleted", provider=row.name, id=row.id)
