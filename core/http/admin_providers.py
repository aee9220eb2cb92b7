"""Admin APIs for providers: add, change and remove chat and media providers while
aiport runs, list them all with their health.

Shapes follow AI Server's ``CreateAiProvider`` and ``CreateMediaProvider``: a provider
type is named by AI Server's ``AiTypeId`` / ``MediaTypeId`` or by an aiport ``Type``.
Providers from the config and the built-in ones are listed read-only. The lifecycle
itself (checking, starting, storing) is :mod:`aiport.core.execution.provider_admin`.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from aiohttp import web

from .. import state
from ..config import ProviderConfig
from ..errors import BadRequest, FieldError, ServiceUnavailable
from ..execution.provider_admin import ProviderAdmin
from ..execution.provider_store import ProviderRow
from ..execution.routing import RuntimeProvider
from .admin_common import TAGS, MessageResult, QueryResponse, explicit_nulls
from .dto import api, response_model
from .dto import field as dfield
from .routes import add_api
from .scrubbing import mask, mask_options, scrubbed_response

#: AI Server's ``AiTypeId`` values (spaces, dashes and case ignored) -> aiport chat provider types.
AI_TYPE_IDS = {"openai": "openai", "ollama": "ollama", "anthropic": "anthropic", "googlecloud": "gemini",
               "google": "gemini", "gemini": "gemini", "groqcloud": "groq", "groq": "groq", "mistral": "mistral",
               "mistralai": "mistral", "openrouter": "openrouter", "openrouterfree": "openrouter",
               "custom": "openai-compatible"}
#: AI Server's ``MediaTypeId`` values -> aiport media provider types.
MEDIA_TYPE_IDS = {"comfyui": "comfyui", "comfy": "comfyui", "replicate": "replicate", "openai": "openai-media"}
#: aiport provider types -> the ``AiTypeId`` / ``MediaTypeId`` shown for them.
_TYPE_ID_SHOWN = {
    "chat": {"openai": "OpenAI", "ollama": "Ollama", "anthropic": "Anthropic", "gemini": "GoogleCloud",
             "groq": "GroqCloud", "mistral": "Mistral", "openrouter": "OpenRouter", "openai-compatible": "Custom"},
    "media": {"comfyui": "ComfyUI", "replicate": "Replicate", "openai-media": "OpenAI"},
}


def _typekey(value: str) -> str:
    return re.sub(r"[^a-z0-9]", "", value.lower())


# --------------------------------------------------------------------------- responses


@response_model()
@attrs.define
class ProviderInfo:
    """A provider: from the config (read-only), built in (read-only) or added at run time."""

    name: str
    kind: str
    type: str
    source: str
    read_only: bool
    enabled: bool
    active: bool
    concurrency: int
    priority: int
    id: int | None = None
    ai_type_id: str | None = None
    media_type_id: str | None = None
    api_base_url: str | None = None
    api_key: str | None = None
    api_key_var: str | None = None
    api_key_header: str | None = None
    heartbeat_url: str | None = None
    weight: int | None = None
    timeout: float | None = None
    models: list[dict[str, Any]] = attrs.field(factory=list)
    options: dict[str, Any] | None = None
    online: bool | None = None
    running: int | None = None
    last_error: str | None = None
    cooldown_seconds: float | None = None
    created_date: dt.datetime | None = None
    updated_date: dt.datetime | None = None


@response_model()
@attrs.define
class IdResponse:
    """``{id, result}``: the id of what was created or changed, and how it looks now."""

    id: str
    result: Any = None


# --------------------------------------------------------------------------- request DTOs


@attrs.define
class _ProviderFields:
    """The fields every provider write takes (AI and media, create and update)."""

    type: str | None = dfield(description="The aiport provider type (instead of AiTypeId / MediaTypeId)")
    api_base_url: str | None = dfield(max_length=2000, aliases=("base_url",))
    api_key_var: str | None = dfield(max_length=200, aliases=("api_key_env",))
    api_key: str | None = dfield(max_length=4000)
    api_key_header: str | None = dfield(max_length=200)
    heartbeat_url: str | None = dfield(max_length=2000)
    concurrency: int | None = dfield(ge=1, le=10_000)
    priority: int | None = dfield()
    weight: int | None = dfield(ge=1)
    enabled: bool | None = dfield()
    timeout: float | None = dfield(gt=0)
    options: dict[str, Any] | None = dfield(description="Options of the provider type")


@attrs.define
class _UpdateFields(_ProviderFields):
    """An update names the provider by ``Id`` or ``Name`` and may clear fields."""

    id: int | None = dfield(ge=1)
    name: str | None = dfield(max_length=100)
    reset: list[str] | None = dfield(description="Fields to clear")


@api(methods=("POST",), auth="admin", response=IdResponse, tags=TAGS)
@attrs.define
class CreateAiProvider(_ProviderFields):
    """Add a chat provider while aiport runs; it is kept in the database and survives restarts."""

    name: str = dfield(required=True, max_length=100)
    ai_type_id: str | None = dfield(description="OpenAI, Ollama, Anthropic, GoogleCloud, GroqCloud, Mistral, "
                                                "OpenRouter, Custom (or an aiport type)")
    models: list[Any] | None = dfield(description="[{model, apiModel?}] or model ids")
    selected_models: list[str] | None = dfield()


@api(methods=("PATCH", "PUT", "POST"), auth="admin", response=IdResponse, tags=TAGS)
@attrs.define
class UpdateAiProvider(_UpdateFields):
    """Change (or enable/disable) a chat provider added at run time, by ``Id`` (or ``Name``)."""

    ai_type_id: str | None = dfield()
    models: list[Any] | None = dfield()
    selected_models: list[str] | None = dfield()


@api(methods=("DELETE", "POST"), auth="admin", response=MessageResult, tags=TAGS)
@attrs.define
class DeleteAiProvider:
    """Remove a chat provider added at run time (by ``Id`` or ``Name``)."""

    id: int | None = dfield(ge=1)
    name: str | None = dfield()


@api(methods=("GET", "POST"), auth="admin", response=QueryResponse, tags=TAGS)
@attrs.define
class QueryAiProviders:
    """Chat providers: config ones (read-only) and run-time ones, with health."""

    id: int | None = dfield(ge=1)
    name: str | None = dfield()


@api(methods=("POST",), auth="admin", response=IdResponse, tags=TAGS)
@attrs.define
class CreateMediaProvider(_ProviderFields):
    """Add a media provider while aiport runs (a ComfyUI agent registers itself with this)."""

    name: str = dfield(required=True, max_length=100)
    media_type_id: str | None = dfield(description="ComfyUI, Replicate, OpenAI (or an aiport type)")
    models: list[Any] | None = dfield(description="Provider-side model names (or gateway ids); none: all")


@api(methods=("PATCH", "PUT", "POST"), auth="admin", response=IdResponse, tags=TAGS)
@attrs.define
class UpdateMediaProvider(_UpdateFields):
    """Change (or enable/disable) a media provider added at run time, by ``Id`` (or ``Name``)."""

    media_type_id: str | None = dfield()
    models: list[Any] | None = dfield()


@api(methods=("DELETE", "POST"), auth="admin", response=MessageResult, tags=TAGS)
@attrs.define
class DeleteMediaProvider:
    """Remove a media provider added at run time (by ``Id`` or ``Name``)."""

    id: int | None = dfield(ge=1)
    name: str | None = dfield()


@api(methods=("GET", "POST"), auth="admin", response=QueryResponse, tags=TAGS)
@attrs.define
class QueryMediaProviders:
    """Media providers: config and built-in ones (read-only) and run-time ones, with health."""

    id: int | None = dfield(ge=1)
    name: str | None = dfield()


@api(methods=("GET", "POST"), auth="admin", response=MessageResult, tags=TAGS)
@attrs.define
class GetProviderHealth:
    """Every running provider: online, running requests, last error and cooldown."""


# --------------------------------------------------------------------------- provider types and models


def _provider_types(app: web.Application, kind: str) -> Any:
    registry = app[state.REGISTRY]
    return registry.chat_providers if kind == "chat" else registry.media_providers


def resolve_type(app: web.Application, kind: str, type_id: str | None, type_name: str | None) -> str:
    """The aiport provider type for AI Server's ``AiTypeId``/``MediaTypeId`` or an aiport ``Type``."""
    types = _provider_types(app, kind)
    label = "AiTypeId" if kind == "chat" else "MediaTypeId"
    wanted = type_name or type_id
    if not wanted:
        raise BadRequest(f"Send {label} or Type.", error_code="NotEmpty",
                         errors=[FieldError("NotEmpty", label, f"'{label}' must not be empty.")])
    table = AI_TYPE_IDS if kind == "chat" else MEDIA_TYPE_IDS
    candidates = [] if type_name else [table.get(_typekey(wanted), "")]
    candidates.append(wanted)
    for candidate in candidates:
        for registered in types.names():
            if candidate and (registered == candidate or _typekey(registered) == _typekey(candidate)):
                return str(registered)
    known = ", ".join(types.names()) or "none"
    field_name = "Type" if type_name else label
    raise BadRequest(f"No {kind} provider type {wanted!r} is available; types: {known}.", error_code="InvalidValue",
                     errors=[FieldError("InvalidValue", field_name, f"Unknown provider type {wanted!r}.")])


