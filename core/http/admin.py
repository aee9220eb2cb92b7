"""Admin APIs: API keys, providers at run time, analytics, workers and the job browser.

All of them need the admin secret or an API key with the ``Admin`` scope
(``auth="admin"``). Shapes follow AI Server where the spec gives them
(``CreateApiKey``, ``CreateAiProvider``, ``CreateMediaProvider``,
``GetSummaryStats``, ``GetWorkerStats``, ``AdminData``).

Providers added here are kept in the ``runtime_providers`` table of the app's
database and started on top of the YAML ones at every start-up. They go through
the same checks as config providers (the config converter, the plugin type's
options class, the type's factory); YAML-defined providers are listed read-only.

No response here ever carries a provider's secret: keys are shown masked
(``sk-****ab``), options that look like secrets too, and every admin response is
scrubbed of every known secret value before it is sent (an upstream error message
echoing a key, say).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import aiosqlite
import attrs
import structlog
from aiohttp import web

from .. import state
from ..config import Config, ProviderConfig, Secret, structure
from ..errors import ApiError, BadRequest, ConfigError, Conflict, FieldError, NotFound, ServiceUnavailable
from ..execution.providers import ResolvedProvider, resolve_providers
from ..execution.routing import ProviderManager, RuntimeProvider
from ..jobs.engine import CALLBACK_API, CALLBACK_QUEUE, JobEngine
from ..jobs.model import Job, JobState
from ..jobs.store import JobQuery
from ..jsoncodec import dumps
from ..logging import RedactSecrets
from .dto import api, norm, response_model, to_wire
from .dto import field as dfield
from .keys import ApiKey, KeyService, is_integrity_error, open_database
from .routes import add_api

log = structlog.get_logger("aiport.admin")

TAGS = ("admin",)

#: AI Server's ``AiTypeId`` values (spaces, dashes and case ignored) -> aiport chat provider types.
AI_TYPE_IDS = {"openai": "openai", "ollama": "ollama", "anthropic": "anthropic", "googlecloud": "gemini",
               "google": "gemini", "gemini": "gemini", "groqcloud": "groq", "groq": "groq", "mistral": "mistral",
               "mistralai": "mistral", "openrouter": "openrouter", "openrouterfree": "openrouter",
               "custom": "openai-compatible"}
#: AI Server's ``MediaTypeId`` values -> aiport media provider types.
MEDIA_TYPE_IDS = {"comfyui": "comfyui", "comfy": "comfyui", "replicate": "replicate", "openai": "openai-media"}
_AI_DISPLAY = {"openai": "OpenAI", "ollama": "Ollama", "anthropic": "Anthropic", "gemini": "GoogleCloud",
               "groq": "GroqCloud", "mistral": "Mistral", "openrouter": "OpenRouter", "openai-compatible": "Custom"}
_MEDIA_DISPLAY = {"comfyui": "ComfyUI", "replicate": "Replicate", "openai-media": "OpenAI"}
#: Option names whose values are treated as secrets (masked, scrubbed).
_SECRETISH = re.compile(r"(?i)key|secret|token|password|passwd|auth|credential")
#: Provider names: shown in headers and used as queue names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:@()+-]{0,99}")
_PROVIDER_FIELDS = frozenset(a.name for a in attrs.fields(ProviderConfig))


def _typekey(value: str) -> str:
    return re.sub(r"[^a-z0-9]", "", value.lower())


def mask(value: str | None) -> str | None:
    """How a secret is shown: enough to tell which one it is, never enough to use it."""
    return None if not value else Secret(value).masked()


def _mask_options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (mask(str(v)) if _SECRETISH.search(k) and v else v) for k, v in options.items()}


# --------------------------------------------------------------------------- responses


@response_model()
@attrs.define
class ApiKeyInfo:
    """An API key as the admin sees it; ``key`` (the secret) only in the answer to ``CreateApiKey``."""

    id: int
    name: str
    visible_key: str
    created_date: dt.datetime
    active: bool
    scopes: list[str] = attrs.field(factory=list)
    restrict_to: list[str] = attrs.field(factory=list)
    key: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    ref_id: str | None = None
    notes: str | None = None
    expiry_date: dt.datetime | None = None
    cancelled_date: dt.datetime | None = None
    requests_per_minute: int | None = None
    concurrent_requests: int | None = None
    tokens_per_minute: int | None = None


@response_model()
@attrs.define
class QueryResponse:
    """AutoQuery's shape: the page of ``results``, its ``offset`` and the ``total`` matching."""

    offset: int
    total: int
    results: list[Any]


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


