"""Admin responses without secrets.

Keys are shown masked (``sk-****ab``), options that look like secrets too, and
every admin response is scrubbed of every known secret value before it is sent
(an upstream error message echoing a key, say).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ..config import Secret
from ..execution.provider_secrets import known_secrets
from ..execution.provider_store import SECRET_OPTION
from ..jsoncodec import dumps
from .dto import to_wire


def mask(value: str | None) -> str | None:
    """How a secret is shown: enough to tell which one it is, never enough to use it."""
    return None if not value else Secret(value).masked()


def mask_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Provider options with the values of secret-looking ones masked."""
    return {k: (mask(str(v)) if SECRET_OPTION.search(k) and v else v) for k, v in options.items()}


def scrubbed_response(request: web.Request, result: Any, status: int = 200) -> web.Response:
    """A JSON response with every known secret value masked, whatever carried it."""
    text = dumps(to_wire(result))
    for secret in known_secrets(request.app):
        masked = Secret(secret).masked()
        # As written, and as JSON escapes it (a secret with a quote or a backslash).
        for form in {secret, json.dumps(secret)[1:-1]}:
            if form in text:
                text = text.replace(form, masked)
    return web.Response(text=text, status=status, content_type="application/json")
