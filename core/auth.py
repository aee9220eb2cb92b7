"""Who is calling: the admin (by the admin secret), an API key holder, or anonymous.

API keys themselves are stored and checked by the key service (a later layer
registers it under ``services["api_keys"]``); this module only extracts the
credential and applies the rules of a DTO's ``auth`` level.
"""

from __future__ import annotations

import hmac
from typing import Any

import attrs
from aiohttp import web

from . import state
from .dto import ApiMeta
from .errors import Forbidden, Unauthorized

ANONYMOUS_KEY_ID = 0


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


async def authenticate(request: web.Request) -> Principal:
    """Resolve (and cache on the request) who is calling. A bad credential is a 401."""
    cached = request.get(state.PRINCIPAL)
    if isinstance(cached, Principal):
        return cached
    config = request.app[state.CONFIG]
    token = credential(request)
    principal = ANONYMOUS
    if token is not None:
        secret = config.auth.admin_secret
        if secret and hmac.compare_digest(token.encode(), secret.reveal().encode()):
            principal = ADMIN
        else:
            keys: Any = request.app[state.SERVICES].get("api_keys")
            found = await keys.verify(token) if keys is not None else None
            if found is not None:
                principal = found
            elif config.auth.require_api_keys:
                raise Unauthorized("The API key is missing, invalid, expired or revoked.")
            # With keys not required, an unknown key is anonymous: OpenAI SDKs always send one.
    request[state.PRINCIPAL] = principal
    return principal


async def authorize(request: web.Request, meta: ApiMeta) -> Principal:
    """Apply a DTO's ``auth`` level: ``none``, ``key`` (per ``auth.require_api_keys``) or ``admin``."""
    principal = await authenticate(request)
    if meta.auth == "none":
        return principal
    if meta.auth == "admin":
        if not principal.is_admin:
            if request.app[state.CONFIG].auth.admin_secret is None:
                raise Unauthorized("Admin APIs are disabled: set auth.admin_secret to use them.")
            raise Unauthorized("This API needs the admin secret.")
        return principal
    if principal.is_admin:
        return principal
    if not principal.authenticated and request.app[state.CONFIG].auth.require_api_keys:
        raise Unauthorized("This API needs an API key (Authorization: Bearer <key> or X-Api-Key).")
    if principal.restrict_to and meta.name not in principal.restrict_to:
        raise Forbidden(f"This API key may not call {meta.name}.")
    return principal
