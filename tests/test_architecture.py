"""The house rules of the layout (docs/architecture.md), checked on the source itself.

- core never imports a plugin (``aiport.plugins``) or a contrib provider;
- a plugin imports no other plugin, only the helper modules core names in
  ``PLUGIN_HELPER_MODULES`` (and its own package's modules); helpers import only helpers;
- contrib providers import core (its SDK), never ``aiport.plugins``;
- every module of ``plugins/`` is either a built-in plugin or a declared helper;
- the layers of core import downwards only (see ``LAYER_RULES``);
- no core file is over 600 lines;
- importing plugins does nothing (no environment change), and a disabled built-in is not imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from aiport.core.plugins import DEFAULT_PLUGINS, PLUGIN_HELPER_MODULES, build_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"core": "aiport.core", "plugins": "aiport.plugins", "contrib_providers": "aiport.contrib_providers"}
MAX_CORE_LINES = 600

#: layer -> the core layers it must not import (a lower layer never reaches up).
LAYER_RULES = {
    "aiport.core.jobs": ("aiport.core.http", "aiport.core.execution"),
    "aiport.core.execution": ("aiport.core.http",),
    "aiport.core.sdk": ("aiport.core.http", "aiport.core.jobs", "aiport.core.execution"),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [FOLDERS[rel.parts[0]], *rel.with_suffix("").parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> set[str]:
    """Every module ``source`` imports (relative imports resolved; ``from X import y`` gives
    ``X`` and ``X.y``, since ``y`` may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def source_modules(folder: str) -> dict[str, tuple[Path, set[str]]]:
    out = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        name = module_name(path)
        out[name] = (path, imports_of(path.read_text(), name, path.name == "__init__.py"))
    return out


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def owner_plugin(name: str) -> str:
    """The top-level module of ``aiport.plugins`` a module belongs to (a package plugin's own)."""
    return ".".join(name.split(".")[:3])


def layer_violations(modules: dict[str, tuple[Path, set[str]]]) -> list[str]:
    problems = []
    for name, (path, imported) in modules.items():
        for other in sorted(imported):
            if within(other, "aiport.plugins") or within(other, "aiport.contrib_providers"):
                problems.append(f"{path.relative_to(ROOT)} imports {other}")
            for layer, forbidden in LAYER_RULES.items():
                if within(name, layer) and any(within(other, f) for f in forbidden):
                    problems.append(f"{path.relative_to(ROOT)} ({layer}) imports {other}")
    return problems


def plugin_violations(modules: dict[str, tuple[Path, set[str]]], helpers: tuple[str, ...]) -> list[str]:
    problems = []
    for name, (path, imported) in modules.items():
        own = owner_plugin(name)
        for other in sorted(imported):
            if not within(other, "aiport.plugins") or other == "aiport.plugins":
                continue
            target = owner_plugin(other)
            if target != own and target not in helpers:
                problems.append(f"{path.relative_to(ROOT)} imports plugin {other}")
    return problems


def test_core_imports_no_plugin_and_layers_import_downwards() -> None:
    assert layer_violations(source_modules("core")) == []


def test_plugins_import_only_helper_modules() -> None:
    assert plugin_violations(source_modules("plugins"), PLUGIN_HELPER_MODULES) == []


def test_contrib_providers_import_no_builtin_plugin() -> None:
    problems = [f"{path.relative_to(ROOT)} imports {other}"
                for path, imported in source_modules("contrib_providers").values()
                for other in sorted(imported) if within(other, "aiport.plugins")]
    assert problems == []


def test_every_plugins_module_is_a_plugin_or_a_declared_helper() -> None:
    tops = {owner_plugin(name) for name in source_modules("plugins") if name != "aiport.plugins"}
    assert sorted(tops - set(DEFAULT_PLUGINS) - set(PLUGIN_HELPER_MODULES)) == []
    assert not set(DEFAULT_PLUGINS) & set(PLUGIN_HELPER_MODULES)


def test_the_checks_catch_a_forbidden_import(tmp_path: Path) -> None:
    """The rules above must fail on the imports they forbid (else they prove nothing)."""
    core_file = ROOT / "core" / "http" / "chat.py"
    forged = {"aiport.core.http.chat": (core_file, imports_of(
        "from ...plugins import chat_openai\n", "aiport.core.http.chat", False))}
    assert layer_violations(forged) == ["core/http/chat.py imports aiport.plugins",
                                        "core/http/chat.py imports aiport.plugins.chat_openai"]
    upward = {"aiport.core.jobs.engine": (ROOT / "core/jobs/engine.py", imports_of(
        "from ..http.routes import add_api\n", "aiport.core.jobs.engine", False))}
    assert layer_violations(upward)
    plugin_file = ROOT / "plugins" / "transforms_ffmpeg.py"
    forged = {"aiport.plugins.transforms_ffmpeg": (plugin_file, imports_of(
        "from aiport.plugins import transforms_image\n", "aiport.plugins.transforms_ffmpeg", False))}
    assert plugin_violations(forged, PLUGIN_HELPER_MODULES) == [
        "plugins/transforms_ffmpeg.py imports plugin aiport.plugins.transforms_image"]
    helper = {"aiport.plugins.chat_openai": (ROOT / "plugins/chat_openai.py", imports_of(
        "from .chat_common import HttpOptions\n", "aiport.plugins.chat_openai", False))}
    assert plugin_violations(helper, PLUGIN_HELPER_MODULES) == []


@pytest.mark.parametrize("path", sorted((ROOT / "core").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_files_stay_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_CORE_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by concern"


def test_importing_every_plugin_changes_nothing() -> None:
    """Plugins do their work when the app runs, never when they are imported."""
    modules = [*DEFAULT_PLUGINS, *PLUGIN_HELPER_MODULES]
    code = ("import importlib, os, sys\n"
            "before = dict(os.environ)\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
            "print(changed)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_disabled_builtin_is_not_imported() -> None:
    """A plugin turned off in the config never runs a line of its module."""
    code = ("import sys\n"
            "from aiport.core.config import PluginsConfig\n"
            "from aiport.core.plugins import build_plugin_manager\n"
            "build_plugin_manager(PluginsConfig(disable=['speech_whisper']), entry_points=False)\n"
            "print('aiport.plugins.speech_whisper' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert build_plugin_manager(entry_points=False).get_plugin("speech_whisper") is not None
