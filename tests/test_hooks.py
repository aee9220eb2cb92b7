"""One ``test_hook_<name>`` per hookspec, plus meta-tests that keep hooks, tests and docs in step."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import aiohttp
import hook_plugins
import pytest
from aiport.core import create_app, hookspecs
from aiport.core.config import PluginsConfig
from aiport.core.errors import ConfigError, PluginError
from aiport.core.execution.providers import resolve_providers
from aiport.core.plugins import build_plugin_manager
from aiport.core.registry import TransformSpec, collect

ROOT = Path(__file__).resolve().parent.parent
HOOK_NAMES = sorted(
    name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if getattr(fn, "aiport_spec", None) is not None
)
LOAD = {"plugins": {"load": ["hook_plugins"]}}


def registry_for(make_config: Any, data: dict[str, Any] | None = None) -> Any:
    config = make_config({**LOAD, **(data or {})})
    return collect(build_plugin_manager(config.plugins), config)


# --------------------------------------------------------------------------- meta-tests


def test_every_hookspec_has_a_test() -> None:
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    missing = [n for n in HOOK_NAMES if not re.search(rf"def test_hook_{n}\b", tests)]
    assert HOOK_NAMES, "no hookspecs found"
    assert not missing, f"hookspecs without a test_hook_<name>: {missing}"


def test_every_hookspec_is_documented() -> None:
    docs = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    missing = [n for n in HOOK_NAMES if not re.search(rf"^#+ .*`?{n}`?", docs, re.MULTILINE)]
    assert not missing, f"hookspecs without a section in docs/: {missing}"


def test_every_hookspec_is_documented_in_code() -> None:
    for name in HOOK_NAMES:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert ":param register:" in doc and ":returns:" in doc and "Called" in doc, name


# --------------------------------------------------------------------------- one test per hook


def test_hook_register_chat_providers(make_config: Any) -> None:
    registry = registry_for(make_config)
    assert registry.chat_providers["reverse"].api_models == {"rev-1": "reverse-v1"}
    config = make_config({**LOAD, "providers": [{"name": "r", "type": "reverse", "uppercase": True}]})
    (provider,) = [p for p in resolve_providers(config, collect(build_plugin_manager(config.plugins), config), {})
                   if p.config.name == "r"]
    assert provider.kind == "chat" and provider.options == hook_plugins.ReverseOptions(uppercase=True)
    bad = make_config({**LOAD, "providers": [{"name": "r", "type": "reverse", "uppercase": "very"}]})
    with pytest.raises(ConfigError, match=r"providers\[0\]\.uppercase: expected true or false"):
        resolve_providers(bad, collect(build_plugin_manager(bad.plugins), bad), {})


async def test_hook_register_models(make_client: Any) -> None:
    client = await make_client({"plugins": {"load": ["hook_plugins", "scripted_provider"]},
                                "models": [{"id": "house-model", "tags": ["v1", "v2"], "latest": "v2"}],
                                "providers": [{"name": "s", "type": "scripted",
                                               "models": ["tinyllm", "house-model:v2"]}]})
    assert (await (await client.get("/api/ActiveAiModels")).json())["results"] == ["house-model:v2", "tinyllm:2b"]
    cases = (("tinyllm", "tinyllm:2b"), ("tinyllm:latest", "tinyllm:2b"), ("house-model", "house-model:v2"))
    for asked, served in cases:
        resp = await client.post("/v1/chat/completions", json={"model": asked,
                                                               "messages": [{"role": "user", "content": "x"}]})
        assert (await resp.json())["model"] == served
    resp = await client.post("/v1/chat/completions", json={"model": "tinyllm:9b",
                                                           "messages": [{"role": "user", "content": "x"}]})
    assert resp.status == 404 and "tinyllm:1b, tinyllm:2b" in (await resp.json())["responseStatus"]["message"]


async def test_hook_register_routing_strategies(make_client: Any) -> None:
    client = await make_client({"plugins": {"load": ["hook_plugins", "scripted_provider"]},
                                "routing": {"strategy": "last-first"},
                                "providers": [{"name": "one", "type": "scripted", "models": ["m"]},
                                              {"name": "two", "type": "scripted", "models": ["m"]}]})
    resp = await client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user",
                                                                                        "content": "x"}]})
    assert resp.headers["X-Aiport-Provider"] == "two"
    with pytest.raises(ConfigError, match=r"routing\.strategy: no plugin provides the strategy 'nope'"):
        create_app(make_config_for_strategy("nope"))


def make_config_for_strategy(name: str) -> Any:
    from aiport.core import parse_config

    return parse_config({"routing": {"strategy": name}}, environ={})


def test_hook_register_media_providers(make_config: Any) -> None:
    registry = registry_for(make_config)
    assert registry.media_providers["test-media"].tasks == {"TextToImage"}
    config = make_config({**LOAD, "providers": [{"name": "m", "type": "test-media"}]})
    (provider,) = [p for p in resolve_providers(config, collect(build_plugin_manager(config.plugins), config), {})
                   if p.config.name == "m"]
    assert provider.kind == "media"


def test_hook_register_workflows(make_config: Any) -> None:
    workflow = registry_for(make_config).workflows["test-t2i"]
    assert workflow.task == "TextToImage" and workflow.defaults == {"seed": 1}


async def test_hook_register_transforms(make_config: Any, make_client: Any) -> None:
    spec = registry_for(make_config).transforms["InvertImage"]
    # One image upload and no fields is what a spec of a name, a kind and a run means.
    assert (spec.kind, spec.uploads, spec.fields) == ("image", ("image",), None)
    client = await make_client(LOAD)
    for api in ("InvertImage", "QueueInvertImage"):
        resp = await client.post(f"/api/{api}", json={"RefId": f"none-{api}"})
        body = await resp.json()
        assert resp.status == 400 and [e["fieldName"] for e in body["responseStatus"]["errors"]] == ["Image"]
    data = aiohttp.FormData()
    data.add_field("image", b"\x89PNG\r\n\x1a\n", filename="x.png")
    resp = await client.post("/api/InvertImage", data=data)
    body = await resp.json()
    assert resp.status == 200 and body["results"] == [], body  # the test transform writes nothing
    schema = (await (await client.get("/openapi.json")).json())["components"]["schemas"]["InvertImage"]
    assert list(schema["properties"]) == ["RefId", "Tag", "ReplyTo", "Image"]


def test_a_transform_spec_checks_its_request_declaration() -> None:
    with pytest.raises(TypeError, match="fields must be an attrs class"):
        TransformSpec(name="X", kind="image", run=hook_plugins._invert, fields=dict)
    with pytest.raises(TypeError, match="uploads must name"):
        TransformSpec(name="X", kind="image", run=hook_plugins._invert, uploads=("Image",))
    assert TransformSpec(name="X", kind="video", run=hook_plugins._invert, uploads="clip").uploads == ("clip",)


def test_hook_register_artifact_stores(make_config: Any) -> None:
    assert "memory" in registry_for(make_config).artifact_stores


def test_hook_register_job_stores(make_config: Any) -> None:
    assert "memory" in registry_for(make_config).job_stores


def test_hook_register_callback_strategies(make_config: Any) -> None:
    strategy = registry_for(make_config).callback_strategies["mailto"]
    assert strategy.accepts("mailto:ops@example.com") and not strategy.accepts("https://x")


async def test_hook_register_routes(make_client: Any) -> None:
    client = await make_client(LOAD)
    resp = await client.post("/api/Shout", json={"TEXT": "hi", "times": 2})
    assert resp.status == 200
    assert await resp.json() == {"text": "HI HI", "length": 5}
    resp = await client.get("/shout/hey")
    assert (await resp.json())["text"] == "HEY"
    resp = await client.post("/api/Shout", json={"times": 9})
    body = await resp.json()
    assert resp.status == 400
    assert [e["fieldName"] for e in body["responseStatus"]["errors"]] == ["Text", "Times"]
    assert await (await client.get("/ping")).text() == "pong"
    paths = (await (await client.get("/openapi.json")).json())["paths"]
    assert {"/api/Shout", "/shout/{Text}", "/ping"} <= set(paths)


async def test_hook_register_resources(make_config: Any, aiohttp_client: Any) -> None:
    hook_plugins.EVENTS.clear()
    client = await aiohttp_client(create_app(make_config(LOAD)))
    assert hook_plugins.EVENTS == ["start"]
    await client.close()
    assert hook_plugins.EVENTS == ["start", "stop"]


# --------------------------------------------------------------------------- registration rules


def test_duplicate_names_are_rejected_naming_both_plugins(make_config: Any) -> None:
    config = make_config({"plugins": {"load": ["hook_plugins", "dup_plugin"]}})
    with pytest.raises(PluginError, match=r"'reverse' is registered twice: by plugin 'hook_plugins' "
                                          r"and by plugin 'dup_plugin'"):
        create_app(config)


def test_disabling_one_of_two_duplicates_resolves_it(make_config: Any) -> None:
    config = make_config({"plugins": {"load": ["hook_plugins", "dup_plugin"], "disable": ["dup_plugin"]}})
    create_app(config)


def test_register_with_the_wrong_descriptor_is_an_error(make_config: Any) -> None:
    pm = build_plugin_manager(PluginsConfig())

    class Wrong:
        @hookspecs.hookimpl
        def register_transforms(self, register: Any) -> None:
            register("not a TransformSpec")

    pm.register(Wrong(), name="wrong")
    with pytest.raises(PluginError, match=r"plugin .wrong. passed .not a TransformSpec.*TransformSpec"):
        collect(pm, make_config())


def test_unknown_hook_implementation_is_an_error() -> None:
    class Typo:
        @hookspecs.hookimpl
        def register_chat_provider(self, register: Any) -> None:  # missing "s"
            pass

    pm = build_plugin_manager(PluginsConfig())
    pm.register(Typo(), name="typo")
    with pytest.raises(Exception, match="register_chat_provider"):
        pm.check_pending()
