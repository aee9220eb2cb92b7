"""The HTTP provider base: one configured backend reached over HTTP, whatever it serves (chat, media...).

:class:`HttpProvider` owns what must behave the same for every HTTP backend:

- the base URL (required, http or https) and the API key, which only ever goes
  into a request header (``api_key_header`` when configured, else the type's
  default; ``Authorization`` gets the ``Bearer`` scheme);
- requests through the app's shared :class:`aiohttp.ClientSession`
  (``ProviderContext.http``), or through one the provider opens itself when it
  was built without one, and closes in :meth:`~HttpProvider.aclose`;
- the provider's ``timeout``: the whole call for a plain request; the time to
  connect and the longest silence between two reads for a stream, so a long
  answer that keeps arriving is not cut off;
- every failure as one :class:`~aiport.core.errors.ProviderError` (see
  :mod:`.failures`), its message scrubbed of the key and of the credentials in
  the base URL by the provider's :class:`~.redact.Redactor`;
- a stream the consumer stops reading early (client gone, job cancelled) closes
  its upstream connection at once, so the backend sees the cancellation;
- :meth:`~HttpProvider.probe`, the health check.

Subclasses set :attr:`~HttpProvider.options_class` and add what their API
serves; they may override :meth:`~HttpProvider.auth_headers`,
:meth:`~HttpProvider.error_message`, :meth:`~HttpProvider.body_retry_after` and
:meth:`~HttpProvider.probe_url`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

import aiohttp
import structlog
from yarl import URL

from .. import jsoncodec
from ..errors import ConfigError, ProviderError
from ..registry import ProviderContext
from .bodies import MAX_ERROR_BODY, read_error_text
from .failures import clip, is_retryable_status, parse_retry_after, upstream_message
from .options import HttpOptions, options_of
from .redact import Redactor, redact_url, url_secrets

__all__ = ["HttpProvider"]

log = structlog.get_logger("aiport.sdk.http")

#: Distinct URLs whose parsed form is kept; a provider sends to a handful all its life.
_URL_CACHE_SIZE = 1024


class SessionSource:
    """The app's shared session, or, for a provider built without one, a session of its own,
    opened on first use and closed by :meth:`close` (the shared one is the app's to close)."""

    __slots__ = ("_own", "shared")

    def __init__(self, shared: aiohttp.ClientSession | None) -> None:
        self.shared = shared
        self._own: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self.shared is not None:
            return self.shared
        if self._own is None or self._own.closed:
            self._own = aiohttp.ClientSession()
        return self._own

    async def close(self) -> None:
        if self._own is not None:
            await self._own.close()
            self._own = None


class HttpProvider:
    """Base of the providers that call an HTTP API: requests, error mapping, key handling, probing."""

    #: The attrs class of the type's options (a subclass of :class:`HttpOptions`).
    options_class: ClassVar[type[HttpOptions]] = HttpOptions
    #: Non-standard statuses a backend answers with, reported as the standard one they mean
    #: (Cohere's 498 "invalid token" is a 401: the gateway's own key, not the client's fault).
    status_aliases: ClassVar[Mapping[int, int]] = {}

    def __init__(self, ctx: ProviderContext, *, type_name: str, default_base_url: str | None = None) -> None:
        cfg = ctx.provider
        base = cfg.base_url or default_base_url
        if not base:
            raise ConfigError([f"provider {cfg.name!r}: base_url is required for the {type_name!r} type"])
        if not urlsplit(base).scheme.startswith("http"):
            raise ConfigError([f"provider {cfg.name!r}: base_url must be an http(s) URL, "
                               f"got {redact_url(base)!r}"])
        self.name: str = cfg.name
        self.type_name = type_name
        self.base_url: str = base.rstrip("/")
        self.options: Any = options_of(ctx, self.options_class)
        self.timeout = float(cfg.timeout)
        # Made once: these are on every request's path.
        self._call_timeout = aiohttp.ClientTimeout(total=self.timeout)
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout)
        self.heartbeat_url: str | None = cfg.heartbeat_url
        self._http: aiohttp.ClientSession | None = ctx.http
        self._sessions = SessionSource(ctx.http)
        self._key_header: str | None = cfg.api_key_header
        # The one place the key is revealed; it only ever goes into a request header.
        self._key: str | None = cfg.api_key.reveal() if cfg.api_key else None
        self.redact = Redactor([self._key, *url_secrets(self.base_url)])
        self._headers_cache: dict[str, str] | None = None
        self._json_headers_cache: dict[str, str] | None = None
        self._url_cache: dict[str, URL] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.redact(self.base_url)}>"

    @property
    def session(self) -> aiohttp.ClientSession:
        """The app's shared session, or (built without one) the provider's own, opened on first use."""
        return self._sessions.get()

    # ----------------------------------------------------------------- headers and URLs

    def key_headers(self, default_header: str = "Authorization") -> dict[str, str]:
        """The key in ``api_key_header`` when configured, else in ``default_header``.

        The ``Authorization`` header gets the ``Bearer`` scheme; any other header the bare key.
        """
        if not self._key:
            return {}
        header = self._key_header or default_header
        value = f"Bearer {self._key}" if header.lower() == "authorization" else self._key
        return {header: value}

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a request (``Authorization: Bearer`` by default)."""
        return self.key_headers()

    def headers(self) -> dict[str, str]:
        """Every header of an API request: the configured extras, then authentication."""
        return {**self.options.extra_headers, **self.auth_headers()}

    def _default_headers(self) -> dict[str, str]:
        # Built on first use (subclasses set what auth_headers needs in their __init__),
        # then reused: the same for every request of this provider.
        cached = self._headers_cache
        if cached is None:
            cached = self._headers_cache = self.headers()
        return cached

    def _json_headers(self) -> dict[str, str]:
        cached = self._json_headers_cache
        if cached is None:
            cached = self._json_headers_cache = {**self._default_headers(), "Content-Type": "application/json"}
        return cached

    def url(self, path: str) -> str:
        """``path`` under the base URL."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def same_origin(self, url: str) -> bool:
        """Whether ``url`` is on the provider's own scheme, host and port (where the key may go)."""
        return urlsplit(url)[:2] == urlsplit(self.base_url)[:2]

    # ----------------------------------------------------------------- errors

    def error_message(self, data: Any) -> str | None:
        """The upstream's message from a parsed error body (override per documented error shape)."""
        return upstream_message(data)

    def body_retry_after(self, data: Any) -> float | None:
        """A retry delay an error body carries (override; e.g. Gemini's ``RetryInfo``)."""
        return None

    def error(self, message: str, *, status: int | None = None, retryable: bool = False,
              retry_after: float | None = None, error_code: str | None = None) -> ProviderError:
        """A :class:`ProviderError` from this provider, secrets scrubbed from its message and its length capped."""
        return ProviderError(f"{self.name}: {clip(self.redact(message))}", provider=self.name,
                             upstream_status=status, retryable=retryable, retry_after=retry_after,
                             error_code=error_code)

    def http_error(self, status: int, headers: Mapping[str, str], text: str, reason: str | None = None
                   ) -> ProviderError:
        """The :class:`ProviderError` for an upstream answer with an error status."""
        data: Any = None
        with suppress(ValueError):
            data = jsoncodec.loads(text) if text else None
        message = self.error_message(data)
        if not message:
            message = " ".join(text.split())[:200] or reason or "no error message"
        retryable = is_retryable_status(status)
        retry_after = None
        if retryable:
            retry_after = parse_retry_after(headers)
            if retry_after is None:
                retry_after = self.body_retry_after(data)
        log.debug("provider answered with an error", provider=self.name, status=status,
                  upstream_message=self.redact(message))
        return self.error(f"upstream returned HTTP {status}: {message}", status=self.status_aliases.get(status, status),
                          retryable=retryable, retry_after=retry_after)

    def stream_error(self, message: str, *, status: int | None = 500, retryable: bool = True) -> ProviderError:
        """An error the upstream reported, or a fault found, after the stream began."""
        return self.error(message, status=status, retryable=retryable)

    def transport_error(self, exc: BaseException) -> ProviderError:
        """A connection error or timeout: retryable."""
        if isinstance(exc, TimeoutError):
            return self.error(f"no answer within {self.timeout:g}s (timeout)", retryable=True,
                              error_code="Timeout")
        if isinstance(exc, aiohttp.ClientPayloadError):
            return self.error("the connection broke before the answer was complete", retryable=True)
        # str(exc) names host and port at most (the redactor masks a URL's credentials if it names one).
        detail = str(exc) or type(exc).__name__
        return self.error(f"cannot reach the backend: {detail}", retryable=True)

    def malformed(self, what: str) -> ProviderError:
        """An answer that is not what the wire format documents (retryable: often a cut-off body)."""
        return self.error(f"malformed answer from the backend: {what}", status=502, retryable=True)

    # ----------------------------------------------------------------- requests

    def _prepared(self, url: str, json_body: Any, data: Any, headers: Mapping[str, str] | None
                  ) -> tuple[URL, Any, Mapping[str, str]]:
        """The parsed URL, the body and the headers of a request."""
        # Parsed once per URL: parsing the string costs more than the rest of building a request.
        urls = self._url_cache
        target = urls.get(url)
        if target is None:
            if len(urls) > _URL_CACHE_SIZE:
                urls.clear()
            target = urls[url] = URL(url)
        if json_body is not None and data is None:
            # Encoded here rather than by aiohttp's json=: faster, and the headers stay one cached dict.
            data = jsoncodec.dumpb(json_body)
            if headers is None:
                headers = self._json_headers()
            elif not any(name.lower() == "content-type" for name in headers):
                headers = {**headers, "Content-Type": "application/json"}
        elif headers is None:
            headers = self._default_headers()
        return target, data, headers

    @asynccontextmanager
    async def open(self, method: str, url: str, *, json_body: Any = None, stream: bool = False,
                   headers: Mapping[str, str] | None = None, data: Any = None,
                   timeout: aiohttp.ClientTimeout | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request and yield its (successful) response; map every failure to a ProviderError.

        ``data`` is a non-JSON body (e.g. an :class:`aiohttp.FormData` upload), sent instead of
        ``json_body``; ``timeout`` replaces the provider's own (a quick call may want a shorter one).

        If the block is left before the body was read to the end (the consumer
        stopped, or was cancelled), the connection is closed rather than reused,
        which is how the upstream learns that the client went away.
        """
        if timeout is None:
            timeout = self._stream_timeout if stream else self._call_timeout
        target, data, headers = self._prepared(url, json_body, data, headers)
        try:
            async with (self._http or self.session).request(method, target, data=data, timeout=timeout,
                                                            headers=headers) as resp:
                if resp.status >= 400:
                    text = await read_error_text(resp.content, MAX_ERROR_BODY)
                    raise self.http_error(resp.status, resp.headers, text, resp.reason)
                finished = False
                try:
                    yield resp
                    finished = True
                finally:
                    if not finished:
                        resp.close()
        except TimeoutError as exc:
            raise self.transport_error(exc) from None
        except aiohttp.ClientError as exc:
            raise self.transport_error(exc) from None

    async def request_json(self, method: str, url: str, *, json_body: Any = None,
                           headers: Mapping[str, str] | None = None,
                           timeout: aiohttp.ClientTimeout | None = None) -> Any:
        """A non-streamed call whose answer is JSON (``timeout`` as for :meth:`open`)."""
        # What open() does, without its generator-based context manager: this is every
        # non-streamed chat's path.
        target, data, sent_headers = self._prepared(url, json_body, None, headers)
        try:
            async with (self._http or self.session).request(method, target, data=data,
                                                            timeout=timeout or self._call_timeout,
                                                            headers=sent_headers) as resp:
                if resp.status >= 400:
                    text = await read_error_text(resp.content, MAX_ERROR_BODY)
                    raise self.http_error(resp.status, resp.headers, text, resp.reason)
                raw = await resp.read()
        except TimeoutError as exc:
            raise self.transport_error(exc) from None
        except aiohttp.ClientError as exc:
            raise self.transport_error(exc) from None
        try:
            return jsoncodec.loads(raw)  # JSON is UTF-8 (RFC 8259): no charset sniffing
        except ValueError:
            raise self.malformed("the body is not JSON") from None

    def parse_json(self, text: str) -> Any:
        """One JSON document of a stream (an SSE ``data:`` or an NDJSON line)."""
        try:
            return jsoncodec.loads(text)
        except ValueError:
            raise self.malformed(f"a stream event is not JSON: {text[:80]!r}") from None

    # ----------------------------------------------------------------- health and life cycle

    def probe_url(self) -> str:
        """What :meth:`probe` GETs when no ``heartbeat_url`` is configured (override)."""
        return self.base_url

    async def probe(self) -> None:
        """GET the ``heartbeat_url`` (relative URLs are under the base URL) or :meth:`probe_url`.

        The key is only sent when the URL is on the provider's own origin, so a
        heartbeat pointing elsewhere never receives it.
        """
        url = urljoin(self.base_url + "/", self.heartbeat_url) if self.heartbeat_url else self.probe_url()
        headers = self.headers() if self.same_origin(url) else dict(self.options.extra_headers)
        async with self.open("GET", url, headers=headers) as resp:
            await resp.read()

    async def aclose(self) -> None:
        """Close the session the provider opened itself; the app's shared one is the app's to close."""
        await self._sessions.close()
