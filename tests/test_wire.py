"""AI Server's wire conventions over real HTTP: input forms, names, output casing, errors, OpenAPI."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate

LOAD = {"plugins": {"load": ["wire_plugin"]}}


@pytest.fixture
async def client(make_client: Any) -> Any:
    return await make_client(LOAD)


async def test_json_with_any_name_casing(client: Any) -> None:
    resp = await client.post("/api/Probe", json={
        "positivePrompt": "cat", "WIDTH": 512, "Ratio": "1.5", "enabled": "true", "format": "PNG",
        "tags": ["a", "b"], "args": {"k": 1}, "size": {"Width": 3}})
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "positivePrompt": "cat", "width": 512, "ratio": 1.5, "enabled": True, "format": "png",
        "tags": ["a", "b"], "args": {"k": 1}, "size": {"width": 3},
        "created": "2026-01-02T03:04:05Z", "took": "PT12.5S"}


async def test_query_string_and_form(client: Any) -> None:
    resp = await client.get("/api/Probe?positive_prompt=dog&width=64&tags=x,y&enabled=0")
    body = await resp.json()
    assert (body["positivePrompt"], body["width"], body["tags"], body["enabled"]) == ("dog", 64, ["x", "y"], False)
    resp = await client.post("/api/Probe", data={"PositivePrompt": "fox", "Width": "128",
                                                 "Args": '{"steps": 4}'})
    body = await resp.json()
    assert (body["positivePrompt"], body["width"], body["args"]) == ("fox", 128, {"steps": 4})


async def test_path_parameters_win(client: Any) -> None:
    resp = await client.get("/probe/owl?PositivePrompt=ignored")
    assert (await resp.json())["positivePrompt"] == "owl"


async def test_multipart_with_file_is_streamed_and_hashed(client: Any) -> None:
    payload = b"\x89PNG" + bytes(range(256)) * 100
    form = aiohttp.FormData()
    form.add_field("PositivePrompt", "upload")
    form.add_field("image", payload, filename="../../etc/x.png", content_type="image/png")
    resp = await client.post("/api/Probe", data=form)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["files"]["image"] == {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
                                      "filename": "x.png"}


async def test_validation_envelope_lists_every_field_error(client: Any) -> None:
    resp = await client.post("/api/Probe", json={"width": 10, "ratio": 0, "format": "gif",
                                                 "tags": ["1", "2", "3", "4"], "size": {"height": 0}})
    assert resp.status == 400
    status = (await resp.json())["responseStatus"]
    codes = {e["fieldName"]: e["errorCode"] for e in status["errors"]}
    assert codes == {"PositivePrompt": "NotEmpty", "Width": "InclusiveBetween", "Ratio": "GreaterThan",
                     "Format": "Enum", "Tags": "MaximumLength", "Size.Width": "NotEmpty",
                     "Size.Height": "GreaterThanOrEqual"}
    assert status["errorCode"] == "NotEmpty"
    assert status["message"] == "'Positive Prompt' must not be empty."


async def test_wrong_types_are_field_errors(client: Any) -> None:
    resp = await client.post("/api/Probe", json={"PositivePrompt": "x", "width": "wide", "enabled": "maybe"})
    errors = (await resp.json())["responseStatus"]["errors"]
    assert [(e["fieldName"], e["errorCode"]) for e in errors] == [("Width", "InvalidValue"),
                                                                  ("Enabled", "InvalidValue")]


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "SerializationException"),
    ({"json": [1, 2]}, 400, "SerializationException"),
    ({"data": b"<x/>", "headers": {"Content-Type": "application/xml"}}, 415, "UnsupportedMediaType"),
])
async def test_malformed_bodies(client: Any, kwargs: dict[str, Any], status: int, code: str) -> None:
    resp = await client.post("/api/Probe", **kwargs)
    assert resp.status == status
    assert (await resp.json())["responseStatus"]["errorCode"] == code


async def test_unknown_route_wrong_verb_and_crash_use_the_envelope(client: Any) -> None:
    resp = await client.get("/api/NoSuchThing")
    assert resp.status == 404
    assert (await resp.json())["responseStatus"]["errorCode"] == "NotFound"
    resp = await client.delete("/api/Probe")
    assert resp.status == 405
    assert (await resp.json())["responseStatus"]["errorCode"] == "MethodNotAllowed"
    resp = await client.get("/boom")
    body = await resp.text()
    assert resp.status == 500 and "InternalServerError" in body and "sk-abc123" not in body


async def test_snake_case_dto_keeps_names_and_adds_openai_error(client: Any) -> None:
    resp = await client.post("/v1/echo", json={"max_tokens": 5})
    assert await resp.json() == {"max_tokens": 5, "finish_reason": None}
    resp = await client.post("/v1/echo", json={"max_tokens": 0})
    body = await resp.json()
    assert resp.status == 400
    assert body["responseStatus"]["errors"][0]["fieldName"] == "max_tokens"
    assert body["error"]["param"] == "max_tokens" and body["error"]["type"] == "invalid_request_error"


async def test_request_id_is_echoed_or_made(client: Any) -> None:
    resp = await client.get("/up", headers={"X-Request-Id": "abc-123"})
    assert resp.headers["X-Request-Id"] == "abc-123"
    resp = await client.get("/up", headers={"X-Request-Id": "bad id with spaces"})
    assert resp.headers["X-Request-Id"] != "bad id with spaces" and len(resp.headers["X-Request-Id"]) == 32


async def test_up_and_health(client: Any) -> None:
    assert (await client.get("/up")).status == 200
    resp = await client.get("/health")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"


async def test_openapi_is_valid_and_lists_every_route(client: Any) -> None:
    doc = await (await client.get("/openapi.json")).json()
    validate(doc)
    listed = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    import re

    for resource in client.app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        path = re.sub(r"\{([^}:]+):[^}]*\}", r"{\1}", path)
        for route in resource:
            if route.method in ("HEAD", "*"):
                continue
            assert (path, route.method) in listed, f"{route.method} {path} not in /openapi.json"
    probe = doc["paths"]["/api/Probe"]["post"]
    assert set(probe["requestBody"]["content"]) == {"application/json", "application/x-www-form-urlencoded",
                                                    "multipart/form-data"}
    schema = doc["components"]["schemas"]["Probe"]
    assert schema["required"] == ["PositivePrompt"]
    assert schema["properties"]["Width"] == {"type": "integer", "format": "int64", "minimum": 64, "maximum": 2048}
    assert schema["properties"]["Image"]["format"] == "binary"


async def test_cors_when_configured(make_client: Any) -> None:
    client = await make_client({**LOAD, "server": {"cors": {"allow_origins": ["https://app.example"]}}})
    resp = await client.options("/api/Probe", headers={"Origin": "https://app.example",
                                                       "Access-Control-Request-Method": "POST"})
    assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    resp = await client.get("/up", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.get("/up", headers={"Origin": "https://app.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
