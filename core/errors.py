"""The one error tree of aiport.

Every error a client can see is an :class:`ApiError`; the error middleware
renders it as AI Server's ``responseStatus`` envelope::

    {"responseStatus": {"errorCode": "NotEmpty", "message": "...",
                        "errors": [{"errorCode": "NotEmpty", "fieldName": "PositivePrompt",
                                    "message": "..."}]}}

Errors that stop the server from starting are :class:`ConfigError` (a bad
config file) and :class:`PluginError` (a plugin that registers something wrong).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs


@attrs.frozen
class FieldError:
    """One invalid input field: ``fieldName`` is the DTO's property name as AI Server spells it."""

    error_code: str
    field_name: str
    message: str

    def to_wire(self) -> dict[str, str]:
        return {"errorCode": self.error_code, "fieldName": self.field_name, "message": self.message}


class AiportError(Exception):
    """Base of every error aiport raises on purpose."""


class ApiError(AiportError):
    """An error with an HTTP status, rendered as the ``responseStatus`` envelope.

    Subclasses fix ``status`` and a default ``error_code``; ``extra`` adds
    top-level members to the body (e.g. the ``jobId`` of a sync call that timed
    out) and ``headers`` adds response headers (e.g. ``Retry-After``).
    """

    status: int = 500
    error_code: str = "InternalServerError"

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        errors: Iterable[FieldError] = (),
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code
        self.errors = list(errors)
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def response_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"errorCode": self.error_code, "message": self.message}
        if self.errors:
            status["errors"] = [e.to_wire() for e in self.errors]
        return status

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.extra)
        body["responseStatus"] = self.response_status()
        return body


class BadRequest(ApiError):
    """400: the request is malformed or a value is not allowed."""

    status = 400
    error_code = "BadRequest"


class ValidationFailed(BadRequest):
    """400 with one or more field errors; the top-level code and message are the first field's."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        errors = list(errors)
        if not errors:
            raise ValueError("ValidationFailed needs at least one field error")
        super().__init__(errors[0].message, error_code=errors[0].error_code, errors=errors)


class Unauthorized(ApiError):
    status = 401
    error_code = "Unauthorized"


class Forbidden(ApiError):
    status = 403
    error_code = "Forbidden"


class NotFound(ApiError):
    status = 404
    error_code = "NotFound"


class MethodNotAllowed(ApiError):
    status = 405
    error_code = "MethodNotAllowed"


class Conflict(ApiError):
    status = 409
    error_code = "Conflict"


class PayloadTooLarge(ApiError):
    status = 413
    error_code = "PayloadTooLarge"


class UnsupportedMediaType(ApiError):
    status = 415
    error_code = "UnsupportedMediaType"


class TooManyRequests(ApiError):
    status = 429
    error_code = "TooManyRequests"


class InternalError(ApiError):
    status = 500
    error_code = "InternalServerError"


class UpstreamError(ApiError):
    """502: a backend answered with an error or something that could not be understood."""

    status = 502
    error_code = "UpstreamError"


class ServiceUnavailable(ApiError):
    status = 503
    error_code = "ServiceUnavailable"


class GatewayTimeout(ApiError):
    status = 504
    error_code = "GatewayTimeout"


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        TooManyRequests,
        InternalError,
        UpstreamError,
        ServiceUnavailable,
        GatewayTimeout,
    )
}


def error_for_status(status: int, message: str) -> ApiError:
    """The :class:`ApiError` that fits an HTTP status (used for aiohttp's own HTTP exceptions)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        err = ApiError(message)
        err.status = status
        err.error_code = "BadRequest" if 400 <= status < 500 else "InternalServerError"
        return err
    return cls(message)


class ConfigError(AiportError):
    """The configuration cannot be used. Each problem names its key path and, where possible, a fix."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class PluginError(AiportError):
    """A plugin could not be loaded or registered something invalid (e.g. a duplicate name)."""


class ProviderError(UpstreamError):
    """A backend call failed. ``retryable`` errors (connection errors, timeouts, 429, 5xx)
    may be tried again, on the same provider after ``retry_after`` seconds or on another one.

    The client sees ``status``: the backend's own 4xx for a request it rejected
    (400, 404, 422...), 429 when it is rate limited, else 502 (or 504 on a timeout).
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        upstream_status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message, error_code=error_code)
        self.provider = provider
        self.upstream_status = upstream_status
        self.retryable = retryable
        self.retry_after = retry_after
        if upstream_status is not None and 400 <= upstream_status < 500 and upstream_status not in (401, 403, 408):
            self.status = upstream_status
            if error_code is None:
                self.error_code = "TooManyRequests" if upstream_status == 429 else "UpstreamRejected"
        elif upstream_status == 408 or error_code == "Timeout":
            self.status = 504
            self.error_code = error_code or "GatewayTimeout"
        if retry_after is not None and self.status == 429:
            self.headers["Retry-After"] = str(max(1, round(retry_after)))
