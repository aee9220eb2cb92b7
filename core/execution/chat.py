"""Running chat completions on providers: queued and sync jobs, and streamed calls.

Non-streamed calls are jobs (:class:`ChatExecutor` runs them on the provider their queue
names). A streamed call is not queued: :meth:`ChatExecutor.open_stream` starts it on the
first candidate that answers and hands back a :class:`ChatStream`, which the HTTP layer
relays chunk by chunk and closes; closing releases the slot, closes the upstream call and
records the request in the job history, also when the client went away mid-stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import attrs
import structlog

from ..errors import ProviderError
from ..jobs.engine import JobEngine
from ..jobs.executor import JobContext
from ..jobs.model import Job, JobResult, JobSpec, JobState, Usage, replace_spec
from .executor import ProviderExecutor, close_quietly
from .routing import ProviderManager, RuntimeProvider

log = structlog.get_logger("aiport.chat")

#: Turns a stored chat completion into the shape an API keeps and answers with
#: (``model``, completion) -> result; the identity for OpenAI's own APIs.
ResultShape = Callable[[str, Mapping[str, Any]], dict[str, Any]]


class ChatExecutor(ProviderExecutor):
    """Runs a chat job on the provider its queue names, fails it over on retryable errors,
    and streams calls that are not queued."""

    def __init__(self, providers: ProviderManager, engine: JobEngine, result_shape: ResultShape | None = None) -> None:
        super().__init__(providers)
        self.engine = engine
        self.result_shape = result_shape

    async def run(self, job: Job, ctx: JobContext) -> JobResult:
        provider = self.provider_for(job)
        model = str(job.request["model"])
        body = dict(job.request["body"])
        body["model"] = provider.api_model(model)
        body.pop("stream", None)
        body.pop("stream_options", None)
        started = time.monotonic()
        try:
            response = dict(await provider.instance.chat(body))
        except Exception as exc:
            self.failed(provider, exc)
            raise
        self.served(provider, time.monotonic() - started)
        self.succeeded(job)
        response["model"] = model
        usage = response.get("usage") or {}
        result = JobResult(response=response, usage=Usage(
            provider=provider.name, model=model, prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            ttft_ms=int((time.monotonic() - started) * 1000)))
        if self.result_shape is not None:
            result = attrs.evolve(result, response=self.result_shape(model, response))
        return result

    def callback_body(self, job: Job) -> Mapping[str, Any] | None:
        if job.state == JobState.COMPLETED and job.response is not None:
            return dict(job.response)  # AI Server posts the bare chat completion
        return {"id": job.ref_id, "jobId": job.id, "refId": job.ref_id, "jobState": job.state.value,
                "responseStatus": dict(job.error or {})}

    async def open_stream(self, spec: JobSpec, body: Mapping[str, Any],
                          candidates: Sequence[RuntimeProvider]) -> ChatStream:
        """Start streaming ``body`` (``spec.request['model']`` is the gateway model) from the
        first candidate that answers; a retryable failure before the first chunk moves on to the
        next one. ``spec`` is what the history records once the stream ends."""
        model = str(spec.request["model"])
        started = time.monotonic()
        provider, chunks, first = await self.first_answer(
            candidates, lambda p: p.instance.stream(dict(body, model=p.api_model(model))), spec.requested_provider)
        tally = StreamTally(ttft_ms=int((time.monotonic() - started) * 1000))
        return ChatStream(self.engine, replace_spec(spec, queue=provider.name), provider, chunks, first, tally, started)


@attrs.define
class StreamTally:
    """What a stream carried, for the history record."""

    usage: dict[str, Any] = attrs.field(factory=dict)
    text: list[str] = attrs.field(factory=list)
    chunks: int = 0
    finish_reason: str | None = None
    error: dict[str, Any] | None = None
    completed: bool = False
    ttft_ms: int = 0

    def add(self, chunk: Mapping[str, Any]) -> None:
        if chunk.get("usage"):
            self.usage = dict(chunk["usage"])
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                self.text.append(delta["content"])
                self.chunks += 1
            self.finish_reason = choice.get("finish_reason") or self.finish_reason


class ChatStream:
    """A streamed chat call holding one of its provider's slots. Iterate it for the
    ``chat.completion.chunk`` objects (each is tallied for the history); call :meth:`failed`
    when the upstream broke mid-stream, and always :meth:`close` it."""

    def __init__(self, engine: JobEngine, spec: JobSpec, provider: RuntimeProvider,
                 chunks: AsyncIterator[dict[str, Any]], first: dict[str, Any] | None, tally: StreamTally,
                 started: float) -> None:
        self.engine = engine
        self.spec = spec
        self.provider = provider
        self.tally = tally
        self._chunks = chunks
        self._first = first
        self._started = started
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        chunk = self._first
        while chunk is not None:
            self.tally.add(chunk)
            yield chunk
            chunk = await anext(self._chunks, None)
        self.tally.completed = True

    def failed(self, error: ProviderError) -> None:
        """The upstream failed after the first chunk: no failover now, the history says why."""
        self.tally.error = error.response_status()

    async def close(self) -> None:
        """Release the slot, close the upstream call and record the request (shielded: it runs
        even while the handler is being cancelled because its client went away)."""
        if self._closed:
            return
        self._closed = True
        self.provider.slots.release()
        await close_quietly(self._chunks)
        await asyncio.shield(self._record())

    async def _record(self) -> None:
        tally = self.tally
        if tally.completed:
            state, error = JobState.COMPLETED, None
        elif tally.error:
            state, error = JobState.FAILED, tally.error
        else:
            state, error = JobState.CANCELLED, {"errorCode": "ClientClosedRequest",
                                                "message": "The client disconnected during the stream."}
        model = str(self.spec.request["model"])
        response: dict[str, Any] = {"object": "chat.completion", "model": model, "choices": [{
            "index": 0, "message": {"role": "assistant", "content": "".join(tally.text)},
            "finish_reason": tally.finish_reason}]}
        # A stream cut short has no usage from the backend: count what streamed (about a token a chunk).
        completion_tokens = tally.usage.get("completion_tokens", tally.chunks)
        if tally.usage:
            response["usage"] = tally.usage
        try:
            await self.engine.record(
                self.spec, state=state, response=response, error=error,
                usage=Usage(provider=self.provider.name, model=model, prompt_tokens=tally.usage.get("prompt_tokens"),
                            completion_tokens=completion_tokens, ttft_ms=tally.ttft_ms),
                duration_ms=int((time.monotonic() - self._started) * 1000))
        except Exception as exc:
            log.error("recording a streamed request failed", error=repr(exc))