@response_model()
@attrs.define
class MessageResult:
    """``{result}``: a message or a value."""

    result: Any


# --------------------------------------------------------------------------- request DTOs: keys


@api(methods=("POST",), auth="admin", response=ApiKeyInfo, tags=TAGS)
@attrs.define
class CreateApiKey:
    """Create an API key; the answer carries its secret (``key``), which is never shown again."""

    name: str = dfield(required=True, max_length=200)
    key: str | None = dfield(max_length=200, description="A chosen secret (e.g. imported from AI Server)")
    scopes: list[str] | None = dfield(max_length=20, description="'Admin' gives full access")
    restrict_to: list[str] | None = dfield(max_length=500, description="API names the key may call (empty: any)")
    notes: str | None = dfield(max_length=2000)
    user_id: str | None = dfield(max_length=200)
    user_name: str | None = dfield(max_length=200)
    ref_id: str | None = dfield(max_length=200)
    expiry_date: dt.datetime | None = dfield()
    expires_in_days: float | None = dfield(gt=0, description="Instead of ExpiryDate")
    requests_per_minute: int | None = dfield(ge=0, description="0 or unset: no limit")
    concurrent_requests: int | None = dfield(ge=0)
    tokens_per_minute: int | None = dfield(ge=0, description="Chat tokens (prompt + completion) per minute")


@api(methods=("GET", "POST"), auth="admin", response=QueryResponse, tags=TAGS)
@attrs.define
class QueryApiKeys:
    """List API keys, newest first (never their secrets or hashes)."""

    id: int | None = dfield(ge=1)
    name: str | None = dfield()
    include_revoked: bool | None = dfield()
    skip: int | None = dfield(ge=0)
    take: int | None = dfield(ge=1, le=1000)


@api(methods=("PATCH", "PUT", "POST"), auth="admin", response=ApiKeyInfo, tags=TAGS)
@attrs.define
class UpdateApiKey:
    """Change a key's name, scopes, RestrictTo, notes, expiry or limits. Send a field as null,
    or name it in ``Reset``, to clear it."""

    id: int = dfield(required=True, ge=1)
    name: str | None = dfield(max_length=200)
    scopes: list[str] | None = dfield(max_length=20)
    restrict_to: list[str] | None = dfield(max_length=500)
    notes: str | None = dfield(max_length=2000)
    user_id: str | None = dfield(max_length=200)
    user_name: str | None = dfield(max_length=200)
    ref_id: str | None = dfield(max_length=200)
    expiry_date: dt.datetime | None = dfield()
    requests_per_minute: int | None = dfield(ge=0)
    concurrent_requests: int | None = dfield(ge=0)
    tokens_per_minute: int | None = dfield(ge=0)
    reset: list[str] | None = dfield(description="Fields to clear")


@api(methods=("POST", "DELETE"), auth="admin", response=ApiKeyInfo, tags=TAGS)
@attrs.define
class RevokeApiKey:
    """Revoke a key at once (it stays listed, with its ``cancelledDate``)."""

    id: int = dfield(required=True, ge=1)


@api(methods=("DELETE", "POST"), auth="admin", response=MessageResult, tags=TAGS)
@attrs.define
class DeleteApiKey:
    """Delete a key for good (its id is never reused)."""

    id: int = dfield(required=True, ge=1)


# --------------------------------------------------------------------------- request DTOs: providers


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


# --------------------------------------------------------------------------- request DTOs: stats and jobs


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


@response_model()
@attrs.define
class JobInfo:
    """A job as the job browser shows it."""

    id: int
    ref_id: str
    api: str
    queue: str
    state: str
    status: str
    key_id: int
    attempts: int
    max_attempts: int
    created_date: dt.datetime
    provider: str | None = None
    progress: float | None = None
    tag: str | None = None
    parent_id: int | None = None
    started_date: dt.datetime | None = None
    completed_date: dt.datetime | None = None
    duration: dt.timedelta | None = None
    error: dict[str, Any] | None = None
    reply_to: str | None = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    outputs: list[str] | None = None


@response_model()
@attrs.define
class QueryJobsResponse:
    """A page of jobs; ``hasMore`` when another page follows."""

    offset: int
    has_more: bool
    results: list[JobInfo]


