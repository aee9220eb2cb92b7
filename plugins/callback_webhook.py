"""The built-in callback strategy: POST the result to the ``ReplyTo`` URL, signed, retried.

Each delivery is its own durable job on the ``callbacks`` queue, so a receiver
that is down gets the result later (exponential backoff, ``jobs.callback_attempts``
tries) and a restart loses nothing. Delivery is at-least-once: a crash after the
receiver answered but before the delivery was recorded sends it again, with the
same ``X-Aiport-Delivery`` id, so receivers can drop the duplicate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import aiohttp
from aiport.core.config import Config
from aiport.core.errors import ProviderError
from aiport.core.hookspecs import hookimpl
from aiport.core.jobs.callbacks import check_reply_to
from aiport.core.registry import CallbackStrategyType


def accepts(reply_to: str) -> bool:
    text = reply_to.strip().lower()
    return "http://" in text or "https://" in text


class WebhookDelivery:
    """Sends one callback over HTTP; any non-2xx answer or network error is retried."""

    def __init__(self, config: Config, http: aiohttp.ClientSession) -> None:
        self.allow_private = config.jobs.allow_private_callbacks
        self.http = http
        self.timeout = aiohttp.ClientTimeout(total=30)

    async def deliver(self, reply_to: str, body: bytes, headers: Mapping[str, str]) -> None:
        # Checked again at delivery: the name may resolve elsewhere now (DNS rebinding).
        target = await check_reply_to(reply_to, allow_private=self.allow_private)
        try:
            async with self.http.request(target.method, target.url, data=body,
                                         headers={**headers, **target.headers}, timeout=self.timeout,
                                         allow_redirects=False) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    raise ProviderError(f"The ReplyTo receiver answered HTTP {resp.status}.", provider="webhook",
                                        upstream_status=resp.status, retryable=True,
                                        error_code="CallbackFailed")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderError(f"The ReplyTo receiver could not be reached: {type(exc).__name__}.",
                                provider="webhook", retryable=True, error_code="CallbackFailed") from None


@hookimpl
def register_callback_strategies(register: Callable[[CallbackStrategyType], None]) -> None:
    register(CallbackStrategyType(name="webhook", accepts=accepts, factory=WebhookDelivery,
                                  description="HTTP POST (or METHOD) to the ReplyTo URL, HMAC-signed"))


