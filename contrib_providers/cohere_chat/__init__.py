"""Sample third-party plugin: a ``cohere`` chat provider type for Cohere's Chat API v2.

aiport's core never imports this package. It is found the way any pip-installed
plugin is found, through the distribution's entry point::

    [project.entry-points.aiport]
    cohere_chat = "aiport.contrib_providers.cohere_chat"

pluggy imports the module, registers it as the plugin ``cohere_chat`` and calls
its hook implementations; the only one here is :func:`register_chat_providers`.
Block it with ``plugins: {disable: [cohere_chat]}``. See
``docs/writing-a-plugin.md`` for a walkthrough of this package.
"""

from __future__ import annotations

from collections.abc import Callable

from aiport.core import hookimpl
from aiport.core.registry import ChatProviderType

from .provider import DEFAULT_BASE_URL, CohereChatProvider, CohereOptions

__all__ = ["API_MODELS", "CohereChatProvider", "CohereOptions", "register_chat_providers"]

#: Catalog data: gateway model id -> Cohere's model id.
API_MODELS: dict[str, str] = {
    "command-r": "command-r-08-2024",
    "command-r-plus": "command-r-plus-08-2024",
    "command-r7b": "command-r7b-12-2024",
    "command-a": "command-a-03-2025",
}


@hookimpl
def register_chat_providers(register: Callable[[ChatProviderType], None]) -> None:
    """Contribute the ``cohere`` provider type (sync and without I/O, as every registration hook)."""
    register(
        ChatProviderType(
            name="cohere",
            factory=CohereChatProvider.from_context,
            options=CohereOptions,
            description="Cohere Chat API v2 (Command models): chat, streaming, tool calls, JSON output",
            default_base_url=DEFAULT_BASE_URL,
            api_models=API_MODELS,
        )
    )
