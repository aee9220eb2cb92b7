"""The ``cohere`` chat provider: its config options and the object the factory builds.

All HTTP lives here; the wire translation is in :mod:`.translate`. The object
implements :class:`aiport.core.interfaces.ChatProvider` structurally (no base
class to inherit): ``name``, ``chat``, ``stream``, ``probe``, ``list_models``,
``aclose``.

Error contract: every failure is a :class:`~aiport.core.errors.ProviderError`
naming this provider, with ``upstream_status`` when Cohere answered, the
``message`` of Cohere's error body, ``retryable`` for connection errors,
timeouts, 429 and 5xx, and ``retry_after`` from ``Retry-After``. The API key is
only ever written into the request header, and is masked (the SDK's ``Redactor``) in any upstream
text that echoes it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import aiohttp
import attrs
from aiport.core.config import structure
from aiport.core.sdk import (
    MAX_ERROR_BODY,
    ProviderContext,
    ProviderError,
    Redactor,
    Secret,
    SessionSource,
    iter_sse,
    parse_retry_after,
    read_capped,
    url_secrets,
)

from . import translate

DEFAULT_BASE_URL = "https://api.cohere.com"

#: Probes and model listings are quick calls; don't let them hang for a chat-sized timeout.
_QUICK_TIMEOUT = 30.0
#: Statuses that describe the gateway's own Cohere account (402 payment required,
#: 498 invalid token) rather than the client's request. They are reported as the
#: auth failures they are, so the client gets a 502 instead of a 4xx it cannot fix.
_ACCOUNT_STATUSES = {402: 403, 498: 401}


@attrs.frozen
class CohereOptions:
    """The ``cohere`` type's own config keys, written beside ``name``/``type`` in a provider entry::

        providers:
          - name: cohere
            type: cohere
            api_key_env: COHERE_API_KEY
            safety_mode: strict      # contextual | strict | "off" (quote it: YAML reads off as false)
            strict_tools: true
    """

    #: Cohere's ``safety_mode`` for every request (unset: Cohere's default, contextual).
    safety_mode: Literal["contextual", "strict", "off"] | None = None
    #: Force Cohere's ``strict_tools`` on or off; unset follows each request's ``strict`` tool flags.
    strict_tools: bool | None = None
    #: Sent as ``X-Client-Name`` so the calls are recognisable in Cohere's dashboard (null: not sent).
    client_name: str | None = "aiport"


class CohereChatProvider:
    """One configured Cohere backend (see the module docstring for the error contract)."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str | None = None,
        api_key: Secret | None = None,
        api_key_header: str | None = None,
        timeout: float = 180.0,
        options: CohereOptions | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self.base_url = _normalise_base(base_url or DEFAULT_BASE_URL)
        self.timeout = float(timeout)
        self.options = options or CohereOptions()
        self._api_key = api_key
        self._api_key_header = api_key_header
        #: Masks the key (and any credentials in the base URL) in upstream text that echoes it back.
        self._redact = Redactor([api_key.reveal() if api_key else None, *url_secrets(self.base_url)])
        #: The app's shared session; when none is given the provider opens (and closes) its own.
        self._sessions = SessionSource(http)

    @classmethod
    def from_context(cls, ctx: ProviderContext) -> CohereChatProvider:
        """The :class:`~aiport.core.registry.ChatProviderType` factory."""
        options = ctx.options
        if options is None:
            options = CohereOptions()
        elif isinstance(options, Mapping):  # a context built by hand with the raw extra keys
            options = structure(dict(options), CohereOptions, ctx.provider.name)
        p = ctx.provider
        return cls(name=p.name, base_url=p.base_url, api_key=p.api_key, api_key_header=p.api_key_header,
                   timeout=float(p.timeout), options=options, http=ctx.http)

    def __repr__(self) -> str:
        return f"CohereChatProvider(name={self.name!r}, base_url={self.base_url!r})"

    # ------------------------------------------------------------------ ChatProvider

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed completion: an OpenAI ``chat.completion``."""
        payload = self._cohere_body(body, stream=False)
        data = await self._json("POST", "/v2/chat", json_body=payload, limit=self.timeout)
        try:
            return translate.from_cohere_response(data, model=payload["model"])
        except translate.UpstreamFailure as exc:
            raise self._error(str(exc), retryable=True) from None

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """A streamed completion: OpenAI ``chat.completion.chunk`` dicts; the last carries ``usage``."""
        payload = self._cohere_body(body, stream=True)
        translator = translate.StreamTranslator(model=payload["model"])
        # No total timeout: a long answer may legitimately take minutes. The
        # provider's timeout bounds the silence between two reads instead.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(self.timeout, _QUICK_TIMEOUT),
                                        sock_read=self.timeout)
        async with self._request("POST", "/v2/chat", json_body=payload, limit=timeout,
                                 accept="text/event-stream") as response:
            try:
                # Cohere ends every stream with a message-end event: one cut short is detected by
                # its absence, so an unterminated last event is dropped, as the SSE rules say.
                async for sse in iter_sse(response.content, dispatch_unterminated=False):
                    event = _decode_event(sse.event, sse.data)
                    if event is None:
                        continue
                    for chunk in translator.feed(event):
                        yield chunk
                    if translator.finished:
                        return
            except translate.UpstreamFailure as exc:
                raise self._error(str(exc), retryable=True) from None
            except ValueError as exc:  # an event whose data is not JSON
                raise self._error(f"Cohere sent an unreadable stream event: {exc}") from None
            except TimeoutError:
                raise self._timeout() from None
            except aiohttp.ClientError as exc:
                raise self._error(f"the stream from Cohere broke off: {exc}", retryable=True) from None
        raise self._error("Cohere's stream ended before its message-end event", retryable=True)

    async def probe(self) -> None:
        """Healthy when Cohere accepts the key and lists a model (``GET /v1/models?page_size=1``)."""
        await self._json("GET", "/v1/models", params={"page_size": "1"},
                         limit=min(self.timeout, _QUICK_TIMEOUT))

    async def list_models(self) -> list[str]:
        """Every model Cohere offers this key for the chat endpoint (follows ``next_page_token``)."""
        names: list[str] = []
        params = {"endpoint": "chat", "page_size": "1000"}
        seen_tokens: set[str] = set()
        while True:
            data = await self._json("GET", "/v1/models", params=params, limit=min(self.timeout, _QUICK_TIMEOUT))
            for model in data.get("models") or []:
                if isinstance(model, Mapping) and isinstance(model.get("name"), str):
                    names.append(model["name"])
            token = data.get("next_page_token")
            # A repeated token would loop forever; stop rather than trust it.
            if not token or token in seen_tokens:
                return names
            seen_tokens.add(token)
            params = {**params, "page_token": token}

    async def aclose(self) -> None:
        """Close the session this provider opened itself; the app's shared one is the app's to close."""
        await self._sessions.close()

    # ------------------------------------------------------------------ HTTP

    def _cohere_body(self, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
        safety = self.options.safety_mode.upper() if self.options.safety_mode else None
        try:
            return translate.to_cohere_request(body, stream=stream, safety_mode=safety,
                                               strict_tools=self.options.strict_tools)
        except translate.UnsupportedRequest as exc:
            err = self._error(str(exc), error_code="UnsupportedRequest")
            err.status = 400  # the client's request, not the backend, is at fault
            raise err from None

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if self.options.client_name:
            headers["X-Client-Name"] = self.options.client_name
        if self._api_key:
            key = self._api_key.reveal()
            if self._api_key_header:
                headers[self._api_key_header] = key
            else:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        limit: float | aiohttp.ClientTimeout,
        accept: str = "application/json",
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """An open 2xx response; connection errors, timeouts and error statuses raise ProviderError.

        ``limit`` is the request's time limit: seconds for the whole exchange, or an
        :class:`aiohttp.ClientTimeout` for finer control (streams).
        """
        timeout = limit if isinstance(limit, aiohttp.ClientTimeout) else aiohttp.ClientTimeout(total=limit)
        try:
            response = await self._sessions.get().request(
                method, self.base_url + path, json=json_body, params=params,
                headers=self._headers(accept), timeout=timeout,
            )
        except TimeoutError:
            raise self._timeout() from None
        except aiohttp.ClientError as exc:
            raise self._error(f"cannot reach Cohere at {self.base_url}: {exc}", retryable=True) from None
        try:
            if response.status >= 400:
                raise await self._status_error(response)
            yield response
        finally:
            response.release()

    async def _json(self, method: str, path: str, *, limit: float, **kwargs: Any) -> dict[str, Any]:
        async with self._request(method, path, limit=limit, **kwargs) as response:
            try:
                data = await response.json(content_type=None)
            except TimeoutError:
                raise self._timeout() from None
            except aiohttp.ClientError as exc:
                raise self._error(f"the answer from Cohere broke off: {exc}", retryable=True) from None
            except ValueError:
                raise self._error(f"Cohere answered {response.status} with a body that is not JSON") from None
        if not isinstance(data, dict):
            raise self._error("Cohere answered with JSON that is not an object")
        return data

    async def _status_error(self, response: aiohttp.ClientResponse) -> ProviderError:
        """The ProviderError for a non-2xx answer, carrying Cohere's ``message``."""
        try:
            raw = await asyncio.wait_for(read_capped(response.content, MAX_ERROR_BODY), timeout=_QUICK_TIMEOUT)
        except (TimeoutError, aiohttp.ClientError):
            raw = b""  # the status alone still says what happened
        text = raw.decode("utf-8", errors="replace").strip()
        message = ""
        try:
            parsed = json.loads(text)
            if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
                message = parsed["message"]
        except ValueError:
            message = text[:500]
        message = message or response.reason or "no error message"
        status = response.status
        return self._error(
            f"Cohere answered {status}: {message}",
            upstream_status=_ACCOUNT_STATUSES.get(status, status),
            retryable=status == 429 or status >= 500,
            retry_after=parse_retry_after(response.headers),
        )

    def _error(self, message: str, **kwargs: Any) -> ProviderError:
        return ProviderError(self._redact(message), provider=self.name, **kwargs)

    def _timeout(self) -> ProviderError:
        return self._error(f"Cohere did not answer within {self.timeout:g}s", retryable=True,
                           error_code="Timeout")



def _normalise_base(base: str) -> str:
    """The API root: no trailing slash, and no ``/v1``/``/v2`` (paths here carry their version)."""
    base = base.rstrip("/")
    for suffix in ("/v1", "/v2"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def _decode_event(event_name: str, data: str) -> dict[str, Any] | None:
    """A stream event's JSON, with ``type`` filled from the SSE ``event:`` name if it lacks one
    (``message``, the SSE default name, is no Cohere event type)."""
    if data.strip() == "[DONE]":
        return None
    event = json.loads(data)
    if not isinstance(event, dict):
        raise ValueError("an event's data is not a JSON object")
    if "type" not in event and event_name != "message":
        event["type"] = event_name
    return event
