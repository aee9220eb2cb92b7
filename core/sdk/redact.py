"""Secret redaction: API keys, URL credentials and key-bearing query values, masked before text leaves.

Anything a provider puts into a :class:`~aiport.core.errors.ProviderError` or a
log line may reach a client or a log store, and upstreams echo what they were
sent (a key in an error message, the request URL in a 404 page). A
:class:`Redactor` knows a provider's secrets (its API key and whatever
credentials its base URL carries) and masks them wherever they appear;
:func:`redact_url` masks the credential-looking parts of any URL in a text,
known or not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

from ..logging import MASK

__all__ = ["MASK", "Redactor", "redact_url", "url_secrets"]

#: Query parameters that carry credentials (Gemini's ``key=``, ComfyUI's ``apiKey=``, signed URLs' ``sig=``...).
_SECRET_PARAM = r"(?:api[_-]?key|apikey|key|token|access[_-]?token|auth|password|secret|sig|signature)"
_QUERY_SECRET = re.compile(rf"(?P<name>[?&;]{_SECRET_PARAM}=)(?P<value>[^&#\s\"'<>]+)", re.IGNORECASE)
#: ``scheme://user:pass@host``: the userinfo part of a URL.
_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/?#@\s\"'<>]+)@", re.IGNORECASE)
#: Shorter secrets are not masked: replacing every "ab" in a message would garble it and hide nothing.
_MIN_SECRET = 4


def redact_url(text: str) -> str:
    """``text`` with every URL's ``user:pass@`` and credential query values (``?api_key=``, ``key=``...) masked."""
    if "://" in text:
        text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: f"{m['name']}{MASK}", text)
    return text


def url_secrets(url: str) -> list[str]:
    """The credentials a URL carries: its password and user name, and its credential query values.

    Collected so that they are masked even where they show up outside a URL
    (an upstream quoting just the value back).
    """
    try:
        parts = urlsplit(url)
        found = [parts.password, parts.username]
        found += [value for name, value in parse_qsl(parts.query, keep_blank_values=False)
                  if re.fullmatch(_SECRET_PARAM, name, re.IGNORECASE)]
    except ValueError:
        return []
    return [unquote(s) for s in found if s]


class Redactor:
    """Masks known secrets and URL credentials in text; call it on anything bound for an error or a log.

    Secrets are replaced longest first, so one that contains another is masked whole.
    """

    __slots__ = ("secrets",)

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets: tuple[str, ...] = tuple(sorted({s for s in secrets if s and len(s) >= _MIN_SECRET},
                                                     key=len, reverse=True))

    def __call__(self, text: str) -> str:
        """``text`` with every known secret and every URL credential masked."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return redact_url(text)

    def __repr__(self) -> str:
        return f"Redactor({len(self.secrets)} secrets)"
