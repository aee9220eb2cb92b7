"""The shapes of the objects plugins register (structural: any object with these methods works).

These are the contracts between aiport's core and its plugins. Everything here
is async where it may do I/O; nothing here may block the event loop (run
CPU-bound or blocking work with ``asyncio.to_thread`` or a process).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ChatProvider(Protocol):
    """One configured chat backend (made by a :class:`~aiport.core.registry.ChatProviderType` factory).

    Request and response bodies are OpenAI chat-completions JSON as dicts; the
    body's ``model`` is already the provider's own model id. A provider
    translates to and from its wire format and raises
    :class:`~aiport.core.errors.ProviderError` on failure (``retryable`` set for
    connection errors, timeouts, 429 and 5xx).
    """

    name: str

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed completion: an OpenAI ``chat.completion`` object."""
        ...

    def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """A streamed completion: OpenAI ``chat.completion.chunk`` objects, as they arrive.

        The last chunk carries ``usage`` when the backend reports it. Errors
        before the first chunk raise; errors after it raise too, and the caller
        ends the client's stream with an error event.
        """
        ...

    async def probe(self) -> None:
        """Raise :class:`~aiport.core.errors.ProviderError` unless the backend is healthy."""
        ...

    async def list_models(self) -> list[str]:
        """The provider-side model ids the backend offers right now."""
        ...

    async def aclose(self) -> None:
        """Release what the provider holds (called at app shut-down)."""
        ...


class ArtifactStore(Protocol):
    """Where generated files and uploaded inputs are kept, by relative path
    (``2026/11/21/{keyId}/{sha256}.png``, inputs under ``input/...``).

    Records are :class:`aiport.core.media.StoredArtifact` (what was stored) and
    :class:`aiport.core.media.ArtifactFile` (what is there, for serving). A malformed
    or escaping path raises ``BadRequest``/``NotFound``.
    """

    async def put_file(self, source: Any, *, ext: str, key_id: int, kind: str = "output",
                       sha256: str | None = None) -> Any:
        """Store ``source`` (a local path, moved in, or bytes) content-addressed; its ``StoredArtifact``."""
        ...

    async def put_at(self, path: str, source: Any) -> Any:
        """Store a local file at ``path`` itself (a derived file such as an image variant)."""
        ...

    async def stat(self, path: str) -> Any:
        """The ``ArtifactFile`` at ``path`` (with ``local_path`` when on this machine), or ``None``."""
        ...

    def iter_chunks(self, path: str) -> AsyncIterator[bytes]:
        """The stored bytes, for stores whose files are not on this machine."""
        ...

    async def delete(self, path: str) -> bool:
        """Delete the file at ``path``; ``False`` when it was not there."""
        ...


class CallbackStrategy(Protocol):
    """Delivers a finished job's result to its ``ReplyTo`` target."""

    async def deliver(self, reply_to: str, body: bytes, headers: Mapping[str, str]) -> None:
        """POST (or otherwise send) ``body``; raise to have the delivery retried."""
        ...
