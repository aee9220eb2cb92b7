"""The ``openai-media`` provider type: OpenAI's images, speech and transcription APIs.

Tasks and wire formats (``{base}/v1/...``; a base URL already ending in a
version, such as ``.../v1``, is used as it is):

- **TextToImage**: ``POST /v1/images/generations`` ``{model, prompt, n, size}``.
  ``dall-e-3`` makes one image per call, so a batch is one call per image (made
  one after the other, as AI Server does: image rate limits are low);
  ``dall-e-2`` and ``gpt-image-1`` take ``n`` up to 10. The task's width and
  height are mapped to the model's sizes: the size whose aspect ratio is
  nearest, among those the smallest that covers the request (else the
  largest). A request whose aspect ratio is more than 20% away from every size
  the model makes (e.g. 1024x768 for ``dall-e-3``, any non-square for
  ``dall-e-2``) is refused with a 400 *before* any call. DALL-E is asked for
  ``response_format: b64_json`` (option ``image_response_format: url`` asks for
  URLs, which are then downloaded, without the key unless they are on the API's
  own origin); ``gpt-image-1`` always answers in base64 and takes
  ``output_format`` instead. ``quality`` passes through when the model knows it.
  Negative prompts and seeds have no equivalent and are ignored.
- **TextToSpeech**: ``POST /v1/audio/speech`` ``{model, input, voice,
  response_format}``. The model string is AI Server's ``model:voice``
  (``tts-1:alloy``), split in two; a ``voice`` arg wins over the one in the
  model string, ``default_voice`` applies when neither names one. The text is the
  ``text`` arg (AI Server's queue API) or ``input`` (its sync API); 4096
  characters at most, checked before the call. The answer (``speech_format``,
  WAV by default) is written to the workdir with its duration.
- **SpeechToText**: ``POST /v1/audio/transcriptions``, multipart ``file`` and
  ``model`` with ``response_format: json`` (plus ``language`` when given); the
  upload's format must be one OpenAI reads and at most 25 MB, both checked
  before the call. The result is ``GeneratedOutput(text=...)``.

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` and
map through :class:`~.chat_common.HttpProvider`: 4xx are not retryable and
keep OpenAI's message (a ``content_policy_violation`` gets the error code
``ContentPolicyViolation``), 408/429/5xx and connection errors are retryable
with ``Retry-After``/``retry-after-ms``. The key goes in ``api_key_header`` when
configured, else ``Authorization: Bearer``, and is scrubbed from error text.

Health: ``probe()`` GETs ``/v1/models`` (AI Server counts OpenAI media as always
online; this also catches a revoked key).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import attrs
from aiport.core.errors import FieldError, ProviderError, ValidationFailed
from aiport.core.media import (
    SPEECH_TO_TEXT,
    TEXT_TO_IMAGE,
    TEXT_TO_SPEECH,
    Args,
    GeneratedOutput,
    GenerationTask,
    ProgressReporter,
    content_type_for,
)
from aiport.core.sdk import HttpOptions, MediaProviderType, ProviderContext, hookimpl, rejected

from .media_common import HttpMediaProvider, ext_for_content_type

TYPE_NAME = "openai-media"
DEFAULT_BASE_URL = "https://api.openai.com"

#: Catalog data: gateway model id -> OpenAI model (speech models as AI Server writes them, ``model:voice``).
API_MODELS: Mapping[str, str] = {
    "dall-e-3": "dall-e-3",
    "dall-e-2": "dall-e-2",
    "gpt-image-1": "gpt-image-1",
    "tts-1": "tts-1:alloy",
    "tts-1-hd": "tts-1-hd:alloy",
    "gpt-4o-mini-tts": "gpt-4o-mini-tts:alloy",
    # AI Server's default model ids for its speech APIs.
    "text-to-speech": "tts-1:alloy",
    "whisper-1": "whisper-1",
    "gpt-4o-transcribe": "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe": "gpt-4o-mini-transcribe",
    "speech-to-text": "whisper-1",
}
#: Catalog data: gateway model id -> task.
MODEL_TASKS: Mapping[str, str] = {
    **{m: TEXT_TO_IMAGE for m in ("dall-e-3", "dall-e-2", "gpt-image-1")},
    **{m: TEXT_TO_SPEECH for m in ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "text-to-speech")},
    **{m: SPEECH_TO_TEXT for m in ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "speech-to-text")},
}

#: The most images one task may ask for (AI Server's ``BatchSize`` limit).
MAX_BATCH = 10
#: How far (as a factor) the requested aspect ratio may be from the size an image model makes.
ASPECT_TOLERANCE = 1.2
#: The longest text one speech call takes.
MAX_SPEECH_CHARS = 4096
#: The largest audio file the transcription API takes.
MAX_AUDIO_BYTES = 25 * 1024 * 1024
#: File formats the transcription API reads (by extension).
AUDIO_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
SPEECH_FORMATS = ("wav", "mp3", "flac", "opus", "aac")
#: OpenAI error codes that mean the prompt or image was refused by its safety system.
_CONTENT_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
_VERSIONED = re.compile(r"/v\d+[a-z0-9]*$")


@attrs.frozen
class ImageModel:
    """What one OpenAI image model accepts."""

    sizes: tuple[tuple[int, int], ...]
    #: Images per call (``n``).
    max_n: int
    qualities: tuple[str, ...]
    #: Whether it takes ``response_format`` (DALL-E); otherwise it always answers base64.
    response_format: bool
    #: ``output_format`` values (``gpt-image-*``); empty when it takes none.
    output_formats: tuple[str, ...] = ()


IMAGE_MODELS: Mapping[str, ImageModel] = {
    "dall-e-2": ImageModel(((256, 256), (512, 512), (1024, 1024)), 10, ("standard",), True),
    "dall-e-3": ImageModel(((1024, 1024), (1792, 1024), (1024, 1792)), 1, ("standard", "hd"), True),
    "gpt-image-1": ImageModel(((1024, 1024), (1536, 1024), (1024, 1536)), 10, ("low", "medium", "high", "auto"),
                              False, ("png", "jpeg", "webp")),
}


def image_model(name: str) -> ImageModel | None:
    """The capabilities of an image model, by name or family prefix (``gpt-image-1-mini`` is a gpt-image)."""
    if name in IMAGE_MODELS:
        return IMAGE_MODELS[name]
    for prefix, key in (("gpt-image", "gpt-image-1"), ("dall-e-3", "dall-e-3"), ("dall-e-2", "dall-e-2")):
        if name.startswith(prefix):
            return IMAGE_MODELS[key]
    return None


def choose_size(width: int | None, height: int | None, sizes: tuple[tuple[int, int], ...]
                ) -> tuple[int, int] | None:
    """The model size for a requested width x height, or ``None`` when the aspect ratio cannot be made.

    Nearest aspect ratio first (on a log scale); among sizes of that ratio the
    smallest covering the request, else the largest. No width and height means
    1024x1024, which every model makes; a lone one means a square.
    """
    if not width and not height:
        return (1024, 1024) if (1024, 1024) in sizes else sizes[0]
    w = width or height or 1
    h = height or width or 1
    if (w, h) in sizes:
        return w, h
    target = math.log(w / h)
    distance = {size: abs(math.log(size[0] / size[1]) - target) for size in sizes}
    best = min(distance.values())
    if math.exp(best) > ASPECT_TOLERANCE:
        return None
    same = sorted((s for s in sizes if distance[s] - best < 1e-9), key=lambda s: s[0] * s[1])
    covering = [s for s in same if s[0] >= w and s[1] >= h]
    return covering[0] if covering else same[-1]


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


@attrs.frozen
class OpenAIMediaOptions(HttpOptions):
    """Extra config keys of the ``openai-media`` type."""

    #: ``OpenAI-Organization`` header.
    organization: str | None = None
    #: ``OpenAI-Project`` header.
    project: str | None = None
    #: How DALL-E returns images: ``b64_json`` (inline) or ``url`` (then downloaded). gpt-image is always inline.
    image_response_format: str = attrs.field(
        default="b64_json", validator=lambda _i, _a, v: _choice("image_response_format", v, ("b64_json", "url")))
    #: The audio format speech is asked for.
    speech_format: str = attrs.field(
        default="wav", validator=lambda _i, _a, v: _choice("speech_format", v, SPEECH_FORMATS))
    #: The voice when neither the model string (``tts-1:nova``) nor the task names one.
    default_voice: str = "alloy"


class OpenAIMediaProvider(HttpMediaProvider):
    """One configured OpenAI account for images and speech (see the module docs)."""

    options_class = OpenAIMediaOptions
    options: OpenAIMediaOptions

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__(ctx, type_name=TYPE_NAME, default_base_url=DEFAULT_BASE_URL)
        self.api_root = self.base_url if _VERSIONED.search(self.base_url) else f"{self.base_url}/v1"

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        if self.options.organization:
            headers["OpenAI-Organization"] = self.options.organization
        if self.options.project:
            headers["OpenAI-Project"] = self.options.project
        return headers

    def probe_url(self) -> str:
        return f"{self.api_root}/models"

    def http_error(self, status: int, headers: Mapping[str, str], text: str, reason: str | None = None
                   ) -> ProviderError:
        """As the base maps it, with a safety-system refusal marked ``ContentPolicyViolation``."""
        error = super().http_error(status, headers, text, reason)
        if status == 400 and any(f'"{code}"' in text for code in _CONTENT_CODES):
            error.error_code = "ContentPolicyViolation"
        return error

    async def generate(self, task: GenerationTask, progress: ProgressReporter) -> list[GeneratedOutput]:
        """Run one TextToImage, TextToSpeech or SpeechToText task."""
        if task.task == TEXT_TO_IMAGE:
            run = self._images
        elif task.task == TEXT_TO_SPEECH:
            run = self._speech
        elif task.task == SPEECH_TO_TEXT:
            run = self._transcribe
        else:
            raise rejected(self.name, f"the openai-media provider type runs TextToImage, TextToSpeech and "
                                      f"SpeechToText, not {task.task}")
        return await run(task, progress)

    # ----------------------------------------------------------------- images

    async def _images(self, task: GenerationTask, progress: ProgressReporter) -> list[GeneratedOutput]:
        spec = image_model(task.model)
        if spec is None:
            raise rejected(self.name, f"{task.model!r} is not an OpenAI image model (dall-e-2, dall-e-3, "
                                      "gpt-image-1)")
        a = Args(task.args)
        prompt = _prompt(a)
        width, height = a.integer("width", ge=1), a.integer("height", ge=1)
        batch = a.integer("batch_size", ge=1, le=MAX_BATCH, default=1) or 1
        quality = a.raw("quality")
        fmt = a.choice("output_format", {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"})
        a.check()
        size = choose_size(width, height, spec.sizes)
        if size is None:
            made = ", ".join(f"{w}x{h}" for w, h in spec.sizes)
            asked = f"{width or height}x{height or width}"
            raise rejected(self.name, f"{task.model} cannot make a {asked} image: it makes {made}, and none of "
                                      "them is within 20% of that aspect ratio")
        body: dict[str, Any] = {"model": task.model, "prompt": prompt, "size": f"{size[0]}x{size[1]}"}
        if quality is not None:
            if str(quality) not in spec.qualities:
                raise rejected(self.name, f"{task.model} takes quality {', '.join(spec.qualities)}, "
                                          f"not {str(quality)[:20]!r}")
            body["quality"] = str(quality)
        if spec.response_format:
            body["response_format"] = self.options.image_response_format
        if spec.output_formats and fmt in spec.output_formats:
            body["output_format"] = fmt
        counts = [spec.max_n] * (batch // spec.max_n) + ([batch % spec.max_n] if batch % spec.max_n else [])
        outputs: list[GeneratedOutput] = []
        async with self.deadline(task.timeout):
            await progress(0.0 if batch > 1 else None, f"OpenAI {task.model}: generating {batch} image(s)")
            for call, count in enumerate(counts):
                data = await self.request_json("POST", f"{self.api_root}/images/generations",
                                               json_body={**body, "n": count})
                outputs += await self._image_outputs(data, task, call)
                if len(counts) > 1:
                    await progress(len(outputs) / batch, f"OpenAI {task.model}: {len(outputs)} of {batch} images")
        return outputs

    async def _image_outputs(self, data: Any, task: GenerationTask, call: int) -> list[GeneratedOutput]:
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise self.malformed("the answer has no 'data' images")
        outputs = []
        for n, item in enumerate(items):
            stem = f"openai-{call}-{n}"
            if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
                try:
                    raw = base64.b64decode(item["b64_json"], validate=True)
                except (binascii.Error, ValueError):
                    raise self.malformed("an image's b64_json is not base64") from None
                outputs.append(await self.save(raw, task.workdir, stem=stem))
            elif isinstance(item, dict) and isinstance(item.get("url"), str):
                outputs.append(await self.download(item["url"], task.workdir, stem=stem))
            else:
                raise self.malformed("an image has neither 'b64_json' nor 'url'")
        return outputs

    # ----------------------------------------------------------------- speech

    async def _speech(self, task: GenerationTask, progress: ProgressReporter) -> list[GeneratedOutput]:
        model, _, model_voice = task.model.partition(":")
        a = Args(task.args)
        text = a.raw("text")
        if text is None:
            text = a.raw("input")
        if not isinstance(text, str) or not text.strip():
            a.error("text", "NotEmpty", "must not be empty.")
        voice = a.raw("voice")
        speed = a.number("speed", ge=0.25, le=4.0)
        a.check()
        text = str(text)
        if len(text) > MAX_SPEECH_CHARS:
            raise rejected(self.name, f"OpenAI speaks at most {MAX_SPEECH_CHARS} characters per request; "
                                      f"the text has {len(text)}")
        body: dict[str, Any] = {"model": model, "input": text,
                                "voice": str(voice or model_voice or self.options.default_voice),
                                "response_format": self.options.speech_format}
        if speed is not None:
            body["speed"] = speed
        async with self.deadline(task.timeout):
            await progress(None, f"OpenAI {model}: speaking with voice {body['voice']}")
            async with self.open("POST", f"{self.api_root}/audio/speech", json_body=body, stream=True) as resp:
                output = await self.save_response(resp, task.workdir, stem=f"speech-{model}",
                                                  fallback_ext=self.options.speech_format)
        return [output]

    # ----------------------------------------------------------------- transcription

    async def _transcribe(self, task: GenerationTask, progress: ProgressReporter) -> list[GeneratedOutput]:
        audio = task.inputs.get("audio")
        if audio is None:
            raise ValidationFailed([FieldError("NotEmpty", "Audio",
                                               "'Audio' must not be empty: upload a file in the 'audio' field.")])
        ext = audio.extension or ext_for_content_type(audio.content_type) or ""
        if ext not in AUDIO_EXTENSIONS:
            raise rejected(self.name, f"OpenAI transcribes {', '.join(AUDIO_EXTENSIONS)} files, not "
                                      f"{ext or 'files without an extension'!r}")
        size = audio.path.stat().st_size
        if size > MAX_AUDIO_BYTES:
            raise rejected(self.name, f"OpenAI transcribes files of up to 25 MB; this one has "
                                      f"{size / 2**20:.1f} MiB")
        a = Args(task.args)
        language = a.raw("language")
        a.check()
        data = await asyncio.to_thread(audio.path.read_bytes)
        form = aiohttp.FormData()
        # OpenAI tells the format by the file name's extension; the client's own name is not needed.
        form.add_field("file", data, filename=f"audio.{ext}", content_type=content_type_for(ext))
        form.add_field("model", task.model)
        form.add_field("response_format", "json")
        if isinstance(language, str) and language.strip():
            form.add_field("language", language.strip())
        async with self.deadline(task.timeout):
            await progress(None, f"OpenAI {task.model}: transcribing")
            async with self.open("POST", f"{self.api_root}/audio/transcriptions", data=form) as resp:
                raw = await resp.text(errors="replace")
        try:
            text = json.loads(raw).get("text")
        except (ValueError, AttributeError):
            text = None
        if not isinstance(text, str):
            raise self.malformed("the transcription has no 'text'")
        return [GeneratedOutput(text=text.strip())]


def _prompt(a: Args) -> str:
    prompt = a.raw("positive_prompt")
    if prompt is None:
        prompt = a.raw("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        a.error("positive_prompt", "NotEmpty", "must not be empty.")
        return ""
    return prompt


# --------------------------------------------------------------------------- registration


@hookimpl
def register_media_providers(register: Callable[[MediaProviderType], None]) -> None:
    """The ``openai-media`` type (TextToImage, TextToSpeech, SpeechToText)."""
    register(MediaProviderType(
        name=TYPE_NAME,
        factory=OpenAIMediaProvider,
        tasks=frozenset({TEXT_TO_IMAGE, TEXT_TO_SPEECH, SPEECH_TO_TEXT}),
        options=OpenAIMediaOptions,
        description="OpenAI images (DALL-E, gpt-image), speech (tts-1, gpt-4o-mini-tts) and transcription "
                    "(whisper-1, gpt-4o-transcribe)",
        default_base_url=DEFAULT_BASE_URL,
        api_models=dict(API_MODELS),
        model_tasks=dict(MODEL_TASKS),
    ))
