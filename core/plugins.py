"""Loading plugins: built-ins, entry points, and modules named in the config.

There is one :class:`pluggy.PluginManager` per app instance, made by
:func:`build_plugin_manager`; nothing here is global.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .config import PluginsConfig
from .errors import PluginError

#: The built-in plugins, loaded first, in this order. Each is an ordinary plugin
#: module; its plugin name is the last part of its dotted name.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "aiport.plugins.jobstore_sqlite",
    "aiport.plugins.callback_webhook",
    "aiport.plugins.models_catalog",
    "aiport.plugins.routing_strategies",
    "aiport.plugins.transforms_image",
    "aiport.plugins.transforms_ffmpeg",
    "aiport.plugins.artifacts_local",
    "aiport.plugins.chat_openai",
    "aiport.plugins.chat_ollama",
    "aiport.plugins.chat_anthropic",
    "aiport.plugins.chat_gemini",
    "aiport.plugins.media_replicate",
    "aiport.plugins.media_openai",
    "aiport.plugins.media_comfyui",
    "aiport.plugins.speech_espeak",
    "aiport.plugins.speech_whisper",
)

#: Modules of ``aiport.plugins`` that are not plugins but helpers the built-in plugins share
#: (a plugin imports no other plugin, only these). They implement no hook.
PLUGIN_HELPER_MODULES: tuple[str, ...] = (
    "aiport.plugins.chat_common",
    "aiport.plugins.chat_catalog",
    "aiport.plugins.media_common",
    "aiport.plugins.comfyui_workflows",
    "aiport.plugins.imaging",
)

#: Entry-point group third-party plugins advertise themselves in.
ENTRY_POINT_GROUP = "aiport"


def builtin_name(module_name: str) -> str:
    return module_name.rsplit(".", 1)[-1]


def build_plugin_manager(
    plugins: PluginsConfig | None = None,
    *,
    default_plugins: tuple[str, ...] = DEFAULT_PLUGINS,
    entry_points: bool = True,
) -> pluggy.PluginManager:
    """Make a plugin manager with aiport's hookspecs and load every plugin.

    Order: built-ins from ``default_plugins``, then the ``aiport`` entry-point
    group, then ``plugins.load``. A name in ``plugins.disable`` is blocked
    wherever it would come from.
    """
    plugins = plugins or PluginsConfig()
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    known = set(default_plugins_names(default_plugins))
    for name in plugins.disable:
        pm.set_blocked(name)
    for module_name in default_plugins:
        if not pm.is_blocked(builtin_name(module_name)):  # a disabled built-in is not even imported
            _register(pm, _import(module_name, "built-in plugin"), builtin_name(module_name))
    if entry_points:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except ValueError as exc:  # pluggy: a plugin name registered twice
            raise PluginError(f"entry point in group {ENTRY_POINT_GROUP!r}: {exc}") from None
        except Exception as exc:
            raise PluginError(f"loading an {ENTRY_POINT_GROUP!r} entry-point plugin failed: {exc!r}") from exc
        known.update(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    for module_name in plugins.load:
        known.add(module_name)
        if not pm.is_blocked(module_name):
            _register(pm, _import(module_name, "plugin named in plugins.load"), module_name)
    unknown = [n for n in plugins.disable if n not in known]
    if unknown:
        raise PluginError(
            f"plugins.disable names {', '.join(map(repr, unknown))}, which is no known plugin; "
            f"known plugins: {', '.join(sorted(known)) or 'none'}"
        )
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r} implements a hook aiport does not have: {exc}") from None
    return pm


def default_plugins_names(default_plugins: tuple[str, ...]) -> list[str]:
    return [builtin_name(m) for m in default_plugins]


def _import(module_name: str, what: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(f"cannot import {what} {module_name!r}: {exc!r}") from exc


def _register(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    if pm.is_blocked(name):
        return
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r} is invalid: {exc}") from None
    except ValueError as exc:
        raise PluginError(f"plugin {name!r} cannot be registered: {exc}") from None


@attrs.frozen
class PluginInfo:
    """One loaded plugin, for ``aiport plugins`` and the admin APIs."""

    name: str
    source: str
    hooks: tuple[str, ...]
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "source": self.source, "hooks": list(self.hooks)}
        if self.version:
            data["version"] = self.version
        return data


def describe_plugins(pm: pluggy.PluginManager, default_plugins: tuple[str, ...] = DEFAULT_PLUGINS) -> list[PluginInfo]:
    """Which plugins are loaded, where each came from, and which hooks it implements."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    builtins = set(default_plugins_names(default_plugins))
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        dist = dists.get(id(plugin))
        if dist is not None:
            source, version = f"entry point ({dist.project_name})", dist.version
        elif name in builtins:
            source, version = "built-in", None
        else:
            source, version = "config (plugins.load)", None
        infos.append(PluginInfo(name=name, source=source, hooks=hooks, version=version))
    return infos