def _model_entries(app: web.Application, kind: str, type_name: str, models: Iterable[Any] | None,
                   selected: Iterable[str] | None = None) -> tuple[dict[str, Any], ...]:
    """``Models`` (and ``SelectedModels``) as ``{model, api_model}`` entries.

    A media provider's models are the provider's own names (AI Server's agent sends
    ``sdxl_lightning_4step.safetensors``); they become the gateway ids the type's
    catalog maps to that name.
    """
    out: list[dict[str, Any]] = []
    mapping: Mapping[str, str] = _provider_types(app, kind)[type_name].api_models
    for item in [*(models or ()), *(selected or ())]:
        if isinstance(item, Mapping):
            model = item.get("model") or item.get("Model")
            api_model = item.get("apiModel") or item.get("api_model") or item.get("ApiModel")
            if not isinstance(model, str) or not model.strip():
                raise BadRequest("Each of Models needs a model id.", error_code="InvalidValue")
            out.append({"model": model.strip(), "api_model": api_model if isinstance(api_model, str) else None})
        elif isinstance(item, str) and item.strip():
            name = item.strip()
            gateway = [gid for gid, provider_name in mapping.items() if provider_name == name]
            if kind == "media" and name not in mapping and gateway:
                out += [{"model": gid, "api_model": None} for gid in gateway]
            else:
                out.append({"model": name, "api_model": None})
        else:
            raise BadRequest("Models must be model ids or {model, apiModel} objects.", error_code="InvalidValue")
    seen: set[str] = set()
    unique = []
    for entry in out:
        if entry["model"] not in seen:
            seen.add(entry["model"])
            unique.append(entry)
    return tuple(unique)


