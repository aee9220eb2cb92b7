"""Per-key rate limits and the slow-down of repeated authentication failures.

Everything is in memory, per process, and O(1) per request:

- **Requests per minute**: a token bucket per key holding up to ``rpm`` requests and
  refilling at ``rpm / 60`` a second, so a key may burst up to its per-minute budget
  and then gets one request every ``60 / rpm`` seconds.
- **Concurrent requests**: a counter per key, taken when a request is authorised and
  given back when its response has ended (streams included: the middleware below
  releases it after the last byte, or when the client goes away).
- **Chat tokens per minute**: the prompt and completion tokens of each finished
  request are added to a one-minute sliding window per key (the job-store observer in
  :mod:`aiport.core.http.metrics` reports them); while a key's window holds ``tpm`` tokens
  or more, its new chat requests are refused. A request is never cut off midway: the
  tokens are only known once it has finished.
- **Failed authentication**: after :data:`FAIL_THRESHOLD` refused credentials from one
  address within :data:`FAIL_WINDOW` seconds, the address gets 429 for any request
  that carries a credential, for 1 s, then 2 s, 4 s ... (up to :data:`MAX_LOCK`) with
  each further failure. During a lock-out no credential is checked at all.

Refusals are 429 ``TooManyRequests`` with ``Retry-After`` (whole seconds).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from .. import state
from ..errors import TooManyRequests

if TYPE_CHECKING:
    from .auth import Principal

#: APIs that spend chat tokens, refused while a key is over its tokens-per-minute budget.
TOKEN_APIS = frozenset({"OpenAiChatCompletion", "QueueOpenAiChatCompletion", "OllamaGeneration",
                        "QueueOllamaGeneration"})
FAIL_THRESHOLD = 5
FAIL_WINDOW = 60.0
MAX_LOCK = 300.0
#: Addresses remembered before stale ones are swept.
MAX_ADDRESSES = 10_000
TOKEN_WINDOW = 60.0


def too_many(message: str, retry_after: float) -> TooManyRequests:
    return TooManyRequests(message, headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class _TokenWindow:
    """Tokens spent in the last minute: ``(time, tokens)`` entries and their running total."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: collections.deque[tuple[float, int]] = collections.deque()
        self.total = 0

    def expire(self, now: float) -> None:
        while self.entries and self.entries[0][0] <= now - TOKEN_WINDOW:
            self.total -= self.entries.popleft()[1]

    def add(self, now: float, tokens: int) -> None:
        self.expire(now)
        self.entries.append((now, tokens))
        self.total += tokens

    def wait_until_below(self, limit: int, now: float) -> float:
        """Seconds until the window holds fewer than ``limit`` tokens."""
        remaining = self.total
        for at, tokens in self.entries:
            remaining -= tokens
            if remaining < limit:
                return at + TOKEN_WINDOW - now
        return TOKEN_WINDOW


class _Failures:
    __slots__ = ("count", "last", "locked_until")

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.locked_until = 0.0


