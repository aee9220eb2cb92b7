"""A plugin that registers a chat type name another plugin (hook_plugins) already uses."""

from typing import Any

from aiport.core.hookspecs import hookimpl
from aiport.core.registry import ChatProviderType


@hookimpl
def register_chat_providers(register: Any) -> None:
    register(ChatProviderType(name="reverse", factory=lambda ctx: None))
