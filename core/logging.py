"""Logging set-up for the ``aiport`` command (library code only calls ``structlog.get_logger()``).

Lines are JSON in production and readable in a terminal; every line written
while a request is handled carries its ``request_id``. Secrets never reach the
output: values under secret-looking keys are masked, and so is any known secret
(provider keys, the admin secret) wherever it appears in a line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = re.compile(r"(api[_-]?key|authorization|secret|password|passwd|token|signature|cookie)",
                          re.IGNORECASE)
MASK = "****"


class RedactSecrets:
    """structlog processor masking secret-named fields and known secret values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, MASK)
            return value
        if isinstance(value, dict):
            return {k: (MASK if _SECRET_KEYS.search(str(k)) and v else self._scrub(v)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event):
            value = event[key]
            if _SECRET_KEYS.search(key) and value:
                event[key] = MASK
            else:
                event[key] = self._scrub(value)
        return event


def configure_logging(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = (),
                      stream: Any = None, cache: bool = True) -> None:
    """Configure structlog (and stdlib logging, for aiohttp's and other libraries' lines)."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    numeric = getattr(logging, level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        RedactSecrets(secrets),
    ]
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=False) if fmt == "console"
                     else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=cache,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
