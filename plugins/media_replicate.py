"""The ``replicate`` media provider type: text-to-image on Replicate's predictions API.

Wire format (Replicate's HTTP API, ``Authorization: Bearer <token>``):

- an official model (``owner/name``) runs with
  ``POST /v1/models/{owner}/{name}/predictions`` ``{"input": {...}}``; a versioned
  one (``owner/name:<64 hex>`` or the bare version id) with
  ``POST /v1/predictions`` ``{"version": "<id>", "input": {...}}``;
- with the ``prefer_wait`` option the create call sends ``Prefer: wait=N`` and a
  fast model answers with the finished prediction straight away;
- otherwise the prediction (``starting`` -> ``processing`` -> ``succeeded`` /
  ``failed`` / ``canceled``) is polled at ``urls.get``, first after
  ``poll_interval`` seconds, then twice as long each time up to
  ``poll_max_interval``; progress is reported on every change, with a fraction
  when the ``logs`` show a progress bar (``40%|####  | 2/5``);
- ``output`` (one URL or a list of them) is downloaded into the task's
  ``workdir``; output files live on Replicate's CDN, which never gets the token.

Inputs are mapped per model from the task's args, following each model's
published input schema (see :data:`PROFILES`): ``prompt``, ``negative_prompt``
(models that take one), ``width``/``height`` (fitted to the model's range and
step) or the nearest ``aspect_ratio``, ``num_outputs`` (models that make several
images per prediction; otherwise one prediction per image, run concurrently, the
seed counting up), ``seed``, ``num_inference_steps``/``steps`` and the guidance
scale (clamped to the model's range), and ``output_format``. A model with no
profile gets AI Server's input: ``prompt`` and the nearest ``aspect_ratio``.

Errors: Replicate answers with ``{"title", "detail", "status"}`` problem
documents; they become :class:`~aiport.core.errors.ProviderError` through
:class:`~aiport.core.sdk.HttpProvider` (4xx not retryable, with the message;
408, 429, 5xx and connection errors retryable, honouring ``Retry-After``). A
poll that fails transiently is tried again (the prediction keeps running); a
prediction that ends ``failed`` raises with its ``error`` (an NSFW/safety
rejection is a 400). When the task's ``timeout`` runs out, or the job is
cancelled, or a sibling prediction of the batch fails, every unfinished
prediction is cancelled at ``urls.cancel`` so it stops costing money.

Health: ``probe()`` GETs ``/v1/account``, which checks the token as well as the
service. (AI Server counts Replicate as always online; a probe that can fail
lets a bad token or an outage take the provider out of rotation.)
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import attrs
import structlog
from aiport.core.config import Duration
from aiport.core.errors import ProviderError
from aiport.core.media import TEXT_TO_IMAGE, Args, GeneratedOutput, GenerationTask, ProgressReporter
from aiport.core.sdk import HttpOptions, MediaProviderType, ProviderContext, hookimpl, rejected

from .media_common import HttpMediaProvider

log = structlog.get_logger("aiport.plugins.media")

TYPE_NAME = "replicate"
DEFAULT_BASE_URL = "https://api.replicate.com"

#: Prediction states after which nothing changes any more.
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
#: The most images one task may ask for (AI Server's ``BatchSize`` limit).
MAX_BATCH = 10
#: Seconds a cancel request may take; it is best effort and runs while the task is going away.
CANCEL_TIMEOUT = 10.0

#: The aspect ratios the FLUX models take.
FLUX_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
OUTPUT_FORMATS = ("webp", "jpg", "png")

SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
SDXL_LIGHTNING_VERSION = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"

#: Catalog data: gateway model id -> Replicate model (``owner/name`` or ``owner/name:version``).
API_MODELS: Mapping[str, str] = {
    "flux-schnell": "black-forest-labs/flux-schnell",
    "flux-dev": "black-forest-labs/flux-dev",
    "flux-pro": "black-forest-labs/flux-pro",
    "flux-1.1-pro": "black-forest-labs/flux-1.1-pro",
    "sdxl": f"stability-ai/sdxl:{SDXL_VERSION}",
    "sdxl-lightning": f"bytedance/sdxl-lightning-4step:{SDXL_LIGHTNING_VERSION}",
}
#: Catalog data: gateway model id -> task.
MODEL_TASKS: Mapping[str, str] = {model: TEXT_TO_IMAGE for model in API_MODELS}


@attrs.frozen
class ModelProfile:
    """How one model's input is shaped, from its published input schema."""

    #: ``aspect_ratio``: the size is an aspect ratio (FLUX schnell/dev);
    #: ``width_height``: width and height (SDXL); ``custom``: an aspect ratio, or
    #: ``aspect_ratio: custom`` with width and height (FLUX pro).
    sizing: str = "aspect_ratio"
    aspect_ratios: tuple[str, ...] = FLUX_RATIOS
    #: Width and height limits and the step they are rounded to.
    min_size: int = 256
    max_size: int = 1440
    size_step: int = 8
    #: Images one prediction can make (``num_outputs``); 1: the model takes no ``num_outputs``.
    max_outputs: int = 1
    negative_prompt: bool = False
    #: The ``output_format`` values the model takes (empty: it takes none).
    output_formats: tuple[str, ...] = ()
    steps_field: str | None = None
    steps_range: tuple[int, int] = (1, 50)
    guidance_field: str | None = None
    guidance_range: tuple[float, float] = (0.0, 10.0)


