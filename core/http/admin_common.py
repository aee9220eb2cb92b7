"""What the admin API modules share: their OpenAPI tag, AutoQuery's page and ``{result}``
shapes, and how a PATCH says which fields to clear."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
from aiohttp import web

from .. import state
from .dto import norm, response_model

TAGS = ("admin",)


@response_model()
@attrs.define
class QueryResponse:
    """AutoQuery's shape: the page of ``results``, its ``offset`` and the ``total`` matching."""

    offset: int
    total: int
    results: list[Any]


@response_model()
@attrs.define
class MessageResult:
    """``{result}``: a message or a value."""

    result: Any


def explicit_nulls(request: web.Request, reset: Iterable[str] | None) -> set[str]:
    """Normalised names of the fields a PATCH clears: sent as null, or listed in ``Reset``."""
    names = {norm(r) for r in reset or ()}
    data = getattr(request.get(state.INPUT), "data", None) or {}
    names.update(norm(str(k)) for k, v in data.items() if v is None)
    return names
