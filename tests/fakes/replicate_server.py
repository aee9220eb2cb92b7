"""A protocol-faithful fake of Replicate's predictions API, with real image outputs.

Routes (as Replicate's HTTP API documents them):

* ``POST /v1/models/{owner}/{name}/predictions`` ``{"input": {...}}`` for official models;
* ``POST /v1/predictions`` ``{"version": "<64 hex>" | "owner/name:<64 hex>", "input": {...}}``;
* ``GET /v1/predictions/{id}``, ``POST /v1/predictions/{id}/cancel``, ``GET /v1/account``;
* ``GET /delivery/{id}/{file}``: the output files (no auth, like Replicate's CDN).

Requests are checked as the real API does, answering with its problem documents
``{"title", "detail", "status"}``: ``Authorization: Bearer <token>`` (401
otherwise; a wrong token is echoed in the message, which the real API does not
do, so tests can prove clients never pass it on), the body, the model or version
(404 / 422 "Invalid version or not permitted"), and the input against each
model's published schema (types, ranges, enums) as 422 "Input validation
failed" with ``invalid_fields``. With ``strict_inputs`` (the default) an input
field the model does not have is refused too; the real API drops such fields
silently, the fake refuses them to catch mapping mistakes.

A prediction is ``starting`` when created and moves on at each poll: by default
the first poll finds it ``succeeded``; knobs make it slow, fail or never finish.
``Prefer: wait`` finishes a quick prediction within the create call. On success
the outputs are rendered with ImageMagick at the size the input asks for (the
FLUX sizes for an aspect ratio, width x height otherwise) in the requested
``output_format`` (PNG for models without one) and served from the fake's own
``/delivery/`` URLs. ``output`` is a list of URLs, or one URL for the models that
return a single file (FLUX pro).

Knobs (besides :class:`~fakes.chat_fake.ChatFake`'s ``fail_next``, ``hang_next``
and ``respond_next``, which apply to the next API request)::

    fake.slow_next(polls=3)                   # 3 polls of "processing" with tqdm progress logs
    fake.fail_prediction_next("CUDA out of memory")   # ends "failed" with that error
    fake.stuck_next()                         # "processing" until canceled
    fake.fail_polls_next(2, status=503, retry_after=0)   # the next 2 GETs of a prediction fail
    fake.predictions[id], fake.poll_times[id], fake.cancel_requests
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .chat_fake import ChatFake
from .media_files import colour_for, render_image

FLUX_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
#: What FLUX makes at 1 megapixel for each aspect ratio.
FLUX_SIZES = {
    "1:1": (1024, 1024), "16:9": (1344, 768), "21:9": (1536, 640), "3:2": (1216, 832), "2:3": (832, 1216),
    "4:5": (896, 1088), "5:4": (1088, 896), "3:4": (896, 1152), "4:3": (1152, 896), "9:16": (768, 1344),
    "9:21": (640, 1536),
}
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
SDXL_LIGHTNING_VERSION = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"
TERMINAL = ("succeeded", "failed", "canceled")


@dataclass(frozen=True)
class Field:
    """One input field of a model's schema."""

    kind: str  # string | integer | number | boolean | enum
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False


def _i(lo: float | None = None, hi: float | None = None) -> Field:
    return Field("integer", lo, hi)


def _n(lo: float | None = None, hi: float | None = None) -> Field:
    return Field("number", lo, hi)


def _e(*choices: str) -> Field:
    return Field("enum", choices=choices)


_S, _B, _PROMPT = Field("string"), Field("boolean"), Field("string", required=True)
_FORMATS = _e("webp", "jpg", "png")


@dataclass(frozen=True)
class FakeModel:
    """A model the fake serves: its input schema, how it is addressed and what it returns."""

    slug: str
    fields: dict[str, Field]
    version: str
    official: bool
    #: ``aspect_ratio`` / ``width_height`` / ``custom`` (an aspect ratio or custom width x height).
    sizing: str
    #: Whether ``output`` is a list of URLs (else a single URL).
    output_list: bool = True


