"""Matching the ``providers:`` of the config with the provider types plugins registered."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import structlog

from ..config import Config, ProviderConfig, Secret, structure
from ..errors import ConfigError
from ..registry import ChatProviderType, MediaProviderType, Registry

log = structlog.get_logger("aiport.providers")


@attrs.frozen
class ResolvedProvider:
    """A configured provider whose type is known and whose options are valid."""

    config: ProviderConfig
    kind: Literal["chat", "media"]
    type: ChatProviderType | MediaProviderType
    options: Any
    #: Started because its type runs one when none is configured.
    implicit: bool = False


def resolve_providers(config: Config, registry: Registry,
                      environ: Mapping[str, str] | None = None) -> list[ResolvedProvider]:
    """Check every provider against the registered types; skip disabled or key-less ones.

    A provider with ``api_key_env`` naming an unset variable is skipped with one
    log line (as AI Server does with its seeds). Problems raise one
    :class:`ConfigError` listing them all.
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    resolved: list[ResolvedProvider] = []
    known = sorted({*registry.chat_providers.names(), *registry.media_providers.names()})
    for index, provider in enumerate(config.providers):
        path = f"providers[{index}]"
        ptype: ChatProviderType | MediaProviderType
        kind: Literal["chat", "media"]
        if provider.type in registry.chat_providers:
            ptype, kind = registry.chat_providers[provider.type], "chat"
        elif provider.type in registry.media_providers:
            ptype, kind = registry.media_providers[provider.type], "media"
        else:
            problems.append(
                f"{path}.type: no plugin provides the provider type {provider.type!r}; "
                f"known types: {', '.join(known) or 'none (are the provider plugins disabled?)'}"
            )
            continue
        options: Any = dict(provider.options)
        if ptype.options is not None:
            try:
                options = structure(provider.options, ptype.options, path)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
        elif provider.options:
            key = sorted(provider.options)[0]
            problems.append(f"{path}.{key}: unknown key; the {provider.type!r} provider type takes no extra keys")
            continue
        if not provider.enabled:
            log.info("provider disabled in config", provider=provider.name)
            continue
        if provider.api_key_env and not provider.api_key:
            value = environ.get(provider.api_key_env)
            if not value:
                log.info("provider skipped: its API key variable is not set",
                         provider=provider.name, variable=provider.api_key_env)
                continue
            provider = attrs.evolve(provider, api_key=Secret(value))
        if provider.base_url is None and ptype.default_base_url:
            provider = attrs.evolve(provider, base_url=ptype.default_base_url)
        resolved.append(ResolvedProvider(config=provider, kind=kind, type=ptype, options=options))
    if problems:
        raise ConfigError(problems)
    configured_types = {p.type for p in config.providers}
    for mtype in registry.media_providers:
        if mtype.implicit_instance and mtype.name not in configured_types:
            options = mtype.options() if mtype.options is not None else {}
            implicit = ProviderConfig(name=mtype.name, type=mtype.name, base_url=mtype.default_base_url)
            resolved.append(ResolvedProvider(config=implicit, kind="media", type=mtype, options=options,
                                             implicit=True))
    return resolved