class Limiter:
    """The limits of one app. ``clock`` returns seconds (the app's clock as a timestamp)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._buckets: dict[int, _Bucket] = {}
        self._running: dict[int, int] = {}
        self._tokens: dict[int, _TokenWindow] = {}
        self._failures: dict[str, _Failures] = {}
        #: Requests refused, by reason (``rpm``, ``concurrency``, ``tpm``, ``auth``), for metrics.
        self.refused: dict[str, int] = {}
        #: Credentials refused (401), for metrics.
        self.auth_failures = 0

    # ------------------------------------------------------------------ per-key limits

    def admit(self, request: web.Request, principal: Principal, api: str) -> None:
        """Let a key's request through or raise 429. Nothing is consumed by a refused request."""
        key = principal.key_id
        now = self.clock()
        if principal.tpm and api in TOKEN_APIS:
            window = self._tokens.get(key)
            if window is not None:
                window.expire(now)
                if window.total >= principal.tpm:
                    self._refuse("tpm")
                    raise too_many(f"This API key used its {principal.tpm} tokens per minute; retry later.",
                                   window.wait_until_below(principal.tpm, now))
        holds = request.get(HELD) is not None
        if principal.concurrency and not holds and self._running.get(key, 0) >= principal.concurrency:
            self._refuse("concurrency")
            raise too_many(f"This API key already has {principal.concurrency} requests running; "
                           "retry when one has finished.", 1)
        if principal.rpm:
            rate = principal.rpm / 60.0
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(principal.rpm), now)
            bucket.tokens = min(float(principal.rpm), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens < 1.0:
                self._refuse("rpm")
                raise too_many(f"This API key may make {principal.rpm} requests per minute; retry later.",
                               (1.0 - bucket.tokens) / rate)
            bucket.tokens -= 1.0
        if principal.concurrency and not holds:
            self._running[key] = self._running.get(key, 0) + 1
            request[HELD] = key

    def release(self, key: int) -> None:
        """A request holding one of ``key``'s concurrent places has ended."""
        left = self._running.get(key, 0) - 1
        if left > 0:
            self._running[key] = left
        else:
            self._running.pop(key, None)

    def running(self, key: int) -> int:
        return self._running.get(key, 0)

    def add_tokens(self, key: int, tokens: int) -> None:
        """Count the tokens a finished request of ``key`` spent."""
        if key and tokens > 0:
            window = self._tokens.get(key)
            if window is None:
                window = self._tokens[key] = _TokenWindow()
            window.add(self.clock(), tokens)

    def tokens_used(self, key: int) -> int:
        window = self._tokens.get(key)
        if window is None:
            return 0
        window.expire(self.clock())
        return window.total

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    # ------------------------------------------------------------------ failed authentication

    def check_address(self, address: str) -> None:
        """Raise 429 while ``address`` is locked out after repeated failures."""
        failures = self._failures.get(address)
        if failures is None:
            return
        now = self.clock()
        if now < failures.locked_until:
            self._refuse("auth")
            raise too_many("Too many failed authentication attempts from this address; retry later.",
                           failures.locked_until - now)

    def auth_failed(self, address: str) -> None:
        """A credential from ``address`` was refused."""
        self.auth_failures += 1
        now = self.clock()
        failures = self._failures.get(address)
        if failures is None:
            if len(self._failures) >= MAX_ADDRESSES:
                self._sweep(now)
            failures = self._failures[address] = _Failures()
        # The count decays only after a quiet window that starts once any lock-out is over,
        # so a long lock-out does not reset the count by itself.
        if now - max(failures.last, failures.locked_until) > FAIL_WINDOW:
            failures.count = 0
        failures.count += 1
        failures.last = now
        if failures.count >= FAIL_THRESHOLD:
            failures.locked_until = now + min(2.0 ** (failures.count - FAIL_THRESHOLD), MAX_LOCK)

    def _sweep(self, now: float) -> None:
        stale = [a for a, f in self._failures.items() if now - max(f.last, f.locked_until) > FAIL_WINDOW]
        for address in stale:
            del self._failures[address]
        if len(self._failures) >= MAX_ADDRESSES:  # all of them busy: forget the lot rather than grow
            self._failures.clear()


LIMITER = web.AppKey("aiport.limiter", Limiter)
#: The key id whose concurrent place a request holds (released when the response ends).
HELD = web.RequestKey("aiport.limit_held", int)


def release_places(request: web.Request, response: web.StreamResponse | None, status: int,
                   seconds: float) -> None:
    """Give back the concurrent place a request took, once its response has ended (a
    ``REQUEST_END`` function)."""
    key = request.get(HELD)
    if key is not None:
        request.app[LIMITER].release(key)


def install(app: web.Application) -> None:
    """Create the app's limiter (on the app's clock) and its release middleware."""
    clock = app[state.CLOCK]
    app[LIMITER] = Limiter(lambda: clock().timestamp())
    app[state.REQUEST_END].append(release_places)
