"""Logging: JSON lines with a request id on each, and no secret ever written."""

from __future__ import annotations

import io
import json
from typing import Any

import structlog
from aiport.core import create_app
from aiport.core.logging import configure_logging

SECRET = "sk-live-abcdefghijklmnop"


async def test_request_lines_carry_the_request_id_and_no_secrets(make_config: Any, aiohttp_client: Any) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", secrets=[SECRET], stream=stream, cache=False)
    try:
        client = await aiohttp_client(create_app(make_config({"auth": {"admin_secret": SECRET}})))
        await client.get(f"/health?apiKey={SECRET}", headers={"X-Request-Id": "req-42",
                                                               "Authorization": f"Bearer {SECRET}"})
        structlog.get_logger("test").info("provider call", api_key=SECRET, detail=f"sent {SECRET} upstream",
                                          nested={"authorization": "Bearer x", "ok": 1})
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    request_line = next(line for line in lines if line["event"] == "request")
    assert request_line["request_id"] == "req-42" and request_line["status"] == 200
    assert request_line["path"] == "/health?apiKey=****"
    custom = next(line for line in lines if line["event"] == "provider call")
    assert custom["api_key"] == "****" and custom["detail"] == "sent **** upstream"
    assert custom["nested"] == {"authorization": "****", "ok": 1}
    assert SECRET not in text
