"""aiport's core: the aiohttp app factory, hookspecs, config, and AI Server's wire conventions.

Plugin authors need :data:`hookimpl` and the descriptor classes in
:mod:`aiport.core.registry`; embedders need :func:`create_app` and
:func:`load_config`.
"""

from .app import create_app
from .config import Config, load_config, parse_config
from .hookspecs import hookimpl

__all__ = ["Config", "create_app", "hookimpl", "load_config", "parse_config"]
