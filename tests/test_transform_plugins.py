"""A transform plugin core has never heard of (tests/grayscale_plugin.py) is served, validated and
documented from its TransformSpec alone, over real HTTP with real ImageMagick."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from wand.color import Color
from wand.image import Image


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> Any:
    return await make_client({"plugins": {"load": ["grayscale_plugin"]}})


def red_png() -> bytes:
    with Image(width=40, height=30, background=Color("red")) as img:
        img.format = "png"
        return bytes(img.make_blob())


def form(**fields: Any) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, value in fields.items():
        data.add_field(name, str(value))
    data.add_field("image", red_png(), filename="red.png", content_type="image/png")
    return data


async def download_gray_pixel(client: Any, url: str) -> tuple[int, int, int]:
    resp = await client.get(url[url.index("/artifacts/"):])
    assert resp.status == 200
    with Image(blob=await resp.read()) as img:
        assert img.size == (40, 30)
        c = img[20, 15]
        return c.red_int8, c.green_int8, c.blue_int8


async def test_a_plugin_transform_is_served_sync(client: Any) -> None:
    resp = await client.post("/api/GrayscaleImage", data=form(Intensity=1))
    body = await resp.json()
    assert resp.status == 200, body
    red, green, blue = await download_gray_pixel(client, body["results"][0]["url"])
    assert red == green == blue and 40 < red < 200, (red, green, blue)  # red's luminance, not red


async def test_a_plugin_transform_is_served_queued(client: Any) -> None:
    resp = await client.post("/api/QueueGrayscaleImage", data=form(RefId="gray-1", Intensity="0.5"))
    queued = await resp.json()
    assert resp.status == 200, queued
    assert queued["statusUrl"].endswith("/api/GetArtifactGenerationStatus?RefId=gray-1")
    for _ in range(200):
        status = await (await client.get("/api/GetArtifactGenerationStatus?RefId=gray-1")).json()
        if status["jobState"] in ("Completed", "Failed"):
            break
        await asyncio.sleep(0.05)
    assert status["jobState"] == "Completed", status
    red, green, blue = await download_gray_pixel(client, status["results"][0]["url"])
    assert red > green + 40 and green == blue, (red, green, blue)  # half the colour taken out


@pytest.mark.parametrize("api", ["GrayscaleImage", "QueueGrayscaleImage"])
async def test_a_plugin_transform_is_validated_from_its_fields(client: Any, api: str) -> None:
    resp = await client.post(f"/api/{api}", data=form(Intensity=5, RefId=f"bad-{api}"))
    body = await resp.json()
    assert resp.status == 400, body
    (error,) = body["responseStatus"]["errors"]
    assert (error["fieldName"], error["errorCode"]) == ("Intensity", "InclusiveBetween")
    assert body["responseStatus"]["errorCode"] == "InclusiveBetween" and "between 0 and 1" in error["message"]
    resp = await client.post(f"/api/{api}", json={"Intensity": 0.5})
    body = await resp.json()
    assert resp.status == 400 and body["responseStatus"]["errors"][0]["fieldName"] == "Image"
    status = await client.get(f"/api/GetArtifactGenerationStatus?RefId=bad-{api}")
    assert status.status == 404, "nothing was queued"


async def test_a_plugin_transform_is_in_the_openapi_document(client: Any) -> None:
    doc = await (await client.get("/openapi.json")).json()
    for api, response in (("GrayscaleImage", "ArtifactGenerationResponse"),
                          ("QueueGrayscaleImage", "QueueGenerationResponse")):
        operation = doc["paths"][f"/api/{api}"]["post"]
        assert operation["summary"] == "Make an image gray" and operation["tags"] == ["transforms"]
        assert operation["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].endswith(f"/{api}")
        assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
            f"/{response}")
        schema = doc["components"]["schemas"][api]
        assert list(schema["properties"]) == ["RefId", "Tag", "ReplyTo", "Intensity", "Image"]
        assert schema["properties"]["Intensity"] == {
            "type": "number", "minimum": 0, "maximum": 1, "description": "0 keeps the colours, 1 is fully gray"}
        assert schema["properties"]["Image"]["format"] == "binary" and schema["required"] == ["Image"]
