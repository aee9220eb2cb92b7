"""aiport as a sub-application of another aiohttp app, and several apps in one process."""

from __future__ import annotations

import os
from typing import Any

import aiohttp
from aiohttp import web
from aiport.core import create_app, state

MiB = 1024 * 1024
LOAD = {"plugins": {"load": ["wire_plugin"]}}


def upload(size: int) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("PositivePrompt", "big")
    form.add_field("image", os.urandom(size), filename="big.bin", content_type="application/octet-stream")
    return form


async def parent_with(aiport_app: web.Application, aiohttp_client: Any) -> Any:
    parent = web.Application(client_max_size=1 * MiB)

    async def own(request: web.Request) -> web.Response:
        await request.read()  # the parent's own limit still applies to its own routes
        return web.Response(text="parent")

    parent.router.add_post("/own", own)
    parent.add_subapp("/ai/", aiport_app)
    return await aiohttp_client(parent)


async def test_mounted_app_applies_its_own_upload_limit(make_config: Any, aiohttp_client: Any) -> None:
    config = make_config({**LOAD, "server": {"max_upload_size": "8MiB"}})
    client = await parent_with(create_app(config), aiohttp_client)

    resp = await client.post("/ai/api/Probe", data=upload(5 * MiB))
    body = await resp.json()
    assert resp.status == 200, body
    assert body["files"]["image"]["size"] == 5 * MiB

    resp = await client.post("/ai/api/Probe", data=upload(9 * MiB))
    assert resp.status == 413
    status = (await resp.json())["responseStatus"]
    assert status["errorCode"] == "PayloadTooLarge" and "8 MiB" in status["message"]
    spool = config.resolve_path(config.storage.artifacts_path) / ".incoming"
    assert list(spool.iterdir()) == [], "a refused upload must leave nothing behind"

    resp = await client.post("/own", data=b"x" * (2 * MiB))
    assert resp.status == 413


async def test_large_json_body_under_the_limit_is_accepted(make_config: Any, aiohttp_client: Any) -> None:
    client = await parent_with(create_app(make_config({**LOAD, "server": {"max_upload_size": "8MiB"}})),
                               aiohttp_client)
    resp = await client.post("/ai/api/Probe", json={"PositivePrompt": "x", "Args": {"blob": "y" * (3 * MiB)}})
    assert resp.status == 200


async def test_mounted_routes_and_openapi_know_their_prefix(make_config: Any, aiohttp_client: Any) -> None:
    client = await parent_with(create_app(make_config(LOAD)), aiohttp_client)
    assert (await client.get("/ai/up")).status == 200
    doc = await (await client.get("/ai/openapi.json")).json()
    assert doc["servers"] == [{"url": "/ai"}]
    assert "/api/Probe" in doc["paths"]
    resp = await client.get("/ai/nothing-here")
    assert resp.status == 404 and "responseStatus" in await resp.json()


async def test_two_instances_share_no_state(make_config: Any, aiohttp_client: Any, tmp_path: Any) -> None:
    first = create_app(make_config({**LOAD, "server": {"max_upload_size": "1MiB"}}))
    second = create_app(make_config({"storage": {"database_path": str(tmp_path / "b.db"),
                                                 "artifacts_path": str(tmp_path / "b")}}))
    assert first[state.PLUGIN_MANAGER] is not second[state.PLUGIN_MANAGER]
    assert first[state.REGISTRY] is not second[state.REGISTRY]
    parent = web.Application()
    parent.add_subapp("/one/", first)
    parent.add_subapp("/two/", second)
    client = await aiohttp_client(parent)
    assert (await client.post("/one/api/Probe", json={"PositivePrompt": "x"})).status == 200
    assert (await client.post("/two/api/Probe", json={"PositivePrompt": "x"})).status == 404
    assert (await client.post("/one/api/Probe", data=upload(2 * MiB))).status == 413
    assert first[state.HTTP] is not second[state.HTTP]