@api(methods=("GET", "POST"), auth="admin", response=QueryJobsResponse, tags=TAGS)
@attrs.define
class QueryJobs:
    """Browse jobs (active ones and those finished in the last minutes), newest first."""

    states: list[str] | None = dfield(aliases=("state",), description="Queued, Started, Completed, Failed...")
    provider: str | None = dfield(aliases=("queue",))
    tag: str | None = dfield()
    key_id: int | None = dfield(ge=0)
    api: str | None = dfield()
    job_id: int | None = dfield(ge=1)
    ref_id: str | None = dfield()
    skip: int | None = dfield(ge=0)
    take: int | None = dfield(ge=1, le=1000)
    include_details: bool | None = dfield(description="Include request, response, outputs and ReplyTo")


@api(methods=("POST", "DELETE"), auth="admin", response=JobInfo, tags=TAGS)
@attrs.define
class AdminCancelJob:
    """Cancel any key's queued or running job."""

    job_id: int | None = dfield(ge=1)
    ref_id: str | None = dfield()


@api(methods=("POST",), auth="admin", response=JobInfo, tags=TAGS)
@attrs.define
class RequeueJob:
    """Run a failed or cancelled job again, from its first attempt."""

    job_id: int | None = dfield(ge=1)
    ref_id: str | None = dfield()


# --------------------------------------------------------------------------- responding without secrets


def known_secrets(app: web.Application) -> set[str]:
    """Every secret value aiport knows: config secrets, provider keys (YAML, environment and
    run-time) and secret-looking provider options."""
    found = set(app[state.CONFIG].secrets())
    configs: list[ProviderConfig] = list(app[state.CONFIG].providers)
    manager = app.get(state.PROVIDERS)
    if manager is not None:
        configs += [p.config for p in manager.providers.values()]
    admin = app.get(PROVIDER_ADMIN)
    if admin is not None:
        for row in admin.rows.values():
            if row.api_key:
                found.add(row.api_key)
            found.update(str(v) for k, v in row.options.items() if _SECRETISH.search(k) and v)
    for config in configs:
        if config.api_key:
            found.add(config.api_key.reveal())
        found.update(str(v) for k, v in config.options.items() if _SECRETISH.search(k) and v)
    # Too short to be a real secret, and replacing it would mangle ordinary text.
    return {s for s in found if len(s) >= 8}


def respond(request: web.Request, result: Any, status: int = 200) -> web.Response:
    """A JSON response with every known secret value masked, whatever carried it."""
    text = dumps(to_wire(result))
    for secret in known_secrets(request.app):
        masked = Secret(secret).masked()
        for form in {secret, json.dumps(secret)[1:-1]}:
            if form in text:
                text = text.replace(form, masked)
    return web.Response(text=text, status=status, content_type="application/json")


def _explicit_nulls(request: web.Request, reset: Iterable[str] | None) -> set[str]:
    """Normalised names of the fields a PATCH clears: sent as null, or listed in ``Reset``."""
    names = {norm(r) for r in reset or ()}
    data = getattr(request.get(state.INPUT), "data", None) or {}
    names.update(norm(str(k)) for k, v in data.items() if v is None)
    return names


# --------------------------------------------------------------------------- keys


def _keys(request: web.Request) -> KeyService:
    service = request.app[state.SERVICES].get("api_keys")
    if not isinstance(service, KeyService):
        raise ServiceUnavailable("The API key service is not running.")
    return service


def key_info(key: ApiKey, now: dt.datetime, secret: str | None = None) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=key.id, name=key.name, visible_key=key.visible_key, created_date=key.created_at, active=key.active(now),
        scopes=list(key.scopes), restrict_to=list(key.restrict_to), key=secret, user_id=key.user_id,
        user_name=key.user_name, ref_id=key.ref_id, notes=key.notes, expiry_date=key.expires_at,
        cancelled_date=key.revoked_at, requests_per_minute=key.rpm, concurrent_requests=key.concurrency,
        tokens_per_minute=key.tpm)


def _check_restrict_to(request: web.Request, names: list[str] | None) -> list[str]:
    names = [n.strip() for n in names or () if n.strip()]
    catalog = request.app[state.CATALOG]
    unknown = [n for n in names if catalog.by_name(n) is None]
    if unknown:
        raise BadRequest(f"RestrictTo names unknown APIs: {', '.join(unknown)}.", error_code="InvalidValue",
                         errors=[FieldError("InvalidValue", "RestrictTo", f"Unknown API {unknown[0]!r}.")])
    return names