#: Input shapes by ``owner/name`` (whatever the version).
PROFILES: Mapping[str, ModelProfile] = {
    "black-forest-labs/flux-schnell": ModelProfile(
        max_outputs=4, output_formats=OUTPUT_FORMATS, steps_field="num_inference_steps", steps_range=(1, 4)),
    "black-forest-labs/flux-dev": ModelProfile(
        max_outputs=4, output_formats=OUTPUT_FORMATS, steps_field="num_inference_steps", steps_range=(1, 50),
        guidance_field="guidance", guidance_range=(0.0, 10.0)),
    "black-forest-labs/flux-pro": ModelProfile(
        sizing="custom", size_step=32, output_formats=OUTPUT_FORMATS, steps_field="steps", steps_range=(1, 50),
        guidance_field="guidance", guidance_range=(2.0, 5.0)),
    "black-forest-labs/flux-1.1-pro": ModelProfile(sizing="custom", size_step=32, output_formats=OUTPUT_FORMATS),
    "stability-ai/sdxl": ModelProfile(
        sizing="width_height", min_size=128, max_size=2048, max_outputs=4, negative_prompt=True,
        steps_field="num_inference_steps", steps_range=(1, 500), guidance_field="guidance_scale",
        guidance_range=(1.0, 50.0)),
    "bytedance/sdxl-lightning-4step": ModelProfile(
        sizing="width_height", min_size=256, max_size=1280, max_outputs=4, negative_prompt=True,
        steps_field="num_inference_steps", steps_range=(1, 10), guidance_field="guidance_scale",
        guidance_range=(0.0, 50.0)),
}
#: The shape of a model without a profile: AI Server's ``{prompt, aspect_ratio}``.
GENERIC = ModelProfile()

_REF = re.compile(r"^(?P<owner>[A-Za-z0-9][\w.-]*)/(?P<name>[A-Za-z0-9][\w.-]*)(?::(?P<version>[0-9a-f]{64}))?$")
_VERSION = re.compile(r"^[0-9a-f]{64}$")
# tqdm progress bars in prediction logs: "40%|####      | 2/5 [00:01<00:01, 2.1it/s]".
_PERCENT = re.compile(r"(\d{1,3})%\|")
_STEPS = re.compile(r"\b(\d+)/(\d+) \[")
# Failure messages of safety checkers: the prompt or the image was refused, a retry will not help.
_SAFETY = re.compile(r"nsfw|safety|sensitive|flagged", re.IGNORECASE)
# Failure messages of transient infrastructure trouble, where running it again may work.
_TRANSIENT = re.compile(r"out of memory|interrupted|please retry|try again later|timed out|unavailable",
                        re.IGNORECASE)