# --------------------------------------------------------------------------- listing


def list_providers(admin: ProviderAdmin, kind: str) -> list[ProviderInfo]:
    """The providers of ``kind``: from the config, built in, then added at run time."""
    types = _provider_types(admin.app, kind)
    shown_ids = _TYPE_ID_SHOWN[kind]
    runtime_names = {r.name for r in admin.rows.values()}
    config_names = {p.name for p in admin.config.providers}
    out = [_config_info(admin, config, kind, "config", shown_ids.get(config.type))
           for config in admin.config.providers if config.type in types]
    out += [_config_info(admin, provider.config, kind, "builtin", shown_ids.get(provider.type_name))
            for provider in admin.manager.of_kind(kind)
            if provider.name not in config_names and provider.name not in runtime_names]
    out += [row_info(admin, row) for row in admin.rows.values() if row.kind == kind]
    return out


def _with_health(admin: ProviderAdmin, info: ProviderInfo, running: RuntimeProvider | None) -> ProviderInfo:
    if running is None:
        return attrs.evolve(info, active=False, last_error=admin.problems.get(info.name))
    cooldown = round(max(0.0, running.health.cooldown_until - time.monotonic()), 1)
    return attrs.evolve(info, active=True, online=running.available, running=running.slots.running,
                        last_error=running.health.last_error, cooldown_seconds=cooldown or None)


def _models_shown(entries: Iterable[tuple[str, str | None]]) -> list[dict[str, Any]]:
    return [{"model": model, **({"apiModel": api_model} if api_model else {})} for model, api_model in entries]