def _check_scopes(scopes: list[str] | None) -> list[str]:
    cleaned = [s.strip() for s in scopes or () if s.strip()]
    if any(len(s) > 50 for s in cleaned):
        raise BadRequest("A scope is at most 50 characters.", error_code="InvalidValue")
    return cleaned


def _check_secret(key: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_\-.~]{20,200}", key):
        raise BadRequest("Key must be 20 to 200 characters of letters, digits and - _ . ~", error_code="InvalidValue",
                         errors=[FieldError("InvalidValue", "Key", "Key is too short or has other characters.")])
    return key


async def create_api_key(request: web.Request, dto: CreateApiKey) -> web.Response:
    service = _keys(request)
    now = service.clock()
    expires = dto.expiry_date
    if expires is None and dto.expires_in_days:
        expires = now + dt.timedelta(days=dto.expires_in_days)
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=dt.UTC)
    secret = _check_secret(dto.key) if dto.key else None
    admin_secret = request.app[state.CONFIG].auth.admin_secret
    if secret and admin_secret and secret == admin_secret.reveal():
        raise BadRequest("Key must not be the admin secret.", error_code="InvalidValue")
    try:
        key, secret = await service.create(
            dto.name.strip(), secret=secret, scopes=_check_scopes(dto.scopes),
            restrict_to=_check_restrict_to(request, dto.restrict_to), notes=dto.notes, user_id=dto.user_id,
            user_name=dto.user_name, ref_id=dto.ref_id, expires_at=expires, rpm=dto.requests_per_minute,
            concurrency=dto.concurrent_requests, tpm=dto.tokens_per_minute)
    except Exception as exc:
        if is_integrity_error(exc):
            raise Conflict("That key already exists; choose another Key or leave it out.") from None
        raise
    return respond(request, key_info(key, now, secret))


async def query_api_keys(request: web.Request, dto: QueryApiKeys) -> web.Response:
    service = _keys(request)
    skip, take = dto.skip or 0, dto.take or 100
    keys, total = await service.store.list(key_id=dto.id, name=dto.name, include_revoked=dto.include_revoked
                                           is not False, limit=take, offset=skip)
    now = service.clock()
    return respond(request, QueryResponse(offset=skip, total=total, results=[key_info(k, now) for k in keys]))


_KEY_FIELDS = {"name": "name", "scopes": "scopes", "restrictto": "restrict_to", "notes": "notes",
               "userid": "user_id", "username": "user_name", "refid": "ref_id", "expirydate": "expires_at",
               "requestsperminute": "rpm", "concurrentrequests": "concurrency", "tokensperminute": "tpm"}


async def update_api_key(request: web.Request, dto: UpdateApiKey) -> web.Response:
    service = _keys(request)
    if await service.store.get(dto.id) is None:
        raise NotFound(f"No API key with Id {dto.id}.")
    changes: dict[str, Any] = {}
    for wire, field_name in _KEY_FIELDS.items():
        if wire in _explicit_nulls(request, dto.reset):
            if field_name == "name":
                raise BadRequest("Name cannot be cleared.", error_code="NotEmpty")
            changes[field_name] = None
    values = {"name": dto.name, "scopes": dto.scopes, "restrict_to": dto.restrict_to, "notes": dto.notes,
              "user_id": dto.user_id, "user_name": dto.user_name, "ref_id": dto.ref_id, "expires_at": dto.expiry_date,
              "rpm": dto.requests_per_minute, "concurrency": dto.concurrent_requests, "tpm": dto.tokens_per_minute}
    for field_name, value in values.items():
        if value is not None:
            changes[field_name] = value
    if "scopes" in changes:
        changes["scopes"] = _check_scopes(changes["scopes"])
    if "restrict_to" in changes:
        changes["restrict_to"] = _check_restrict_to(request, changes["restrict_to"])
    if isinstance(changes.get("expires_at"), dt.datetime) and changes["expires_at"].tzinfo is None:
        changes["expires_at"] = changes["expires_at"].replace(tzinfo=dt.UTC)
    key = await service.update(dto.id, **changes)
    assert key is not None
    return respond(request, key_info(key, service.clock()))


async def revoke_api_key(request: web.Request, dto: RevokeApiKey) -> web.Response:
    service = _keys(request)
    key = await service.revoke(dto.id)
    if key is None:
        raise NotFound(f"No API key with Id {dto.id}.")
    return respond(request, key_info(key, service.clock()))


