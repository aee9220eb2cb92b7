"""The plugin SDK: everything a provider or transform plugin imports from aiport, in one place.

A plugin (built in, under ``contrib_providers``, or in its own distribution)
imports from here and nowhere else in aiport::

    from aiport.core.sdk import ChatProviderType, HttpProvider, hookimpl

What it offers:

Registering
    :data:`hookimpl` marks a hook implementation; the registry descriptors a
    ``register_*`` hook hands to ``register`` (:class:`ChatProviderType`,
    :class:`MediaProviderType`, :class:`TransformSpec`, :class:`WorkflowSpec`,
    :class:`ModelSpec`, ...); :class:`ProviderContext`, what a provider factory
    is called with.
Options
    :class:`HttpOptions` (``extra_headers``), the base of an HTTP type's options
    class, and :func:`options_of`, a context's options structured into the
    type's attrs class (with config-style error messages for a hand-built dict).
The HTTP provider base
    :class:`HttpProvider`: base URL, API-key header, timeouts, the app's shared
    session, JSON calls (:meth:`~HttpProvider.request_json`), streamed responses
    (:meth:`~HttpProvider.open`), error mapping, :meth:`~HttpProvider.probe`
    and :meth:`~HttpProvider.aclose`. Chat and media providers both build on it.
    :class:`SessionSource`: the app's shared session, else one of the provider's own.
Errors
    :class:`ProviderError` (with ``retryable``, ``retry_after``,
    ``upstream_status``), :class:`ConfigError`, :class:`BadRequest`;
    :func:`is_retryable_status`, :func:`parse_retry_after` (seconds or an HTTP
    date), :func:`upstream_message`, :func:`rejected` (a request the backend
    cannot serve: 400) and :func:`clip`.
Bodies and streams
    :func:`read_capped` / :func:`read_error_text` (bounded reads),
    :func:`iter_lines` (any line ending, lines of any length) and
    :func:`iter_sse` (server-sent events as :class:`SSEEvent`).
Secrets
    :class:`Redactor` (a provider's key and base-URL credentials, masked
    wherever they appear), :func:`redact_url` (``user:pass@`` and
    ``?api_key=``/``key=`` values of any URL in a text) and :func:`url_secrets`.
Media
    :class:`GenerationTask`, :class:`GeneratedOutput`, :class:`MediaInput` and
    :class:`ProgressReporter`, what a media provider's ``generate`` takes and
    returns.

Library code logs only through ``structlog.get_logger()``; pass what goes into a
log line or an error through the provider's ``redact`` first.
"""

from __future__ import annotations

from ..config import Secret
from ..errors import BadRequest, ConfigError, ProviderError
from ..hookspecs import hookimpl
from ..media import GeneratedOutput, GenerationTask, MediaInput, ProgressReporter
from ..registry import (
    ChatProviderType,
    MediaProviderType,
    ModelSpec,
    ProviderContext,
    TransformSpec,
    WorkflowSpec,
)
from .bodies import MAX_ERROR_BODY, SSEEvent, iter_lines, iter_sse, read_capped, read_error_text
from .failures import MAX_MESSAGE, clip, is_retryable_status, parse_retry_after, rejected, upstream_message
from .http import HttpProvider, SessionSource
from .options import HttpOptions, options_of
from .redact import MASK, Redactor, redact_url, url_secrets

__all__ = [
    "MASK",
    "MAX_ERROR_BODY",
    "MAX_MESSAGE",
    "BadRequest",
    "ChatProviderType",
    "ConfigError",
    "GeneratedOutput",
    "GenerationTask",
    "HttpOptions",
    "HttpProvider",
    "MediaInput",
    "MediaProviderType",
    "ModelSpec",
    "ProgressReporter",
    "ProviderContext",
    "ProviderError",
    "Redactor",
    "SSEEvent",
    "Secret",
    "SessionSource",
    "TransformSpec",
    "WorkflowSpec",
    "clip",
    "hookimpl",
    "is_retryable_status",
    "iter_lines",
    "iter_sse",
    "options_of",
    "parse_retry_after",
    "read_capped",
    "read_error_text",
    "redact_url",
    "rejected",
    "upstream_message",
    "url_secrets",
]
