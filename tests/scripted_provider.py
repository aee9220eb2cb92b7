"""A chat provider for tests whose behaviour the prompt scripts (loaded via ``plugins.load``).

The last user message decides what happens:

- ``sleep 0.5`` answers after half a second;
- ``fail 2 some-key`` fails (503, retryable) the first 2 calls with that key, then answers;
- ``reject`` fails with a non-retryable 400;
- ``hang`` never answers;
- anything else is echoed back.

Per provider it records how many calls ran at once (``max_running``), readable at
``GET /test/scripted/{name}`` so tests in other processes can check it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
from aiohttp import web
from aiport.core.errors import ProviderError
from aiport.core.hookspecs import hookimpl
from aiport.core.registry import ChatProviderType, RouteSpec

STATS: dict[str, dict[str, Any]] = {}
FAILURES: dict[str, int] = {}


@attrs.frozen
class ScriptedOptions:
    #: Fail every call (retryable) — a provider that is down.
    down: bool = False


class ScriptedChat:
    def __init__(self, ctx: Any) -> None:
        self.name = ctx.provider.name
        self.options = ctx.options
        self.stats = STATS.setdefault(self.name, {"running": 0, "max_running": 0, "calls": 0, "cancelled": 0})

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        text = await self._run(body)
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": len(text.split()),
                          "total_tokens": 3 + len(text.split())}}

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        prompt = str(body["messages"][-1].get("content", ""))
        if prompt.startswith(("slowstream", "midfail")):
            async for chunk in self._slow_stream(body, prompt):
                yield chunk
            return
        text = await self._run(body)
        for word in text.split():
            yield {"object": "chat.completion.chunk", "model": body["model"],
                   "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]}
        yield {"object": "chat.completion.chunk", "model": body["model"],
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": len(text.split()), "total_tokens": 3}}

    async def _slow_stream(self, body: dict[str, Any], prompt: str) -> AsyncIterator[dict[str, Any]]:
        """``slowstream N``: N words, 50 ms apart. ``midfail``: two words, then the backend dies."""
        words = prompt.split()
        count = int(words[1]) if prompt.startswith("slowstream") else 2
        self.stats["calls"] += 1
        try:
            for n in range(count):
                yield {"object": "chat.completion.chunk", "model": body["model"],
                       "choices": [{"index": 0, "delta": {"content": f"w{n} "}, "finish_reason": None}]}
                await asyncio.sleep(0.05)
            if prompt.startswith("midfail"):
                raise ProviderError("the backend connection dropped", provider=self.name, retryable=True)
            yield {"object": "chat.completion.chunk", "model": body["model"],
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 2, "completion_tokens": count, "total_tokens": 2 + count}}
        except (asyncio.CancelledError, GeneratorExit):
            self.stats["stream_closed_early"] = self.stats.get("stream_closed_early", 0) + 1
            raise

    async def _run(self, body: dict[str, Any]) -> str:
        prompt = str(body["messages"][-1].get("content", ""))
        self.stats["calls"] += 1
        self.stats["running"] += 1
        self.stats["max_running"] = max(self.stats["max_running"], self.stats["running"])
        try:
            if self.options.down:
                raise ProviderError(f"{self.name} is down", provider=self.name, upstream_status=503, retryable=True)
            words = prompt.split()
            command = words[0] if words else ""
            if command == "sleep":
                await asyncio.sleep(float(words[1]))
            elif command == "hang":
                await asyncio.sleep(3600)
            elif command == "reject":
                raise ProviderError("the backend rejected the request: bad things", provider=self.name,
                                    upstream_status=400)
            elif command == "fail":
                key = words[2] if len(words) > 2 else "default"
                FAILURES[key] = FAILURES.get(key, 0) + 1
                if FAILURES[key] <= int(words[1]):
                    raise ProviderError(f"temporary failure {FAILURES[key]}", provider=self.name,
                                        upstream_status=503, retryable=True)
            return f"{self.name} says {prompt}"
        except asyncio.CancelledError:
            self.stats["cancelled"] += 1
            raise
        finally:
            self.stats["running"] -= 1

    async def probe(self) -> None:
        if self.options.down:
            raise ProviderError(f"{self.name} is down", provider=self.name, retryable=True)

    async def list_models(self) -> list[str]:
        return ["scripted"]

    async def aclose(self) -> None:
        pass


async def stats(request: web.Request) -> web.Response:
    return web.json_response(STATS.get(request.match_info["name"], {}))


@hookimpl
def register_chat_providers(register: Callable[[ChatProviderType], None]) -> None:
    register(ChatProviderType(name="scripted", factory=ScriptedChat, options=ScriptedOptions))


@hookimpl
def register_routes(register: Callable[[RouteSpec], None]) -> None:
    register(RouteSpec(method="GET", path="/test/scripted/{name}", handler=stats))
