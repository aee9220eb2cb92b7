"""The app's middlewares: request context and logging, CORS, and the one error renderer."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from .. import state
from ..errors import ApiError, InternalError, error_for_status
from ..jsoncodec import dumps
from ..state import OPENAI_ERRORS, REQUEST_ID

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_SECRET_QUERY = re.compile(r"(?i)((?:api_?key|token|secret|key)=)[^&]*")

log = structlog.get_logger("aiport.http")


#: Whether request lines are logged (set by ``create_app`` with :func:`access_log_enabled`).
#: Decided once per app: asking structlog's lazy logger would assemble a logger per request.
ACCESS_LOG = web.AppKey("aiport.access_log", bool)


def access_log_enabled(level: str) -> bool:
    """Request lines are logged at ``logging.level`` ``info`` or ``debug`` (a host app that
    mounts aiport filters them further with its own structlog setup)."""
    return getattr(logging, level.upper(), logging.INFO) <= logging.INFO


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id (``X-Request-Id``), bind it to every log line, log the outcome,
    and tell the ``REQUEST_END`` functions (metrics, limits) that it ended.

    The outermost middleware: it sees the status the client got (499: the client went away
    and the handler was cancelled).
    """
    incoming = request.headers.get("X-Request-Id", "")
    # Not a secret, just unique enough to follow one request through the logs: no urandom call.
    request_id = incoming if incoming and _VALID_ID.fullmatch(incoming) else f"{random.getrandbits(128):032x}"
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
    status = 499
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        raise
    except BaseException:
        status = 500
        raise
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
        seconds = time.perf_counter() - started
        if request.app[ACCESS_LOG]:
            query = request.query_string
            log.info(
                "request",
                request_id=request_id,
                method=request.method,
                path=request.path + "?" + _SECRET_QUERY.sub(r"\1****", query) if query else request.path,
                status=status,
                duration_ms=round(seconds * 1000, 2),
            )
        for ended in request.app[state.REQUEST_END]:
            try:
                ended(request, response, status, seconds)
            except Exception as exc:  # bookkeeping must not turn an answered request into an error
                log.error("a request-end function failed", function=repr(ended), error=repr(exc))


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error as the ``responseStatus`` envelope (plus OpenAI's ``error`` on /v1 APIs)."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason if exc.text is None or exc.text.startswith(f"{exc.status}:") else exc.text
        if exc.status == 404:
            message = f"No route matches {request.method} {request.path}."
        elif exc.status == 405:
            allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
            message = f"{request.method} is not allowed here" + (f"; use {allowed}." if allowed else ".")
        elif exc.status == 413:
            limit = request.app[state.CONFIG].server.max_upload_size
            message = f"The request body is larger than the {limit} bytes this server accepts."
        err = error_for_status(exc.status, message)
        response = error_response(request, err)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error", method=request.method, path=request.path)
        return error_response(request, InternalError("An internal error occurred; it has been logged."))


def error_response(request: web.Request, exc: ApiError) -> web.Response:
    body = exc.to_wire()
    if request.get(OPENAI_ERRORS):
        body["error"] = {
            "message": exc.message,
            "type": "invalid_request_error" if 400 <= exc.status < 500 else "api_error",
            "param": exc.errors[0].field_name if exc.errors else None,
            "code": exc.error_code,
        }
    response = web.Response(text=dumps(body), status=exc.status, content_type="application/json")
    response.headers.update(exc.headers)
    return response


def cors(allow_origins: list[str], allow_headers: list[str], allow_credentials: bool,
         max_age: int) -> tuple[Callable[[web.Request, Handler], Awaitable[web.StreamResponse]],
                                Callable[[web.Request, web.StreamResponse], Awaitable[None]]]:
    """CORS for browser apps from ``allow_origins`` (``*`` allows any origin).

    Returns the preflight middleware and an ``on_response_prepare`` hook; the hook
    adds the headers to every response, streamed ones included.
    """
    any_origin = "*" in allow_origins
    origins = set(allow_origins)
    headers = ", ".join(allow_headers)

    def allowed_origin(request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        return origin if origin is not None and (any_origin or origin in origins) else None

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
                and allowed_origin(request)):
            response = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = headers
            response.headers["Access-Control-Max-Age"] = str(max_age)
            return response
        return await handler(request)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        origin = allowed_origin(request)
        if origin is None:
            return
        response.headers["Access-Control-Allow-Origin"] = "*" if any_origin and not allow_credentials else origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Expose-Headers"] = "X-Request-Id, X-Aiport-Provider, Retry-After"
        if allow_credentials:
            response.headers["Access-Control-Allow-Credentials"] = "true"

    return preflight, add_headers


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: echo the request id on every response, streamed ones included."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["X-Request-Id"] = request_id