async def delete_api_key(request: web.Request, dto: DeleteApiKey) -> web.Response:
    if not await _keys(request).delete(dto.id):
        raise NotFound(f"No API key with Id {dto.id}.")
    return respond(request, MessageResult(result=f"API key {dto.id} deleted"))


# --------------------------------------------------------------------------- run-time providers


_PROVIDERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS runtime_providers (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, name TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    type_id TEXT, base_url TEXT, api_key TEXT, api_key_env TEXT, api_key_header TEXT, heartbeat_url TEXT,
    concurrency INTEGER NOT NULL DEFAULT 1, priority INTEGER NOT NULL DEFAULT 0, weight INTEGER,
    enabled INTEGER NOT NULL DEFAULT 1, timeout REAL, models TEXT NOT NULL DEFAULT '[]',
    options TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, updated_at REAL NOT NULL
);
"""
_ROW_COLUMNS = ("id", "kind", "name", "type", "type_id", "base_url", "api_key", "api_key_env", "api_key_header",
                "heartbeat_url", "concurrency", "priority", "weight", "enabled", "timeout", "models", "options",
                "created_at", "updated_at")


@attrs.frozen
class ProviderRow:
    """A provider added at run time, as stored. ``api_key`` is kept as given: aiport must send it."""

    id: int
    kind: str
    name: str
    type: str
    type_id: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    api_key_header: str | None = None
    heartbeat_url: str | None = None
    concurrency: int = 1
    priority: int = 0
    weight: int | None = None
    enabled: bool = True
    timeout: float | None = None
    #: ``[{"model": gateway id, "api_model": provider's id or None}]``
    models: tuple[Mapping[str, Any], ...] = ()
    options: Mapping[str, Any] = attrs.field(factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0

    def as_config(self) -> dict[str, Any]:
        """The provider as a YAML ``providers:`` entry would say it."""
        data: dict[str, Any] = {
            "name": self.name, "type": self.type, "enabled": self.enabled, "base_url": self.base_url,
            "api_key": self.api_key, "api_key_env": self.api_key_env, "api_key_header": self.api_key_header,
            "heartbeat_url": self.heartbeat_url, "concurrency": self.concurrency, "priority": self.priority,
            "weight": self.weight, "timeout": self.timeout,
            "models": [{"model": m["model"], "api_model": m["api_model"]} if m.get("api_model") else m["model"]
                       for m in self.models],
        }
        data = {k: v for k, v in data.items() if v is not None}
        data.update(self.options)
        return data


def _row(values: Any) -> ProviderRow:
    r = dict(zip(_ROW_COLUMNS, values, strict=True))
    r["enabled"] = bool(r["enabled"])
    r["models"] = tuple(json.loads(r["models"] or "[]"))
    r["options"] = json.loads(r["options"] or "{}")
    return ProviderRow(**r)


class ProviderStore:
    """The ``runtime_providers`` table."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def all(self) -> list[ProviderRow]:
        rows = await self.db.execute_fetchall(f"SELECT {', '.join(_ROW_COLUMNS)} FROM runtime_providers ORDER BY id")
        return [_row(r) for r in rows]

    async def save(self, row: ProviderRow) -> ProviderRow:
        """Insert (``id`` 0) or replace a row; returns it with its id."""
        values = attrs.asdict(row)
        values["models"] = json.dumps([dict(m) for m in row.models])
        values["options"] = json.dumps(dict(row.options))
        values["enabled"] = int(row.enabled)
        columns = [c for c in _ROW_COLUMNS if c != "id" or row.id]
        cursor = await self.db.execute(
            f"INSERT OR REPLACE INTO runtime_providers ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [values[c] for c in columns])
        new_id = row.id or int(cursor.lastrowid or 0)
        await cursor.close()
        return attrs.evolve(row, id=new_id)

    async def delete(self, row_id: int) -> None:
        await self.db.execute("DELETE FROM runtime_providers WHERE id = ?", (row_id,))


def _kind_registry(app: web.Application, kind: str) -> Any:
    registry = app[state.REGISTRY]
    return registry.chat_providers if kind == "chat" else registry.media_providers


def resolve_type(app: web.Application, kind: str, type_id: str | None, type_name: str | None) -> str:
    """The aiport provider type for AI Server's ``AiTypeId``/``MediaTypeId`` or an aiport ``Type``."""
    types = _kind_registry(app, kind)
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
    mapping: Mapping[str, str] = _kind_registry(app, kind)[type_name].api_models
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
        return self.app[state.CONFIG]

    @property
    def manager(self) -> ProviderManager:
        return self.app[state.PROVIDERS]

    def now(self) -> float:
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
        redact_in_logs([row.api_key or "", *(str(v) for k, v in row.options.items() if _SECRETISH.search(k) and v)])
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
        async with self._lock:
            await self.manager.remove(row.name)
            await self.store.delete(row.id)
            self.rows.pop(row.id, None)
            self.problems.pop(row.name, None)
            log.info("run-time provider deleted", provider=row.name, id=row.id)

    # ------------------------------------------------------------------ listing

    def list(self, kind: str) -> list[ProviderInfo]:
        types = _kind_registry(self.app, kind)
        display = _AI_DISPLAY if kind == "chat" else _MEDIA_DISPLAY
        runtime_names = {r.name for r in self.rows.values()}
        out: list[ProviderInfo] = []
        for config in self.config.providers:
            if config.type in types:
                out.append(self._info(config, kind, "config", display.get(config.type)))
        config_names = {p.name for p in self.config.providers}
        for provider in self.manager.of_kind(kind):
            if provider.name not in config_names and provider.name not in runtime_names:
                out.append(self._info(provider.config, kind, "builtin", display.get(provider.type_name)))
        for row in self.rows.values():
            if row.kind == kind:
                out.append(self._row_info(row, display))
        return out

    def _health(self, info: ProviderInfo, running: RuntimeProvider | None) -> ProviderInfo:
        if running is None:
            return attrs.evolve(info, active=False, last_error=self.problems.get(info.name))
        now = time.monotonic()
        cooldown = round(max(0.0, running.health.cooldown_until - now), 1)
        return attrs.evolve(info, active=True, online=running.available, running=running.slots.running,
                            last_error=running.health.last_error, cooldown_seconds=cooldown or None)

    def _info(self, config: ProviderConfig, kind: str, source: str, type_id: str | None) -> ProviderInfo:
        running = self.manager.get(config.name)
        shown = running.config if running is not None else config
        info = ProviderInfo(
            name=config.name, kind=kind, type=config.type, source=source, read_only=True, enabled=config.enabled,
            active=False, concurrency=shown.concurrency, priority=shown.priority,
            ai_type_id=type_id if kind == "chat" else None, media_type_id=type_id if kind == "media" else None,
            api_base_url=shown.base_url, api_key=mask(shown.api_key.reveal() if shown.api_key else None),
            api_key_var=shown.api_key_env, api_key_header=shown.api_key_header, heartbeat_url=shown.heartbeat_url,
            weight=getattr(shown, "weight", None), timeout=float(shown.timeout),
            models=[{"model": m.model, **({"apiModel": m.api_model} if m.api_model else {})} for m in shown.models],
            options=_mask_options(shown.options) or None)
        return self._health(info, running)

    def _row_info(self, row: ProviderRow, display: Mapping[str, str]) -> ProviderInfo:
        type_id = row.type_id or display.get(row.type)
        info = ProviderInfo(
            name=row.name, kind=row.kind, type=row.type, source="runtime", read_only=False, enabled=row.enabled,
            active=False, concurrency=row.concurrency, priority=row.priority, id=row.id,
            ai_type_id=type_id if row.kind == "chat" else None, media_type_id=type_id if row.kind == "media" else None,
            api_base_url=row.base_url, api_key=mask(row.api_key), api_key_var=row.api_key_env,
            api_key_header=row.api_key_header, heartbeat_url=row.heartbeat_url, weight=row.weight, timeout=row.timeout,
            models=[{"model": m["model"], **({"apiModel": m["api_model"]} if m.get("api_model") else {})}
                    for m in row.models],
            options=_mask_options(row.options) or None,
            created_date=dt.datetime.fromtimestamp(row.created_at, dt.UTC),
            updated_date=dt.datetime.fromtimestamp(row.updated_at, dt.UTC))
        return self._health(info, self.manager.get(row.name))


def redact_in_logs(values: Iterable[str]) -> None:
    """Add secrets to the log redaction the config's secrets get (``aiport serve`` configures
    it with the secrets written in the config; keys from the environment and from run-time
    providers become known later)."""
    values = {v for v in values if v and len(v) >= 4}
    for processor in structlog.get_config().get("processors", ()):
        if isinstance(processor, RedactSecrets) and not values <= set(processor.secrets):
            processor.secrets = sorted({*processor.secrets, *values}, key=len, reverse=True)


PROVIDER_ADMIN = web.AppKey("aiport.provider_admin", ProviderAdmin)


def _admin(request: web.Request) -> ProviderAdmin:
    admin = request.app.get(PROVIDER_ADMIN)
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


def _find_info(admin: ProviderAdmin, row: ProviderRow) -> ProviderInfo:
    display = _AI_DISPLAY if row.kind == "chat" else _MEDIA_DISPLAY
    return admin._row_info(row, display)


def create_provider(kind: str) -> Any:
    async def handle(request: web.Request, dto: CreateAiProvider | CreateMediaProvider) -> web.Response:
        admin = _admin(request)
        row = await admin.create(_new_row(request, kind, dto))
        return respond(request, IdResponse(id=str(row.id), result=_find_info(admin, row)))
    return handle


_ROW_RESETS = {"apibaseurl": "base_url", "baseurl": "base_url", "apikey": "api_key", "apikeyvar": "api_key_env",
               "apikeyenv": "api_key_env", "apikeyheader": "api_key_header", "heartbeaturl": "heartbeat_url",
               "weight": "weight", "timeout": "timeout", "options": "options", "models": "models"}


def update_provider(kind: str) -> Any:
    async def handle(request: web.Request, dto: UpdateAiProvider | UpdateMediaProvider) -> web.Response:
        admin = _admin(request)
        old = admin.find(kind, dto.id, dto.name)
        changes: dict[str, Any] = {}
        for wire in _explicit_nulls(request, dto.reset):
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
        return respond(request, IdResponse(id=str(row.id), result=_find_info(admin, row)))
    return handle


def delete_provider(kind: str) -> Any:
    async def handle(request: web.Request, dto: DeleteAiProvider | DeleteMediaProvider) -> web.Response:
        admin = _admin(request)
        row = admin.find(kind, dto.id, dto.name)
        await admin.delete(row)
        return respond(request, MessageResult(result=f"Provider {row.name!r} deleted"))
    return handle


def query_providers(kind: str) -> Any:
    async def handle(request: web.Request, dto: QueryAiProviders | QueryMediaProviders) -> web.Response:
        results = _admin(request).list(kind)
        if dto.id is not None:
            results = [r for r in results if r.id == dto.id]
        if dto.name:
            results = [r for r in results if r.name == dto.name]
        return respond(request, QueryResponse(offset=0, total=len(results), results=results))
    return handle


async def provider_health(request: web.Request, dto: GetProviderHealth) -> web.Response:
    return respond(request, MessageResult(result=list(request.app[state.PROVIDERS].describe())))


# --------------------------------------------------------------------------- stats


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
    service = request.app[state.SERVICES].get("api_keys")
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

    return respond(request, SummaryStatsResponse(
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
    return respond(request, WorkerStatsResponse(results=results, queue_counts=queue_counts))


async def admin_data(request: web.Request, dto: AdminData) -> web.Response:
    engine: JobEngine = request.app[state.ENGINE]
    counts = await engine.store.queue_counts()
    admin = request.app.get(PROVIDER_ADMIN)
    chat = len(admin.list("chat")) if admin else len(request.app[state.PROVIDERS].of_kind("chat"))
    media = len(admin.list("media")) if admin else len(request.app[state.PROVIDERS].of_kind("media"))
    service = request.app[state.SERVICES].get("api_keys")
    keys = await service.store.count(active_at=service.clock()) if isinstance(service, KeyService) else 0
    stats = [PageStat("AiProviders", chat), PageStat("MediaProviders", media), PageStat("ApiKeys", keys),
             PageStat("QueuedJobs", sum(c.get(JobState.QUEUED.value, 0) for c in counts.values())),
             PageStat("RunningJobs", sum(c.get(JobState.STARTED.value, 0) + c.get(JobState.EXECUTED.value, 0)
                                         for c in counts.values()))]
    return respond(request, AdminDataResponse(page_stats=stats))


# --------------------------------------------------------------------------- jobs


def job_info(job: Job, details: bool = False) -> JobInfo:
    started = job.started_at
    info = JobInfo(
        id=job.id, ref_id=job.ref_id, api=job.api, queue=job.queue, state=job.state.value, status=job.status_text,
        key_id=job.key_id, attempts=job.attempts, max_attempts=job.max_attempts, created_date=job.created_at,
        provider=job.provider, progress=job.progress, tag=job.tag, parent_id=job.parent_id, started_date=started,
        completed_date=job.completed_at,
        duration=dt.timedelta(milliseconds=job.duration_ms) if job.duration_ms is not None else None,
        error=dict(job.error) if job.error else None)
    if details:
        info.reply_to = job.reply_to
        info.request = dict(job.request)
        info.response = dict(job.response) if job.response else None
        info.outputs = list(job.outputs) or None
    return info


def _states(values: list[str] | None) -> tuple[JobState, ...]:
    out = []
    for value in values or ():
        match = next((s for s in JobState if s.value.lower() == value.strip().lower()), None)
        if match is None:
            raise BadRequest(f"Unknown job state {value!r}; states: {', '.join(s.value for s in JobState)}.",
                             error_code="InvalidValue")
        out.append(match)
    return tuple(out)


async def query_jobs(request: web.Request, dto: QueryJobs) -> web.Response:
    engine: JobEngine = request.app[state.ENGINE]
    skip, take = dto.skip or 0, dto.take or 50
    if dto.job_id is not None or dto.ref_id:
        found = await engine.store.get(job_id=dto.job_id, ref_id=dto.ref_id)
        jobs = [found] if found is not None else []
        more = False
    else:
        query = JobQuery(states=_states(dto.states), queue=dto.provider, tag=dto.tag, key_id=dto.key_id,
                         api=dto.api, limit=take + 1, offset=skip)
        jobs = await engine.store.list_jobs(query)
        more = len(jobs) > take
        jobs = jobs[:take]
    results = [job_info(j, bool(dto.include_details)) for j in jobs]
    return respond(request, QueryJobsResponse(offset=skip, has_more=more, results=results))


async def _job(request: web.Request, job_id: int | None, ref_id: str | None) -> Job:
    if job_id is None and not ref_id:
        raise BadRequest("Send JobId or RefId.", error_code="NotEmpty")
    store = request.app[state.ENGINE].store
    job = await store.get(job_id=job_id) if job_id is not None else await store.get(ref_id=ref_id)
    if job is None:
        raise NotFound(f"No job with {'JobId ' + str(job_id) if job_id is not None else 'RefId ' + repr(ref_id)}.")
    return job


async def admin_cancel_job(request: web.Request, dto: AdminCancelJob) -> web.Response:
    job = await _job(request, dto.job_id, dto.ref_id)
    job = await request.app[state.ENGINE].cancel(job, "Cancelled by an administrator")
    return respond(request, job_info(job))


async def requeue_job(request: web.Request, dto: RequeueJob) -> web.Response:
    job = await _job(request, dto.job_id, dto.ref_id)
    job = await request.app[state.ENGINE].requeue(job)
    log.info("job requeued by an administrator", job_id=job.id)
    return respond(request, job_info(job))


# --------------------------------------------------------------------------- wiring


async def runtime_providers(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the engine's): open the providers table and start the stored providers."""
    config = app[state.CONFIG]
    db = await open_database(config.resolve_path(config.storage.database_path), _PROVIDERS_SCHEMA)
    admin = ProviderAdmin(app, ProviderStore(db))
    app[PROVIDER_ADMIN] = admin
    try:
        await admin.load()
        yield
    finally:
        await db.close()


def install(app: web.Application) -> None:
    """Serve the admin APIs."""
    add_api(app, CreateApiKey, create_api_key)
    add_api(app, QueryApiKeys, query_api_keys)
    add_api(app, UpdateApiKey, update_api_key)
    add_api(app, RevokeApiKey, revoke_api_key)
    add_api(app, DeleteApiKey, delete_api_key)
    for kind, create, update, delete, query in (
            ("chat", CreateAiProvider, UpdateAiProvider, DeleteAiProvider, QueryAiProviders),
            ("media", CreateMediaProvider, UpdateMediaProvider, DeleteMediaProvider, QueryMediaProviders)):
        add_api(app, create, create_provider(kind))
        add_api(app, update, update_provider(kind))
        add_api(app, delete, delete_provider(kind))
        add_api(app, query, query_providers(kind))
    add_api(app, GetProviderHealth, provider_health)
    add_api(app, GetSummaryStats, summary_stats)
    add_api(app, GetWorkerStats, worker_stats)
    add_api(app, AdminData, admin_data)
    add_api(app, QueryJobs, query_jobs)
    add_api(app, AdminCancelJob, admin_cancel_job)
    add_api(app, RequeueJob, requeue_job)



