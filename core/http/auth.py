"""Who is calling: the admin (by the admin secret), an API key holder, or anonymous.

API keys themselves are stored and checked by the key service
(:mod:`aiport.core.http.keys`, registered as ``services["api_keys"]``); this module
extracts the credential and applies the rules of a DTO's ``auth`` level, then the
key's limits (:mod:`aiport.core.http.limits`).

A refused credential gets the same answer whether the key is unknown, expired or
revoked, so a caller cannot learn whether a key exists; each refusal counts
against the caller's address, which is slowed after repeated failures.
"""

from __future__ import annotations

import hmac

import attrs
from aiohttp import web

from .. import state
from ..errors import Forbidden, Unauthorized
from . import limits
from .dto import ApiMeta

ANONYMOUS_KEY_ID = 0
#: The name of the API a request was authorised for (for metrics and logs).
API_NAME = web.RequestKey("aiport.api_name", str)

BAD_KEY = "The API key is missing, invalid, expired or revoked."
NEEDS_ADMIN = "This API needs the admin secret or an API key with the Admin scope."


@attrs.frozen
class Principal:
    """The caller of one request. ``key_id`` is 0 for anonymous callers and the admin."""

    key_id: int = ANONYMOUS_KEY_ID
    is_admin: bool = False
    name: str = "anonymous"
    #: API names this key may call (empty: any).
    restrict_to: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    authenticated: bool = False
    #: The key's limits (``None``: none): requests per minute, requests at once, chat tokens per minute.
    rpm: int | None = None
    concurrency: int | None = None
    tpm: int | None = None


ANONYMOUS = Principal()
ADMIN = Principal(is_admin=True, name="admin", authenticated=True)


def credential(request: web.Request) -> str | None:
    """The key sent as ``Authorization: Bearer``, ``X-Api-Key`` or (for agents) ``?apiKey=``."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    key = request.headers.get("X-Api-Key")
    if key:
        return key.strip()
    return None


def _refused(request: web.Request, message: str) -> Unauthorized:
    """A 401; when a credential was sent, the failure counts against the caller's address."""
    limiter = request.app.get(limits.LIMITER)
    if limiter is not None and credential(request) is not None:
        limiter.auth_failed(request.remote or "")
    return Unauthorized(message)


async def authenticate(request: web.Request) -> Principal:
    """Resolve (and cache on the request) who is calling. A bad credential is a 401."""
    cached = request.get(state.PRINCIPAL)
    if isinstance(cached, Principal):
        return cached
    config = request.app[state.CONFIG]
    token = credential(request)
    principal = ANONYMOUS
    if token is not None:
        limiter = request.app.get(limits.LIMITER)
        if limiter is not None:
            # Checked before the credential is: during a lock-out even a right guess learns nothing.
            limiter.check_address(request.remote or "")
        secret = config.auth.admin_secret
        if secret and hmac.compare_digest(token.encode(), secret.reveal().encode()):
            principal = ADMIN
        else:
            keys = request.app.get(state.KEYS)
            found = await keys.verify(token) if keys is not None else None
            if found is not None:
                principal = found
            elif config.auth.require_api_keys:
                raise _refused(request, BAD_KEY)
            # With keys not required, an unknown key is anonymous: OpenAI SDKs always send one.
    request[state.PRINCIPAL] = principal
    return principal


async def authorize(request: web.Request, meta: ApiMeta) -> Principal:
    """Apply a DTO's ``auth`` level (``none``, ``key`` per ``auth.require_api_keys``, or ``admin``:
    the admin secret or an ``Admin``-scoped key), then the key's ``restrictTo`` and limits."""
    request[API_NAME] = meta.name
    principal = await authenticate(request)
    if meta.auth == "none":
        return principal
    if meta.auth == "admin":
        if not principal.is_admin:
            if principal.authenticated:
                raise Forbidden(NEEDS_ADMIN)
            raise _refused(request, BAD_KEY if credential(request) is not None else NEEDS_ADMIN)
    elif not principal.is_admin:
        if not principal.authenticated and request.app[state.CONFIG].auth.require_api_keys:
            raise _refused(request, "This API needs an API key (Authorization: Bearer <key> or X-Api-Key).")
        if principal.restrict_to and meta.name not in principal.restrict_to:
            raise Forbidden(f"This API key may not call {meta.name}.")
    if principal.key_id:
        limiter = request.app.get(limits.LIMITER)
        if limiter is not None:
            limiter.admit(request, principal, meta.name)
    return principal
