"""JSON for the request path: orjson where it can, the standard library where it cannot.

Every chat request is decoded and encoded several times (the client's body, the
body sent upstream, the upstream answer, the answer to the client, the history
row), so the codec is a measurable part of aiport's overhead; orjson does each
step several times faster than :mod:`json`.

The fallbacks keep the standard library's range: integers beyond 64 bits (which
orjson refuses to write and reads as floats) and strings with lone surrogates
(which it refuses) still work, and a body orjson rejects is tried again with
:func:`json.loads` before it is called invalid, so no client that worked before
gets a 400 now.
"""

from __future__ import annotations

import json
import re
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
    return dumpb(value).decode()


#: 20 digits in a row: maybe an integer past 64 bits, which orjson would turn into a float.
_LONG_DIGITS = re.compile(r"[0-9]{20}")
_LONG_DIGITS_BYTES = re.compile(rb"[0-9]{20}")


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse a JSON document; raises :class:`ValueError` (a ``json.JSONDecodeError``) if it is not one."""
    if isinstance(data, memoryview):
        data = bytes(data)
    long_digits = _LONG_DIGITS if isinstance(data, str) else _LONG_DIGITS_BYTES
    if long_digits.search(data) is None:  # type: ignore[arg-type]
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # valid for the standard library but not for orjson: lone surrogate escapes, NaN
    return json.loads(data)
