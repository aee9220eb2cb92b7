"""JSON for the request path: orjson where it can, the standard library where it cannot.

Every chat request is decoded and encoded several times (the client's body, the
body sent upstream, the upstream answer, the answer to the client, the history
row), so the codec is a measurable part of aiport's overhead; orjson does each
step several times faster than :mod:`json`.

The fallbacks keep the standard library's range: integers beyond 64 bits and
strings with lone surrogates (which orjson refuses) still work, and a body
orjson rejects is tried again with :func:`json.loads` before it is called
invalid, so no client that worked before gets a 400 now.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumpb(value: Any) -> bytes:
    """Compact UTF-8 JSON bytes."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError:
        # ensure_ascii: a lone surrogate becomes an escape instead of bytes that are not UTF-8.
        return json.dumps(value, separators=(",", ":")).encode()


def dumps(value: Any) -> str:
    """Compact JSON text (non-ASCII characters as they are, not escaped)."""
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse a JSON document; raises :class:`ValueError` (a ``json.JSONDecodeError``) if it is not one."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # Valid for the standard library but not for orjson: lone surrogate escapes, NaN.
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)