def _config_info(admin: ProviderAdmin, config: ProviderConfig, kind: str, source: str,
                 type_id: str | None) -> ProviderInfo:
    running = admin.manager.get(config.name)
    # A running provider shows what it runs with (a built-in one's settings come from its type).
    shown = running.config if running is not None else config
    info = ProviderInfo(
        name=config.name, kind=kind, type=config.type, source=source, read_only=True, enabled=config.enabled,
        active=False, concurrency=shown.concurrency, priority=shown.priority,
        ai_type_id=type_id if kind == "chat" else None, media_type_id=type_id if kind == "media" else None,
        api_base_url=shown.base_url, api_key=mask(shown.api_key.reveal() if shown.api_key else None),
        api_key_var=shown.api_key_env, api_key_header=shown.api_key_header, heartbeat_url=shown.heartbeat_url,
        weight=getattr(shown, "weight", None), timeout=float(shown.timeout),
        models=_models_shown((m.model, m.api_model) for m in shown.models),
        options=mask_options(shown.options) or None)
    return _with_health(admin, info, running)


def row_info(admin: ProviderAdmin, row: ProviderRow) -> ProviderInfo:
    """A run-time provider as the admin sees it, with its health."""
    type_id = row.type_id or _TYPE_ID_SHOWN[row.kind].get(row.type)
    info = ProviderInfo(
        name=row.name, kind=row.kind, type=row.type, source="runtime", read_only=False, enabled=row.enabled,
        active=False, concurrency=row.concurrency, priority=row.priority, id=row.id,
        ai_type_id=type_id if row.kind == "chat" else None, media_type_id=type_id if row.kind == "media" else None,
        api_base_url=row.base_url, api_key=mask(row.api_key), api_key_var=row.api_key_env,
        api_key_header=row.api_key_header, heartbeat_url=row.heartbeat_url, weight=row.weight, timeout=row.timeout,
        models=_models_shown((m["model"], m.get("api_model")) for m in row.models),
        options=mask_options(row.options) or None,
        created_date=dt.datetime.fromtimestamp(row.created_at, dt.UTC),
        updated_date=dt.datetime.fromtimestamp(row.updated_at, dt.UTC))
    return _with_health(admin, info, admin.manager.get(row.name))


# --------------------------------------------------------------------------- handlers


def _admin(request: web.Request) -> ProviderAdmin:
    admin = request.app.get(state.PROVIDER_ADMIN)
    if admin is None:
        raise ServiceUnavailable("Run-time providers are not available.")
    return admin


def _new_row(request: web.Request, kind: str, dto: CreateAiProvider | CreateMediaProvider) -> ProviderRow:
    type_id = dto.ai_type_id if isinstance(dto, CreateAiProvider) else dto.media_type_id
    type_name = resolve_type(request.app, kind, type_id, dto.type)
    selected = dto.selected_models if isinstance(dto, CreateAiProvider) else None
    models = _model_entries(request.app, kind, type_name, dto.models, selected)
    if kind == "chat" and not models:
        raise BadRequest("An AI provider needs at least one model.", error_code="NotEmpty",
                         errors=[FieldError("NotEmpty", "Models", "'Models' must not be empty.")])
    now = _admin(request).now()
    return ProviderRow(
        id=0, kind=kind, name=dto.name.strip(), type=type_name, type_id=type_id, base_url=dto.api_base_url,
        api_key=dto.api_key or None, api_key_env=dto.api_key_var, api_key_header=dto.api_key_header,
        heartbeat_url=dto.heartbeat_url, concurrency=dto.concurrency or 1, priority=dto.priority or 0,
        weight=dto.weight, enabled=dto.enabled is not False, timeout=dto.timeout, models=models,
        options=dict(dto.options or {}), created_at=now, updated_at=now)


def create_provider(kind: str) -> Any:
    """The handler of ``CreateAiProvider`` (``kind`` "chat") or ``CreateMediaProvider`` ("media")."""
    async def handle(request: web.Request, dto: CreateAiProvider | CreateMediaProvider) -> web.Response:
        admin = _admin(request)
        row = await admin.create(_new_row(request, kind, dto))
        return scrubbed_response(request, IdResponse(id=str(row.id), result=row_info(admin, row)))
    return handle


