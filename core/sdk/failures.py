"""Error mapping: what makes a backend failure retryable, how long to wait, and the upstream's own words.

Every provider failure is one :class:`~aiport.core.errors.ProviderError`.
Connection errors, timeouts, 408, 429 and 5xx are ``retryable`` (``retry_after``
from ``retry-after-ms`` or ``Retry-After``, in seconds or as an HTTP date); any
other 4xx is not, and carries the upstream's message. :class:`~.http.HttpProvider`
applies these rules; a provider with its own transport (a websocket, a
subprocess) calls the functions here directly.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from ..errors import ProviderError

__all__ = ["MAX_MESSAGE", "clip", "is_retryable_status", "parse_retry_after", "rejected", "upstream_message"]

#: The longest upstream message an error carries (a whole HTML error page helps no one).
MAX_MESSAGE = 500


def is_retryable_status(status: int) -> bool:
    """408, 429 and 5xx may succeed when tried again; other 4xx will not."""
    return status in (408, 429) or status >= 500


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or an HTTP date).

    ``now`` (a Unix time) is what an HTTP date is measured from; the clock when omitted.
    """
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = (headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def upstream_message(data: Any) -> str | None:
    """The message of a JSON error body in the common shapes.

    ``{"error": {"message": ...}}`` (OpenAI and most others), ``{"error": "..."}``,
    ``{"message": ...}`` or ``{"detail": ...}``; ``None`` for anything else.
    """
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str) and err:
            return err
        for key in ("message", "detail"):
            if isinstance(data.get(key), str) and data[key]:
                return str(data[key])
    return None


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, with ``...`` where it was cut."""
    return text if len(text) <= limit else text[:limit] + "..."


def rejected(provider: str, message: str) -> ProviderError:
    """A request the backend cannot serve as asked (a feature or content part it lacks): 400, not retryable."""
    return ProviderError(f"{provider}: {message}", provider=provider, upstream_status=400, retryable=False)
