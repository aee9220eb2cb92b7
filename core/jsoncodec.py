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


#: Digits to ``0``, every other byte to a space: 20 zeros in the result are 20 digits in a row,
#: maybe an integer past 64 bits, which orjson would turn into a float. A translate and a
#: substring search scan a body about ten times faster than a regular expression does.
_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_DIGITS = b"0" * 20


def _has_long_digits(data: bytes | bytearray | str) -> bool:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return _LONG_DIGITS in data.translate(_DIGITS_TO_ZERO)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse a JSON document; raises :class:`ValueError` (a ``json.JSONDecodeError``) if it is not one."""
    if isinstance(data, memoryview):
        data = bytes(data)
    if not _has_long_digits(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # valid for the standard library but not for orjson: lone surrogate escapes, NaN
    return json.loads(data)
