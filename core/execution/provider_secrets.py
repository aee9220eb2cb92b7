"""Which secret values aiport knows, so that logs and admin responses can hide them.

They come from the config (admin secret, signing key, metrics token), from every
provider's key (YAML, environment and run-time ones) and from provider options
whose names look secret. Keys from the environment and from run-time providers
become known after the logging was configured, hence :func:`redact_in_logs`.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from aiohttp import web

from .. import state
from ..config import ProviderConfig
from ..logging import RedactSecrets
from .provider_store import secret_values

#: Shorter values are not real secrets, and replacing them would mangle ordinary text.
_MIN_SECRET_LENGTH = 8
#: The floor :class:`RedactSecrets` itself applies to the secrets it is given.
_MIN_LOGGED_SECRET_LENGTH = 4


def known_secrets(app: web.Application) -> set[str]:
    """Every secret value aiport knows: config secrets, provider keys (YAML, environment and
    run-time) and secret-looking provider options."""
    found = set(app[state.CONFIG].secrets())
    configs: list[ProviderConfig] = list(app[state.CONFIG].providers)
    manager = app.get(state.PROVIDERS)
    if manager is not None:
        configs += [p.config for p in manager.providers.values()]
    admin = app.get(state.PROVIDER_ADMIN)
    if admin is not None:
        for row in admin.rows.values():
            found.update(row.secret_values())
    for config in configs:
        found.update(secret_values(config.api_key.reveal() if config.api_key else None, config.options))
    return {s for s in found if len(s) >= _MIN_SECRET_LENGTH}


def redact_in_logs(values: Iterable[str]) -> None:
    """Add secrets to the log redaction the config's secrets get (``aiport serve`` configures
    it with the secrets written in the config)."""
    values = {v for v in values if v and len(v) >= _MIN_LOGGED_SECRET_LENGTH}
    for processor in structlog.get_config().get("processors", ()):
        if isinstance(processor, RedactSecrets) and not values <= set(processor.secrets):
            processor.secrets = sorted({*processor.secrets, *values}, key=len, reverse=True)