#: Normalised wire names of the fields an update may clear -> the row's fields.
_ROW_RESETS = {"apibaseurl": "base_url", "baseurl": "base_url", "apikey": "api_key", "apikeyvar": "api_key_env",
               "apikeyenv": "api_key_env", "apikeyheader": "api_key_header", "heartbeaturl": "heartbeat_url",
               "weight": "weight", "timeout": "timeout", "options": "options", "models": "models"}


def update_provider(kind: str) -> Any:
    """The handler of ``UpdateAiProvider`` (``kind`` "chat") or ``UpdateMediaProvider`` ("media")."""
    async def handle(request: web.Request, dto: UpdateAiProvider | UpdateMediaProvider) -> web.Response:
        admin = _admin(request)
        old = admin.find(kind, dto.id, dto.name)
        changes: dict[str, Any] = {}
        for wire in explicit_nulls(request, dto.reset):
            if wire in _ROW_RESETS:
                target = _ROW_RESETS[wire]
                changes[target] = {} if target == "options" else () if target == "models" else None
        type_id = dto.ai_type_id if isinstance(dto, UpdateAiProvider) else dto.media_type_id
        if type_id or dto.type:
            changes["type"] = resolve_type(request.app, kind, type_id, dto.type)
            changes["type_id"] = type_id
        simple = {"base_url": dto.api_base_url, "api_key": dto.api_key, "api_key_env": dto.api_key_var,
                  "api_key_header": dto.api_key_header, "heartbeat_url": dto.heartbeat_url,
                  "concurrency": dto.concurrency, "priority": dto.priority, "weight": dto.weight,
                  "enabled": dto.enabled, "timeout": dto.timeout}
        changes.update({k: v for k, v in simple.items() if v is not None})
        if dto.id is not None and dto.name and dto.name.strip() != old.name:
            changes["name"] = dto.name.strip()
        if dto.options is not None:
            changes["options"] = dict(dto.options)
        selected = dto.selected_models if isinstance(dto, UpdateAiProvider) else None
        if dto.models is not None or selected is not None:
            changes["models"] = _model_entries(request.app, kind, changes.get("type", old.type), dto.models, selected)
        new = attrs.evolve(old, **changes)
        if kind == "chat" and not new.models:
            raise BadRequest("An AI provider needs at least one model.", error_code="NotEmpty")
        row = await admin.update(old, new)
        return scrubbed_response(request, IdResponse(id=str(row.id), result=row_info(admin, row)))
    return handle


def delete_provider(kind: str) -> Any:
    """The handler of ``DeleteAiProvider`` (``kind`` "chat") or ``DeleteMediaProvider`` ("media")."""
    async def handle(request: web.Request, dto: DeleteAiProvider | DeleteMediaProvider) -> web.Response:
        admin = _admin(request)
        row = admin.find(kind, dto.id, dto.name)
        await admin.delete(row)
        return scrubbed_response(request, MessageResult(result=f"Provider {row.name!r} deleted"))
    return handle


def query_providers(kind: str) -> Any:
    """The handler of ``QueryAiProviders`` (``kind`` "chat") or ``QueryMediaProviders`` ("media")."""
    async def handle(request: web.Request, dto: QueryAiProviders | QueryMediaProviders) -> web.Response:
        results = list_providers(_admin(request), kind)
        if dto.id is not None:
            results = [r for r in results if r.id == dto.id]
        if dto.name:
            results = [r for r in results if r.name == dto.name]
        return scrubbed_response(request, QueryResponse(offset=0, total=len(results), results=results))
    return handle


async def provider_health(request: web.Request, dto: GetProviderHealth) -> web.Response:
    """``GetProviderHealth``: what the provider manager knows of every running provider."""
    return scrubbed_response(request, MessageResult(result=list(request.app[state.PROVIDERS].describe())))


def install(app: web.Application) -> None:
    """Serve the provider admin APIs."""
    for kind, create, update, delete, query in (
            ("chat", CreateAiProvider, UpdateAiProvider, DeleteAiProvider, QueryAiProviders),
            ("media", CreateMediaProvider, UpdateMediaProvider, DeleteMediaProvider, QueryMediaProviders)):
        add_api(app, create, create_provider(kind))
        add_api(app, update, update_provider(kind))
        add_api(app, delete, delete_provider(kind))
        add_api(app, query, query_providers(kind))
    add_api(app, GetProviderHealth, provider_health)