MODELS: dict[str, FakeModel] = {m.slug: m for m in (
    FakeModel("black-forest-labs/flux-schnell", {
        "prompt": _PROMPT, "aspect_ratio": _e(*FLUX_RATIOS), "num_outputs": _i(1, 4),
        "num_inference_steps": _i(1, 4), "seed": _i(), "output_format": _FORMATS, "output_quality": _i(0, 100),
        "disable_safety_checker": _B, "go_fast": _B, "megapixels": _e("1", "0.25"),
    }, version="c846a69991daf4c0e5d016514849d14ee5b2e6846ce6b9d6f21369e564cfe51e", official=True,
        sizing="aspect_ratio"),
    FakeModel("black-forest-labs/flux-dev", {
        "prompt": _PROMPT, "aspect_ratio": _e(*FLUX_RATIOS), "image": _S, "prompt_strength": _n(0, 1),
        "num_outputs": _i(1, 4), "num_inference_steps": _i(1, 50), "guidance": _n(0, 10), "seed": _i(),
        "output_format": _FORMATS, "output_quality": _i(0, 100), "disable_safety_checker": _B, "go_fast": _B,
        "megapixels": _e("1", "0.25"),
    }, version="6e4a938f85952bdabcc15fa9a2c4ee1d2e5ee7c9ce7a7f8b3e7c6e1f8e0d5a11", official=True,
        sizing="aspect_ratio"),
    FakeModel("black-forest-labs/flux-pro", {
        "prompt": _PROMPT, "aspect_ratio": _e(*FLUX_RATIOS, "custom"), "width": _i(256, 1440),
        "height": _i(256, 1440), "steps": _i(1, 50), "guidance": _n(2, 5), "interval": _n(1, 4), "seed": _i(),
        "output_format": _FORMATS, "output_quality": _i(0, 100), "safety_tolerance": _i(1, 6),
        "prompt_upsampling": _B, "image_prompt": _S,
    }, version="9b0c6f5e1a3d4c2b8e7f6a5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b", official=True,
        sizing="custom", output_list=False),
    FakeModel("black-forest-labs/flux-1.1-pro", {
        "prompt": _PROMPT, "aspect_ratio": _e(*FLUX_RATIOS, "custom"), "width": _i(256, 1440),
        "height": _i(256, 1440), "seed": _i(), "output_format": _FORMATS, "output_quality": _i(0, 100),
        "safety_tolerance": _i(1, 6), "prompt_upsampling": _B, "image_prompt": _S,
    }, version="96ccd0e758a1796926584ded2246369cdf8eb3d7c34475cf9c442be5e097d926", official=True,
        sizing="custom", output_list=False),
    FakeModel("stability-ai/sdxl", {
        "prompt": _S, "negative_prompt": _S, "image": _S, "mask": _S, "width": _i(), "height": _i(),
        "num_outputs": _i(1, 4), "scheduler": _e("DDIM", "DPMSolverMultistep", "HeunDiscrete", "KarrasDPM",
                                                 "K_EULER_ANCESTRAL", "K_EULER", "PNDM"),
        "num_inference_steps": _i(1, 500), "guidance_scale": _n(1, 50), "prompt_strength": _n(0, 1), "seed": _i(),
        "refine": _e("no_refiner", "expert_ensemble_refiner", "base_image_refiner"), "high_noise_frac": _n(0, 1),
        "refine_steps": _i(), "apply_watermark": _B, "lora_scale": _n(0, 1), "disable_safety_checker": _B,
    }, version=SDXL_VERSION, official=False, sizing="width_height"),
    FakeModel("bytedance/sdxl-lightning-4step", {
        "prompt": _S, "negative_prompt": _S, "width": _i(256, 1280), "height": _i(256, 1280),
        "num_outputs": _i(1, 4), "scheduler": _e("DDIM", "DPMSolverMultistep", "HeunDiscrete", "KarrasDPM",
                                                 "K_EULER_ANCESTRAL", "K_EULER", "PNDM", "DPM++2MSDE"),
        "num_inference_steps": _i(1, 10), "guidance_scale": _n(0, 50), "seed": _i(), "disable_safety_checker": _B,
    }, version=SDXL_LIGHTNING_VERSION, official=False, sizing="width_height"),
)}
VERSIONS = {m.version: m for m in MODELS.values()}


