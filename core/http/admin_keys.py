"""Admin APIs for API keys: create, list, change, revoke and delete them.

Shapes follow AI Server's ``CreateApiKey`` and AutoQuery; a key's secret is in the
answer to ``CreateApiKey`` only, never listed again.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import attrs
from aiohttp import web

from .. import state
from ..errors import BadRequest, Conflict, FieldError, NotFound, ServiceUnavailable
from .admin_common import TAGS, MessageResult, QueryResponse, explicit_nulls
from .dto import api, response_model
from .dto import field as dfield
from .keys import ApiKey, KeyService, is_integrity_error
from .routes import add_api
from .scrubbing import scrubbed_response


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


# --------------------------------------------------------------------------- handlers


def _keys(request: web.Request) -> KeyService:
    service = request.app.get(state.KEYS)
    if not isinstance(service, KeyService):
        raise ServiceUnavailable("The API key service is not running.")
    return service


def key_info(key: ApiKey, now: dt.datetime, secret: str | None = None) -> ApiKeyInfo:
    """A key as the admin sees it; ``secret`` only right after it was made."""
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
    return scrubbed_response(request, key_info(key, now, secret))


async def query_api_keys(request: web.Request, dto: QueryApiKeys) -> web.Response:
    service = _keys(request)
    skip, take = dto.skip or 0, dto.take or 100
    keys, total = await service.store.list(key_id=dto.id, name=dto.name, include_revoked=dto.include_revoked
                                           is not False, limit=take, offset=skip)
    now = service.clock()
    return scrubbed_response(request, QueryResponse(offset=skip, total=total, results=[key_info(k, now) for k in keys]))


_KEY_FIELDS = {"name": "name", "scopes": "scopes", "restrictto": "restrict_to", "notes": "notes",
               "userid": "user_id", "username": "user_name", "refid": "ref_id", "expirydate": "expires_at",
               "requestsperminute": "rpm", "concurrentrequests": "concurrency", "tokensperminute": "tpm"}


async def update_api_key(request: web.Request, dto: UpdateApiKey) -> web.Response:
    service = _keys(request)
    if await service.store.get(dto.id) is None:
        raise NotFound(f"No API key with Id {dto.id}.")
    changes: dict[str, Any] = {}
    cleared = explicit_nulls(request, dto.reset)
    for wire, field_name in _KEY_FIELDS.items():
        if wire in cleared:
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
    return scrubbed_response(request, key_info(key, service.clock()))


async def revoke_api_key(request: web.Request, dto: RevokeApiKey) -> web.Response:
    service = _keys(request)
    key = await service.revoke(dto.id)
    if key is None:
        raise NotFound(f"No API key with Id {dto.id}.")
    return scrubbed_response(request, key_info(key, service.clock()))


async def delete_api_key(request: web.Request, dto: DeleteApiKey) -> web.Response:
    if not await _keys(request).delete(dto.id):
        raise NotFound(f"No API key with Id {dto.id}.")
    return scrubbed_response(request, MessageResult(result=f"API key {dto.id} deleted"))


def install(app: web.Application) -> None:
    """Serve the API-key admin APIs."""
    add_api(app, CreateApiKey, create_api_key)
    add_api(app, QueryApiKeys, query_api_keys)
    add_api(app, UpdateApiKey, update_api_key)
    add_api(app, RevokeApiKey, revoke_api_key)
    add_api(app, DeleteApiKey, delete_api_key)
