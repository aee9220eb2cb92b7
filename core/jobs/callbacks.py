"""``ReplyTo``: parsing AI Server's callback URL conventions, the SSRF guard, and signing.

A ``ReplyTo`` is a URL with optional prefixes (AI Server / ServiceStack conventions):

- ``PUT https://...`` sends with that method (default POST);
- ``https://user:pass@host/...`` sends HTTP Basic auth;
- ``token@https://...`` sends ``Authorization: Bearer token``;
- ``http.X-Key:value@https://...`` sends the header ``X-Key: value``.

ServiceStack's ``$ENV`` substitution is deliberately not supported: it would let
any key holder send the server's environment (provider keys) to a URL of theirs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import socket
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from yarl import URL

from ..errors import BadRequest, FieldError, ValidationFailed
from .executor import Executor, JobContext
from .model import Job, JobResult, JobState

METHODS = ("POST", "PUT", "PATCH")


@attrs.frozen
class ReplyTarget:
    method: str
    url: URL
    headers: Mapping[str, str] = attrs.field(factory=dict)


def parse_reply_to(reply_to: str) -> ReplyTarget:
    """Split a ``ReplyTo`` into method, URL and auth headers; ``BadRequest`` when malformed."""
    text = reply_to.strip()
    method = "POST"
    first, _, rest = text.partition(" ")
    if rest and first.upper() in METHODS:
        method, text = first.upper(), rest.strip()
    headers: dict[str, str] = {}
    at = text.find("@http")
    if at > 0 and "://" not in text[:at]:
        prefix, text = text[:at], text[at + 1:]
        if prefix.startswith("http.") and ":" in prefix:
            name, _, value = prefix[5:].partition(":")
            if not name or any(c in name for c in " \r\n:"):
                raise _invalid("The ReplyTo header prefix must look like http.X-Header:value@https://...")
            headers[name] = value
        else:
            headers["Authorization"] = f"Bearer {prefix}"
    try:
        url = URL(text)
    except ValueError:
        raise _invalid("ReplyTo is not a valid URL.") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise _invalid("ReplyTo must be an http:// or https:// URL.")
    if any(c in v for v in headers.values() for c in "\r\n"):
        raise _invalid("ReplyTo headers may not contain line breaks.")
    return ReplyTarget(method=method, url=url, headers=headers)


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed([FieldError("InvalidReplyTo", "ReplyTo", message)])


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT))


_CGNAT = ipaddress.ip_network("100.64.0.0/10")


async def check_reply_to(reply_to: str, *, allow_private: bool) -> ReplyTarget:
    """Parse ``reply_to`` and, unless ``allow_private``, refuse hosts that resolve to loopback,
    link-local, private or otherwise non-public addresses (SSRF guard)."""
    target = parse_reply_to(reply_to)
    if allow_private:
        return target
    host = target.url.host or ""
    try:
        addresses = [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, target.url.port or 443,
                                                                 type=socket.SOCK_STREAM)
        except OSError:
            raise _invalid(f"The ReplyTo host {host!r} cannot be resolved.") from None
        addresses = [str(info[4][0]) for info in infos]
    if not addresses or not all(_is_public(a) for a in addresses):
        raise ValidationFailed([FieldError(
            "ForbiddenReplyTo", "ReplyTo",
            f"ReplyTo {host!r} is a loopback, link-local or private address; callbacks go to public "
            "addresses only (an admin can allow private ones with jobs.allow_private_callbacks).")])
    return target


def sign(body: bytes, key: str) -> str:
    """The ``X-Aiport-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str, key: str) -> bool:
    """How a receiver checks a callback (constant-time)."""
    return hmac.compare_digest(sign(body, key), signature)


def encode_body(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class CallbackExecutor(Executor):
    """Delivers a ``Callback`` job: the body, signed, through the first strategy that accepts the URL."""

    def __init__(self, strategies: list[tuple[str, Callable[[str], bool], Any]], signing_key: str | None,
                 user_agent: str) -> None:
        self.strategies = strategies
        self.signing_key = signing_key
        self.user_agent = user_agent

    async def run(self, job: Job, ctx: JobContext) -> JobResult:
        request = job.request
        reply_to = str(request["replyTo"])
        body = encode_body(request["body"])
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self.user_agent,
            # Same id on every attempt: a receiver drops a repeat it has already seen.
            "X-Aiport-Delivery": job.ref_id,
            "X-Aiport-Job-Id": str(request.get("parentId", "")),
            "X-Aiport-Ref-Id": str(request.get("parentRefId", "")),
            "X-Aiport-Attempt": str(job.attempts),
        }
        if self.signing_key:
            headers["X-Aiport-Signature"] = sign(body, self.signing_key)
        for name, accepts, deliverer in self.strategies:
            if accepts(reply_to):
                await deliverer.deliver(reply_to, body, headers)
                return JobResult(response={"delivered": True, "strategy": name, "attempts": job.attempts})
        raise BadRequest(f"No callback strategy accepts ReplyTo {reply_to[:100]!r}.")

    def provider_of(self, job: Job) -> str | None:
        return None


def generation_callback_body(job: Job, results: list[Mapping[str, Any]], *, text: bool) -> dict[str, Any]:
    """AI Server's generation callback: ``{state, refId, outputs|textOutputs, responseStatus}``."""
    body: dict[str, Any] = {"jobId": job.id, "refId": job.ref_id, "state": job.state.value}
    if job.state == JobState.COMPLETED:
        if text:
            body["textOutputs"] = [{"text": r.get("text", "")} for r in results]
        else:
            body["outputs"] = [{"fileName": r.get("fileName") or r.get("path", "").rsplit("/", 1)[-1],
                                "url": r.get("url") or f"/artifacts/{r.get('path', '')}",
                                **({"outputFormat": r["outputFormat"]} if r.get("outputFormat") else {})}
                               for r in results]
    if job.error:
        body["responseStatus"] = dict(job.error)
    return body


# --------------------------------------------------------------------------- sync media results