@dataclass
class _PollFailure:
    status: int
    retry_after: str | None


@dataclass
class _Script:
    """How one prediction behaves as it is polled."""

    processing_polls: int = 0
    error: str | None = None
    stuck: bool = False


@dataclass
class FakePrediction:
    id: str
    model: FakeModel
    input: dict[str, Any]
    script: _Script
    status: str = "starting"
    logs: str = ""
    output: Any = None
    error: str | None = None
    polls: int = 0
    created_at: str = field(default_factory=lambda: _now())
    started_at: str | None = None
    completed_at: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _Invalid(Exception):
    """An input validation failure: a list of (type, field, description)."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        super().__init__(problems)
        self.problems = problems


class FakeReplicate(ChatFake):
    """Replicate's predictions API on loopback (see the module docs)."""

    def __init__(self, *, api_key: str | None = "r8_test-token", strict_inputs: bool = True,
                 delivery_host: str | None = None) -> None:
        super().__init__(api_key=api_key, models=list(MODELS))
        self.strict_inputs = strict_inputs
        #: Host name put in output URLs instead of the API's (``localhost``: another origin, like a CDN).
        self.delivery_host = delivery_host
        self.predictions: dict[str, FakePrediction] = {}
        #: Monotonic times of each prediction's GETs (to check the client's backoff).
        self.poll_times: dict[str, list[float]] = {}
        #: Ids of the predictions a client asked to cancel, in order.
        self.cancel_requests: list[str] = []
        #: Output files by URL path.
        self.files: dict[str, tuple[bytes, str]] = {}
        self._scripts: deque[_Script] = deque()
        self._poll_failures: deque[_PollFailure] = deque()

    def install(self, app: web.Application) -> None:
        app.router.add_post("/v1/models/{owner}/{name}/predictions", self.create_official)
        app.router.add_post("/v1/predictions", self.create_versioned)
        app.router.add_get("/v1/predictions/{id}", self.get_prediction)
        app.router.add_post("/v1/predictions/{id}/cancel", self.cancel_prediction)
        app.router.add_get("/v1/account", self.account)
        app.router.add_get("/delivery/{id}/{file}", self.delivery)

    # ----------------------------------------------------------------- knobs

    def slow_next(self, polls: int = 3, n: int = 1) -> None:
        """The next ``n`` predictions stay ``processing`` for ``polls`` polls, logging a progress bar."""
        self._scripts.extend(_Script(processing_polls=polls) for _ in range(n))

    def fail_prediction_next(self, error: str = "Prediction failed", polls: int = 0) -> None:
        """The next prediction ends ``failed`` with ``error`` (after ``polls`` processing polls)."""
        self._scripts.append(_Script(processing_polls=polls, error=error))

    def stuck_next(self, n: int = 1) -> None:
        """The next ``n`` predictions never finish (until they are canceled)."""
        self._scripts.extend(_Script(stuck=True) for _ in range(n))

    def fail_polls_next(self, n: int = 1, status: int = 503, *, retry_after: str | float | None = None) -> None:
        """The next ``n`` ``GET /v1/predictions/{id}`` answer ``status`` (the prediction itself runs on)."""
        for _ in range(n):
            self._poll_failures.append(_PollFailure(status, None if retry_after is None else str(retry_after)))

    def reset(self) -> None:
        super().reset()
        self._scripts.clear()
        self._poll_failures.clear()
        self.cancel_requests.clear()

    # ----------------------------------------------------------------- errors

    def error_response(self, status: int, message: str, *, headers: dict[str, str] | None = None,
                       kind: str | None = None, title: str | None = None, extra: dict[str, Any] | None = None
                       ) -> web.Response:
        titles = {401: "Unauthenticated", 404: "Not found", 422: "Unprocessable Entity",
                  429: "Request was throttled.", 500: "Internal Server Error", 502: "Bad Gateway",
                  503: "Service Unavailable"}
        body = {"title": title or titles.get(status, "Error"), "detail": message, "status": status, **(extra or {})}
        return web.json_response(body, status=status, headers=headers, content_type="application/problem+json")

    def stream_error_frame(self, message: str) -> bytes:  # Replicate's predictions API does not stream here
        return b""

    def _check_key(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        value = request.headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme not in ("Bearer", "Token") or not token:
            return self.error_response(401, "You did not pass an authentication token")
        if token != self.api_key:
            return self.error_response(401, f"Invalid token: {token}")
        return None

    async def _guard(self, request: web.Request) -> web.StreamResponse | None:
        await self.record(request)
        if (denied := self._check_key(request)) is not None:
            return denied
        return await self.intercept(request)

    # ----------------------------------------------------------------- handlers

    async def account(self, request: web.Request) -> web.StreamResponse:
        if (early := await self._guard(request)) is not None:
            return early
        return web.json_response({"type": "user", "username": "fake-user", "name": "Fake User",
                                  "github_url": "https://github.com/fake-user"})

    async def create_official(self, request: web.Request) -> web.StreamResponse:
        if (early := await self._guard(request)) is not None:
            return early
        slug = f"{request.match_info['owner']}/{request.match_info['name']}"
        model = MODELS.get(slug)
        if model is None:
            return self.error_response(404, "The requested resource could not be found.")
        if not model.official:
            return self.error_response(404, f"{slug} is not an official model; run it by version with "
                                            "POST /v1/predictions")
        return await self._create(request, model, allowed={"input", "webhook", "webhook_events_filter", "stream"})

    async def create_versioned(self, request: web.Request) -> web.StreamResponse:
        if (early := await self._guard(request)) is not None:
            return early
        body = self.last.body
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, str) or not version:
            return self.error_response(422, "- version: version is required", title="Input validation failed")
        model = VERSIONS.get(version.rsplit(":", 1)[-1])
        if model is None or (":" in version and version.split(":", 1)[0] != model.slug):
            return self.error_response(422, "The specified version does not exist (or perhaps you don't have "
                                            "permission to use it?)", title="Invalid version or not permitted")
        return await self._create(request, model,
                                  allowed={"version", "input", "webhook", "webhook_events_filter", "stream"})

    async def _create(self, request: web.Request, model: FakeModel, allowed: set[str]) -> web.StreamResponse:
        body = self.last.body
        if not isinstance(body, dict):
            return self.error_response(400, "The request body is not valid JSON.", title="Bad request")
        unknown = sorted(set(body) - allowed)
        if unknown:
            return self.error_response(422, f"- {unknown[0]}: Additional property {unknown[0]} is not allowed",
                                       title="Input validation failed")
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            return self.error_response(422, "- input: input is required", title="Input validation failed")
        try:
            self._validate(model, inputs)
        except _Invalid as e:
            return self.error_response(
                422, "".join(f"- input.{f}: {d}\n" if f else f"- input: {d}\n" for _, f, d in e.problems),
                title="Input validation failed",
                extra={"invalid_fields": [{"type": t, "field": f"input.{f}" if f else "input", "description": d}
                                          for t, f, d in e.problems]})
        prediction = FakePrediction(id=_prediction_id(), model=model, input=inputs,
                                    script=self._scripts.popleft() if self._scripts else _Script())
        self.predictions[prediction.id] = prediction
        self.poll_times[prediction.id] = []
        prefer = request.headers.get("Prefer", "")
        if prefer.startswith("wait") and not prediction.script.stuck:
            # The real API holds the request until the prediction is done or the wait runs out.
            if prediction.script.processing_polls == 0:
                await self._finish(request, prediction)
            else:
                self._processing(prediction, 1)
        return web.json_response(self._render(request, prediction), status=201)

    async def get_prediction(self, request: web.Request) -> web.StreamResponse:
        if (early := await self._guard(request)) is not None:
            return early
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return self.error_response(404, "The requested resource could not be found.")
        self.poll_times[prediction.id].append(time.monotonic())
        if self._poll_failures:
            failure = self._poll_failures.popleft()
            headers = {"Retry-After": failure.retry_after} if failure.retry_after is not None else None
            return self.error_response(failure.status, f"fake failure {failure.status}", headers=headers)
        if prediction.status not in TERMINAL:
            prediction.polls += 1
            script = prediction.script
            if script.stuck or prediction.polls <= script.processing_polls:
                self._processing(prediction, prediction.polls)
            elif script.error is not None:
                prediction.status, prediction.error = "failed", script.error
                prediction.logs += f"Traceback (most recent call last):\n{script.error}\n"
                prediction.completed_at = _now()
            else:
                await self._finish(request, prediction)
        return web.json_response(self._render(request, prediction))

    async def cancel_prediction(self, request: web.Request) -> web.StreamResponse:
        if (early := await self._guard(request)) is not None:
            return early
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return self.error_response(404, "The requested resource could not be found.")
        self.cancel_requests.append(prediction.id)
        if prediction.status not in TERMINAL:
            prediction.status, prediction.completed_at = "canceled", _now()
        return web.json_response(self._render(request, prediction))

    async def delivery(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        found = self.files.get(request.path)
        if found is None:
            return web.Response(status=404, text="Not Found")
        data, content_type = found
        return web.Response(body=data, content_type=content_type)

    # ----------------------------------------------------------------- the prediction lifecycle

    def _processing(self, prediction: FakePrediction, poll: int) -> None:
        prediction.status = "processing"
        prediction.started_at = prediction.started_at or _now()
        seed = prediction.input.get("seed", 4242)
        total = max(prediction.script.processing_polls + 1, 1)
        done = min(poll, total)
        pct = done * 100 // total
        bar = "#" * (pct // 10)
        lines = [f"Using seed: {seed}"] + [
            f"{p * 100 // total:3d}%|{'#' * (p * 10 // total):<10}| {p}/{total} [00:0{p}<00:01, 2.0it/s]"
            for p in range(done + 1)]
        if prediction.script.stuck:
            lines = [f"Using seed: {seed}", f"waiting for a GPU (poll {poll}) {bar}"]
        prediction.logs = "\n".join(lines) + "\n"

    async def _finish(self, request: web.Request, prediction: FakePrediction) -> None:
        """Render the outputs the input asks for and mark the prediction ``succeeded``."""
        inputs, model = prediction.input, prediction.model
        size = self._output_size(model, inputs)
        if size is None:
            prediction.status, prediction.completed_at = "failed", _now()
            prediction.error = "width and height must be set when aspect_ratio is custom"
            return
        ext = inputs.get("output_format") or ("webp" if "output_format" in model.fields else "png")
        count = int(inputs.get("num_outputs", 1))
        colour = colour_for(inputs.get("prompt"), inputs.get("seed"))
        data = await asyncio.to_thread(render_image, size[0], size[1], ext, colour)
        content_type = {"webp": "image/webp", "png": "image/png", "jpg": "image/jpeg"}[ext]
        origin = request.url.origin()
        base = str(origin.with_host(self.delivery_host) if self.delivery_host else origin)
        urls = []
        for i in range(count):
            path = f"/delivery/{prediction.id}/out-{i}.{ext}"
            self.files[path] = (data, content_type)
            urls.append(base + path)
        prediction.output = urls if model.output_list else urls[0]
        prediction.status = "succeeded"
        prediction.started_at = prediction.started_at or _now()
        prediction.completed_at = _now()
        prediction.logs += "100%|##########| done\n"

    @staticmethod
    def _output_size(model: FakeModel, inputs: dict[str, Any]) -> tuple[int, int] | None:
        if model.sizing == "width_height":
            return int(inputs.get("width", 1024)), int(inputs.get("height", 1024))
        ratio = inputs.get("aspect_ratio", "1:1")
        if ratio == "custom":
            if "width" not in inputs or "height" not in inputs:
                return None
            # FLUX pro rounds custom sizes to a multiple of 32.
            return (round(int(inputs["width"]) / 32) * 32, round(int(inputs["height"]) / 32) * 32)
        width, height = FLUX_SIZES[ratio]
        if inputs.get("megapixels") == "0.25":
            width, height = round(width / 32) * 16, round(height / 32) * 16
        return width, height

    def _validate(self, model: FakeModel, inputs: dict[str, Any]) -> None:
        problems: list[tuple[str, str, str]] = []
        for name, spec in model.fields.items():
            if spec.required and name not in inputs:
                problems.append(("required", "", f"{name} is required"))
        for name, value in inputs.items():
            spec = model.fields.get(name)
            if spec is None:
                if self.strict_inputs:
                    problems.append(("additional_property_not_allowed", name,
                                     f"Additional property {name} is not allowed"))
                continue
            problems += _check(name, spec, value)
        if problems:
            raise _Invalid(problems)

    def _render(self, request: web.Request, prediction: FakePrediction) -> dict[str, Any]:
        base = f"{request.url.origin()}/v1/predictions/{prediction.id}"
        body: dict[str, Any] = {
            "id": prediction.id, "model": prediction.model.slug, "version": prediction.model.version,
            "input": prediction.input, "logs": prediction.logs, "output": prediction.output,
            "data_removed": False, "error": prediction.error, "status": prediction.status,
            "created_at": prediction.created_at, "urls": {
                "cancel": f"{base}/cancel", "get": base,
                "stream": f"https://stream.replicate.com/v1/files/{prediction.id}",
                "web": f"https://replicate.com/p/{prediction.id}"},
        }
        if prediction.started_at:
            body["started_at"] = prediction.started_at
        if prediction.completed_at:
            body["completed_at"] = prediction.completed_at
            body["metrics"] = {"predict_time": 0.42}
        return body


def _check(name: str, spec: Field, value: Any) -> list[tuple[str, str, str]]:
    """Problems with one input value, in the words Replicate's validator uses."""
    if spec.kind == "boolean":
        return [] if isinstance(value, bool) else [("type", name, "Invalid type. Expected: boolean")]
    if spec.kind in ("string", "enum"):
        if not isinstance(value, str):
            return [("type", name, "Invalid type. Expected: string, given: " + type(value).__name__)]
        if spec.kind == "enum" and value not in spec.choices:
            return [("enum", name, f"{name} must be one of the following: "
                                   + ", ".join(json.dumps(c) for c in spec.choices))]
        return []
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not numeric or (spec.kind == "integer" and not float(value).is_integer()):
        return [("type", name, f"Invalid type. Expected: {spec.kind}, given: {type(value).__name__}")]
    if spec.minimum is not None and value < spec.minimum:
        return [("number_gte", name, f"Must be greater than or equal to {spec.minimum:g}")]
    if spec.maximum is not None and value > spec.maximum:
        return [("number_lte", name, f"Must be less than or equal to {spec.maximum:g}")]
    return []


def _prediction_id() -> str:
    """An id shaped like Replicate's (26 lower-case base32 characters)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(secrets.choice(alphabet) for _ in range(26))
