"""aiport: a self-hosted AI gateway.

The distribution's root folders are its sub-packages: :mod:`aiport.core` (the
aiohttp application, hookspecs, config and wire conventions),
:mod:`aiport.plugins` (the built-in plugins) and :mod:`aiport.contrib_providers`
(sample third-party plugins, discovered through entry points).
"""

from aiport.core.version import __version__

__all__ = ["__version__"]