def _positive_seconds(_inst: Any, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be more than 0 seconds, got {value!r}")


def _non_negative(_inst: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be 0 or more, got {value!r}")


def _prefer_wait(_inst: Any, _attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and not 1 <= value <= 60:
        raise ValueError(f"prefer_wait must be 1-60 seconds (Replicate's limit), got {value!r}")


def _output_format(_inst: Any, _attribute: attrs.Attribute, value: str) -> None:
    if value not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {value!r}")


@attrs.frozen
class ReplicateOptions(HttpOptions):
    """Extra config keys of the ``replicate`` type."""

    #: Seconds before the first status poll; each further poll waits twice as long ...
    poll_interval: Duration = attrs.field(default=Duration(0.5), validator=_positive_seconds)
    #: ... up to this many seconds.
    poll_max_interval: Duration = attrs.field(default=Duration(5.0), validator=_positive_seconds)
    #: Failed polls in a row (connection errors, 429, 5xx) tolerated while a prediction runs.
    poll_retries: int = attrs.field(default=5, validator=_non_negative)
    #: Send ``Prefer: wait=N`` (1-60 s) so that quick models answer in the create call itself.
    prefer_wait: int | None = attrs.field(default=None, validator=_prefer_wait)
    #: ``output_format`` for models that take one, unless the task asks for another.
    output_format: str = attrs.field(default="webp", validator=_output_format)
    #: Input fields sent with every prediction, under the mapped ones (e.g. ``disable_safety_checker``).
    extra_input: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ModelRef:
    """A Replicate model: ``owner/name`` (an official model) or a version of one."""

    owner: str
    name: str
    version: str | None = None

    @property
    def slug(self) -> str:
        return f"{self.owner}/{self.name}" if self.owner else ""

    @classmethod
    def parse(cls, text: str) -> ModelRef | None:
        """``owner/name``, ``owner/name:<version>`` or a bare 64-hex version id; ``None`` for anything else."""
        text = text.strip()
        if _VERSION.fullmatch(text):
            return cls("", "", text)
        m = _REF.fullmatch(text)
        return cls(m["owner"], m["name"], m["version"]) if m else None


# --------------------------------------------------------------------------- input mapping


def nearest_aspect_ratio(width: int, height: int, choices: Sequence[str]) -> str:
    """The ``W:H`` of ``choices`` closest to ``width/height`` (compared on a log scale, so 2:1 and 1:2 are
    equally far from 1:1)."""
    target = math.log(width / height)

    def distance(choice: str) -> float:
        w, h = (int(p) for p in choice.split(":"))
        return abs(math.log(w / h) - target)

    return min(choices, key=distance)


def fit_size(width: int, height: int, lo: int, hi: int, step: int) -> tuple[int, int]:
    """``width`` x ``height`` scaled into ``[lo, hi]`` (aspect kept where the range allows) and rounded to ``step``."""
    scale = 1.0
    if max(width, height) * scale > hi:
        scale = hi / max(width, height)
    if min(width, height) * scale < lo:
        scale = lo / min(width, height)

    def snap(value: float) -> int:
        return int(min(hi, max(lo, round(value / step) * step)))

    return snap(width * scale), snap(height * scale)


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(bounds[1], max(bounds[0], value))


def plan_inputs(args: Mapping[str, Any], profile: ModelProfile, options: ReplicateOptions) -> list[dict[str, Any]]:
    """The ``input`` of each prediction a task needs (one per ``max_outputs`` images).

    Raises :class:`~aiport.core.errors.ValidationFailed` for unusable args.
    """
    a = Args(args)
    prompt = a.raw("positive_prompt")
    if prompt is None:
        prompt = a.raw("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        a.error("positive_prompt", "NotEmpty", "must not be empty.")
    negative = a.raw("negative_prompt")
    width = a.integer("width", ge=1)
    height = a.integer("height", ge=1)
    batch = a.integer("batch_size", ge=1, le=MAX_BATCH, default=1) or 1
    seed = a.integer("seed", ge=0)
    steps = a.integer("steps", ge=1)
    guidance = a.number("cfg_scale", ge=0)
    aspect = a.raw("aspect_ratio")
    fmt = a.choice("output_format", {"webp": "webp", "png": "png", "jpg": "jpg", "jpeg": "jpg"})
    a.check()

    base: dict[str, Any] = {**options.extra_input, "prompt": prompt}
    if profile.negative_prompt and isinstance(negative, str) and negative.strip():
        base["negative_prompt"] = negative
    # A lone width or height means a square, as the other backends read it.
    w, h = width or height, height or width
    wanted_ratio = aspect if isinstance(aspect, str) and aspect in profile.aspect_ratios else None
    if profile.sizing == "width_height":
        if w and h:
            base["width"], base["height"] = fit_size(w, h, profile.min_size, profile.max_size, profile.size_step)
    elif profile.sizing == "custom" and w and h:
        base["aspect_ratio"] = "custom"
        base["width"], base["height"] = fit_size(w, h, profile.min_size, profile.max_size, profile.size_step)
    elif wanted_ratio:
        base["aspect_ratio"] = wanted_ratio
    elif w and h:
        base["aspect_ratio"] = nearest_aspect_ratio(w, h, profile.aspect_ratios)
    if steps is not None and profile.steps_field:
        base[profile.steps_field] = int(_clamp(steps, profile.steps_range))
    if guidance is not None and profile.guidance_field:
        base[profile.guidance_field] = _clamp(guidance, profile.guidance_range)
    if profile.output_formats:
        chosen = fmt if fmt in profile.output_formats else options.output_format
        base["output_format"] = chosen if chosen in profile.output_formats else profile.output_formats[0]

    per = max(1, profile.max_outputs)
    counts = [per] * (batch // per) + ([batch % per] if batch % per else [])
    inputs = []
    for i, count in enumerate(counts):
        item = dict(base)
        if profile.max_outputs > 1:
            item["num_outputs"] = count
        if seed is not None:
            # Same seed on every prediction would make the same image N times.
            item["seed"] = seed + i
        inputs.append(item)
    return inputs


def log_fraction(logs: Any) -> float | None:
    """How far a prediction is (0..1) from the last progress bar in its logs; ``None`` if there is none."""
    if not isinstance(logs, str) or not logs:
        return None
    tail = logs[-4000:]
    percents = _PERCENT.findall(tail)
    if percents:
        return min(100, int(percents[-1])) / 100
    steps = _STEPS.findall(tail)
    if steps:
        done, total = (int(x) for x in steps[-1])
        return min(1.0, done / total) if total else None
    return None


def output_urls(output: Any) -> list[str] | None:
    """The URLs of a prediction's ``output`` (one URL or a list of them); ``None`` if it is neither."""
    if output is None:
        return []
    if isinstance(output, str):
        return [output]
    if isinstance(output, list) and all(isinstance(u, str) for u in output):
        return list(output)
    return None


# --------------------------------------------------------------------------- progress


class _Tracker:
    """Folds the states of a task's predictions into progress reports, sent only when they change."""

    def __init__(self, progress: ProgressReporter, count: int) -> None:
        self.progress = progress
        self.states = ["starting"] * count
        self.fractions: list[float | None] = [None] * count
        self.last: tuple[float | None, str] | None = None

    async def update(self, index: int, prediction: Mapping[str, Any]) -> None:
        status = str(prediction.get("status") or "starting")
        self.states[index] = status
        fraction = 1.0 if status == "succeeded" else log_fraction(prediction.get("logs"))
        if fraction is not None:
            self.fractions[index] = fraction
        known = [f for f in self.fractions if f is not None]
        # Predictions without a progress bar yet count as 0; no bar anywhere means no fraction at all.
        value = sum(known) / len(self.fractions) if known else None
        if len(self.states) == 1:
            text = f"Replicate prediction {status}"
            if value is not None and status not in TERMINAL:
                text += f" ({round(value * 100)}%)"
        else:
            done = self.states.count("succeeded")
            running = [s for s in self.states if s not in TERMINAL]
            text = f"Replicate: {done} of {len(self.states)} predictions done"
            if running:
                text += f", {len(running)} {'processing' if 'processing' in running else 'starting'}"
        if (value, text) != self.last:
            self.last = (value, text)
            await self.progress(value, text)


# --------------------------------------------------------------------------- the provider


class ReplicateProvider(HttpMediaProvider):
    """One configured Replicate account (see the module docs)."""

    options_class = ReplicateOptions
    options: ReplicateOptions

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(ctx, type_name=TYPE_NAME, default_base_url=DEFAULT_BASE_URL)
        #: How the provider waits between polls (tests replace it to observe the backoff).
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        # Cancel requests still running after their task went away (kept so they are not garbage collected).
        self._cancelling: set[asyncio.Task[None]] = set()

    def probe_url(self) -> str:
        return self.url("/v1/account")

    def error_message(self, data: Any) -> str | None:
        """Replicate's problem documents: ``{"title": ..., "detail": ..., "status": ...}``."""
        if isinstance(data, dict):
            title, detail = data.get("title"), data.get("detail")
            if isinstance(detail, str) and detail.strip():
                detail = " ".join(detail.split())
                if isinstance(title, str) and title and title.lower() not in detail.lower():
                    return f"{title}: {detail}"
                return detail
            if isinstance(title, str) and title:
                return title
        return super().error_message(data)

    # ----------------------------------------------------------------- generation

    async def generate(self, task: GenerationTask, progress: ProgressReporter) -> list[GeneratedOutput]:
        """Run the task's predictions (concurrently when there are several) and download their outputs."""
        if task.task != TEXT_TO_IMAGE:
            raise rejected(self.name, f"the replicate provider type runs TextToImage only, not {task.task}")
        ref = ModelRef.parse(task.model)
        if ref is None:
            raise rejected(self.name, f"{task.model!r} is not a Replicate model: use owner/name, "
                                      "owner/name:<version id> or a version id")
        inputs = plan_inputs(task.args, PROFILES.get(ref.slug, GENERIC), self.options)
        tracker = _Tracker(progress, len(inputs))
        async with self.deadline(task.timeout):
            runs = [self._run(ref, item, index, tracker, task) for index, item in enumerate(inputs)]
            results = await _all_or_nothing(runs)
        outputs = [out for result in results for out in result]
        if not outputs:
            raise self.error("the predictions succeeded without any output", status=502, retryable=False)
        return outputs

    async def _run(self, ref: ModelRef, inputs: dict[str, Any], index: int, tracker: _Tracker,
                   task: GenerationTask) -> list[GeneratedOutput]:
        """One prediction from creation to downloaded outputs; cancelled remotely if abandoned."""
        prediction = await self._create(ref, inputs)
        try:
            await tracker.update(index, prediction)
            prediction = await self._wait(prediction, index, tracker)
        except BaseException:
            # Timed out, cancelled, a sibling failed, or polling gave up: stop paying for it.
            await self._cancel(prediction)
            raise
        if prediction.get("status") != "succeeded":
            raise self._failure(prediction)
        urls = output_urls(prediction.get("output"))
        if urls is None:
            raise self.malformed("the prediction's output is not a URL or a list of URLs")
        return [await self.download(url, task.workdir, stem=f"replicate-{index}-{n}")
                for n, url in enumerate(urls)]

    async def _create(self, ref: ModelRef, inputs: dict[str, Any]) -> dict[str, Any]:
        headers = self.headers()
        if self.options.prefer_wait:
            headers["Prefer"] = f"wait={self.options.prefer_wait}"
        if ref.version:
            url, body = self.url("/v1/predictions"), {"version": ref.version, "input": inputs}
        else:
            url, body = self.url(f"/v1/models/{ref.owner}/{ref.name}/predictions"), {"input": inputs}
        return self._prediction(await self.request_json("POST", url, json_body=body, headers=headers))

    def _prediction(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(
                data.get("status"), str):
            raise self.malformed("the answer is not a prediction (no 'id' and 'status')")
        return data

    def _prediction_url(self, prediction: Mapping[str, Any], kind: str) -> str:
        """``urls.get`` / ``urls.cancel`` when they are on our origin, else built from the base URL.

        A prediction's URLs point at api.replicate.com; behind a proxy (another
        base URL) they would bypass it, and they must never take the token elsewhere.
        """
        urls = prediction.get("urls")
        url = urls.get(kind) if isinstance(urls, dict) else None
        if isinstance(url, str) and self.same_origin(url):
            return url
        suffix = "/cancel" if kind == "cancel" else ""
        return self.url(f"/v1/predictions/{prediction['id']}{suffix}")

    async def _wait(self, prediction: dict[str, Any], index: int, tracker: _Tracker) -> dict[str, Any]:
        """Poll until the prediction is finished, backing off from ``poll_interval`` to ``poll_max_interval``."""
        interval = float(self.options.poll_interval)
        delay = interval
        failures = 0
        while prediction["status"] not in TERMINAL:
            await self.sleep(delay)
            try:
                prediction = self._prediction(
                    await self.request_json("GET", self._prediction_url(prediction, "get")))
            except ProviderError as exc:
                # The prediction runs on regardless: a hiccup while watching it is no reason to give up.
                if not exc.retryable or failures >= self.options.poll_retries:
                    raise
                failures += 1
                delay = max(interval, exc.retry_after or 0.0)
                log.info("polling a prediction failed; trying again", provider=self.name, error=exc.message,
                         delay_s=delay)
                continue
            failures = 0
            interval = min(interval * 2, float(self.options.poll_max_interval))
            delay = interval
            await tracker.update(index, prediction)
        return prediction

    async def _cancel(self, prediction: Mapping[str, Any]) -> None:
        """Ask Replicate to cancel an unfinished prediction (best effort, bounded, survives our cancellation)."""
        if prediction.get("status") in TERMINAL:
            return
        url = self._prediction_url(prediction, "cancel")

        async def send() -> None:
            try:
                async with asyncio.timeout(CANCEL_TIMEOUT):
                    async with self.open("POST", url) as resp:
                        await resp.read()
                log.info("cancelled a prediction", provider=self.name, prediction=prediction.get("id"))
            except (ProviderError, TimeoutError) as exc:
                log.warning("cancelling a prediction failed", provider=self.name,
                            prediction=prediction.get("id"), error=self.redact(str(exc)))

        request = asyncio.create_task(send())
        self._cancelling.add(request)
        request.add_done_callback(self._cancelling.discard)
        # Shielded: the caller is usually being cancelled itself, and the request must still go out.
        await asyncio.shield(request)

    def _failure(self, prediction: Mapping[str, Any]) -> ProviderError:
        """The error for a prediction that ended ``failed`` or ``canceled``."""
        if prediction.get("status") == "canceled":
            return self.error("the prediction was canceled on Replicate", status=502, retryable=False)
        message = " ".join(str(prediction.get("error") or "the prediction failed without an error message").split())
        if _SAFETY.search(message):
            return self.error(f"the prediction was refused: {message}", status=400, retryable=False,
                              error_code="ContentPolicyViolation")
        return self.error(f"the prediction failed: {message}", status=502, retryable=bool(_TRANSIENT.search(message)))


async def _all_or_nothing(runs: Sequence[Coroutine[Any, Any, list[GeneratedOutput]]]
                          ) -> list[list[GeneratedOutput]]:
    """Await every run concurrently; the first failure cancels the others and is raised as it is."""
    if len(runs) == 1:
        return [await runs[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks: list[asyncio.Task[list[GeneratedOutput]]] = [group.create_task(run) for run in runs]
    except BaseExceptionGroup as failures:
        raise _first_error(failures) from None
    return [t.result() for t in tasks]


def _first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        return exc
    return group


# --------------------------------------------------------------------------- registration


@hookimpl
def register_media_providers(register: Callable[[MediaProviderType], None]) -> None:
    """The ``replicate`` type (TextToImage)."""
    register(MediaProviderType(
        name=TYPE_NAME,
        factory=ReplicateProvider,
        tasks=frozenset({TEXT_TO_IMAGE}),
        options=ReplicateOptions,
        description="Replicate predictions API: FLUX, SDXL and any text-to-image model by owner/name[:version]",
        default_base_url=DEFAULT_BASE_URL,
        api_models=dict(API_MODELS),
        model_tasks=dict(MODEL_TASKS),
    ))
