"""A protocol-faithful fake of OpenAI's media APIs: images, speech, transcriptions.

Routes, checked as the real API checks them and answering errors in its shape
``{"error": {"message", "type", "param", "code"}}`` (key checks as in
:class:`~fakes.openai_server.FakeOpenAI`, whose helpers this reuses):

* ``POST /v1/images/generations`` (JSON): ``model`` (``dall-e-2`` when absent,
  ``dall-e-3``, ``gpt-image-1``), ``prompt`` (required; 1000 / 4000 / 32000
  characters at most), ``n`` (1-10; exactly 1 for ``dall-e-3``), ``size`` (each
  model's own list), ``response_format`` (``url`` / ``b64_json``; refused for
  ``gpt-image-1``, which always answers base64), ``quality``, ``style``
  (``dall-e-3``), ``output_format``/``background``/``moderation``/
  ``output_compression`` (``gpt-image-1``), ``user``; unknown fields are refused.
  Images are real PNGs (``gpt-image-1``: PNG, JPEG or WebP) of the size asked
  for, as base64 or as a URL on the fake's own ``/files/`` (no auth, a SAS-like
  query string, as Azure blob URLs have). ``dall-e-3`` adds ``revised_prompt``,
  ``gpt-image-1`` a ``usage``.
* ``POST /v1/audio/speech`` (JSON): ``model`` (``tts-1``, ``tts-1-hd``,
  ``gpt-4o-mini-tts``), ``input`` (required, 4096 characters at most), ``voice``
  (required, a known voice), ``response_format``, ``speed`` (0.25-4),
  ``instructions`` (not for ``tts-1``/``tts-1-hd``). The fake renders ``wav``
  and ``pcm`` (24 kHz, 16-bit mono) and refuses the compressed formats; the WAV
  carries the input text in an ``ICMT`` chunk (see :mod:`fakes.media_files`).
* ``POST /v1/audio/transcriptions`` (multipart): ``file`` (required; the file
  name's extension must be a supported format; 25 MB at most, else 413; a
  ``.wav`` must decode), ``model`` (``whisper-1``, ``gpt-4o-transcribe``,
  ``gpt-4o-mini-transcribe``), ``language``, ``prompt``, ``response_format``
  (``json``, ``text``, ``srt``, ``verbose_json``, ``vtt``; only ``json``/``text``
  for the ``gpt-4o`` models), ``temperature``. The transcript is the text a
  fake-made WAV carries, else :attr:`FakeOpenAIMedia.transcript`.
* ``GET /v1/models``.

Knobs: those of :class:`~fakes.chat_fake.ChatFake` (``fail_next``,
``hang_next``, ``respond_next``) plus ``reject_content_next()`` (the next image
request is refused by the "safety system") and ``wav_unknown_length`` (speech
WAV headers declare an unknown length, as streamed WAV does).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from typing import Any

from aiohttp import web

from .media_files import colour_for, is_wav, render_image, render_wav, wav_comment
from .openai_server import FakeOpenAI, OpenAIError

IMAGE_FIELDS = frozenset({"model", "prompt", "n", "size", "quality", "response_format", "style", "user",
                          "background", "moderation", "output_format", "output_compression", "partial_images",
                          "stream"})
IMAGE_SIZES = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image-1": ("1024x1024", "1536x1024", "1024x1536", "auto"),
}
PROMPT_LIMITS = {"dall-e-2": 1000, "dall-e-3": 4000, "gpt-image-1": 32000}
QUALITIES = {"dall-e-2": ("standard",), "dall-e-3": ("standard", "hd"),
             "gpt-image-1": ("low", "medium", "high", "auto")}
GPT_IMAGE_ONLY = ("background", "moderation", "output_format", "output_compression", "partial_images")

SPEECH_FIELDS = frozenset({"model", "input", "voice", "response_format", "speed", "instructions", "stream_format"})
SPEECH_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse")
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")

TRANSCRIBE_FIELDS = frozenset({"file", "model", "language", "prompt", "response_format", "temperature",
                               "timestamp_granularities[]", "include[]", "chunking_strategy", "stream"})
TRANSCRIBE_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
AUDIO_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
MAX_AUDIO_BYTES = 25 * 1024 * 1024

CONTENT_POLICY = ("Your request was rejected as a result of our safety system. Your prompt may contain text "
                  "that is not allowed by our safety system.")


def _quoted(values: tuple[str, ...]) -> str:
    items = [f"'{v}'" for v in values]
    return ", ".join(items[:-1]) + f", and {items[-1]}" if len(items) > 1 else items[0]


def parse_multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]] | None:
    """``{name: (filename, bytes)}`` of a ``multipart/form-data`` body; ``None`` if it is not one."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or not m:
        return None
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in raw.split(b"--" + m.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, body = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        disposition = next((line for line in head.decode("utf-8", "replace").split("\r\n")
                            if line.lower().startswith("content-disposition")), "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if name:
            fields[name.group(1)] = (filename.group(1) if filename else None, body.removesuffix(b"\r\n"))
    return fields


class FakeOpenAIMedia(FakeOpenAI):
    """OpenAI's images, speech and transcription APIs on loopback (see the module docs)."""

    default_models = ("dall-e-2", "dall-e-3", "gpt-image-1", *SPEECH_MODELS, *TRANSCRIBE_MODELS)

    def __init__(self, *, api_key: str | None = "sk-test-key", transcript: str = "Hello from the fake transcriber.",
                 wav_unknown_length: bool = False, file_host: str | None = None) -> None:
        super().__init__(api_key=api_key)
        #: Host name put in image URLs instead of the API's (``localhost``: another origin, like blob storage).
        self.file_host = file_host
        #: What the fake "hears" in audio that carries no text of the fake's own.
        self.transcript = transcript
        self.wav_unknown_length = wav_unknown_length
        #: Image files served for ``response_format: url``, by URL path.
        self.files: dict[str, bytes] = {}
        #: The parsed multipart fields of each transcription request (``{name: (filename, bytes)}``).
        self.uploads: list[dict[str, tuple[str | None, bytes]]] = []
        self._content_rejections = 0

    def install(self, app: web.Application) -> None:
        app.router.add_post("/v1/images/generations", self.images)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/files/{name}", self.file)

    def reject_content_next(self, n: int = 1) -> None:
        """Refuse the next ``n`` image requests with a ``content_policy_violation``."""
        self._content_rejections += n

    def reset(self) -> None:
        super().reset()
        self._content_rejections = 0
        self.uploads.clear()

    async def _guard(self, request: web.Request) -> web.StreamResponse | None:
        await self.record(request)
        if (denied := self._check_key(request)) is not None:
            return denied
        return await self.intercept(request)

    def _fail(self, e: OpenAIError) -> web.Response:
        return self.error_response(e.status, e.message, param=e.param, code=e.code, kind=e.type)

    # ----------------------------------------------------------------- images

    async def images(self, request: web.Request) -> web.StreamResponse:
        if (early := await self._guard(request)) is not None:
            return early
        body = self.last.body
        try:
            model, n, width, height, fmt, as_url = self._check_image_request(body)
        except OpenAIError as e:
            return self._fail(e)
        if self._content_rejections:
            self._content_rejections -= 1
            return self.error_response(400, CONTENT_POLICY, code="content_policy_violation")
        data = []
        for i in range(n):
            image = await asyncio.to_thread(render_image, width, height, fmt, colour_for(body["prompt"], i))
            item: dict[str, Any] = {}
            if as_url:
                path = f"/files/img-{uuid.uuid4().hex[:16]}.{fmt}"
                self.files[path] = image
                origin = request.url.origin()
                origin = origin.with_host(self.file_host) if self.file_host else origin
                item["url"] = f"{origin}{path}?st=2026-01-01T00%3A00%3A00Z&sig=fake%2Bsig%3D"
            else:
                item["b64_json"] = base64.b64encode(image).decode("ascii")
            if model == "dall-e-3":
                item["revised_prompt"] = f"A detailed rendering of: {body['prompt']}"
            data.append(item)
        answer: dict[str, Any] = {"created": int(time.time()), "data": data}
        if model == "gpt-image-1":
            tokens = len(body["prompt"].split())
            answer["usage"] = {"total_tokens": tokens + 272 * n, "input_tokens": tokens, "output_tokens": 272 * n,
                               "input_tokens_details": {"text_tokens": tokens, "image_tokens": 0}}
        return web.json_response(answer)

    def _check_image_request(self, body: Any) -> tuple[str, int, int, int, str, bool]:
        """(model, n, width, height, file extension, answer with URLs) of a valid request."""
        if not isinstance(body, dict):
            raise OpenAIError(400, "We could not parse the JSON body of your request.")
        for key in body:
            if key not in IMAGE_FIELDS:
                raise OpenAIError(400, f"Unrecognized request argument supplied: {key}")
        model = body.get("model") or "dall-e-2"
        if model not in IMAGE_SIZES:
            raise OpenAIError(400, f"Invalid value for 'model' = {model}.", param="model", code="invalid_value")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise OpenAIError(400, "Missing required parameter: 'prompt'.", param="prompt",
                              code="missing_required_parameter")
        if len(prompt) > PROMPT_LIMITS[model]:
            raise OpenAIError(400, f"Invalid 'prompt': string too long. Expected a string with maximum length "
                                   f"{PROMPT_LIMITS[model]}, but got a string with length {len(prompt)} instead.",
                              param="prompt", code="string_above_max_length")
        n = body.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
            raise OpenAIError(400, f"Invalid 'n': expected an integer between 1 and 10, got {n!r}.", param="n")
        if model == "dall-e-3" and n != 1:
            raise OpenAIError(400, "Invalid 'n': integer above maximum value. Expected a value <= 1, but got "
                                   f"{n} instead.", param="n", code="integer_above_max_value")
        size = body.get("size", "auto" if model == "gpt-image-1" else "1024x1024")
        if size not in IMAGE_SIZES[model]:
            raise OpenAIError(400, f"Invalid value: '{size}'. Supported values are: {_quoted(IMAGE_SIZES[model])}.",
                              param="size", code="invalid_value")
        width, height = (1024, 1024) if size == "auto" else (int(x) for x in size.split("x"))
        if "quality" in body and body["quality"] not in QUALITIES[model]:
            raise OpenAIError(400, f"Invalid value: '{body['quality']}'. Supported values are: "
                                   f"{_quoted(QUALITIES[model])}.", param="quality", code="invalid_value")
        if "style" in body and (model != "dall-e-3" or body["style"] not in ("vivid", "natural")):
            raise OpenAIError(400, f"Invalid value for 'style' with model {model}.", param="style")
        fmt = "png"
        if model == "gpt-image-1":
            if "response_format" in body:
                raise OpenAIError(400, "Unknown parameter: 'response_format'.", param="response_format",
                                  code="unknown_parameter")
            fmt = body.get("output_format", "png")
            if fmt not in ("png", "jpeg", "webp"):
                raise OpenAIError(400, f"Invalid value: '{fmt}'. Supported values are: 'png', 'jpeg', and 'webp'.",
                                  param="output_format", code="invalid_value")
            fmt = "jpg" if fmt == "jpeg" else fmt
        else:
            for key in GPT_IMAGE_ONLY:
                if key in body:
                    raise OpenAIError(400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")
        response_format = body.get("response_format", "b64_json" if model == "gpt-image-1" else "url")
        if response_format not in ("url", "b64_json"):
            raise OpenAIError(400, f"Invalid value: '{response_format}'. Supported values are: 'url' and "
                                   "'b64_json'.", param="response_format", code="invalid_value")
        return model, n, width, height, fmt, response_format == "url"

    async def file(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        data = self.files.get(request.path)
        if data is None:
            return web.Response(status=404, text="BlobNotFound")
        ext = request.path.rsplit(".", 1)[-1]
        content_type = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}[ext]
        return web.Response(body=data, content_type=content_type)

    # ----------------------------------------------------------------- speech

    async def speech(self, request: web.Request) -> web.StreamResponse:
        if (early := await self._guard(request)) is not None:
            return early
        body = self.last.body
        try:
            text, fmt = self._check_speech_request(body)
        except OpenAIError as e:
            return self._fail(e)
        seconds = min(10.0, max(0.3, 0.05 * len(text)))
        if fmt == "pcm":
            wav = render_wav(seconds)
            return web.Response(body=wav[44:], content_type="audio/pcm")
        audio = await asyncio.to_thread(render_wav, seconds, comment=text, unknown_length=self.wav_unknown_length)
        return web.Response(body=audio, content_type="audio/wav")

    def _check_speech_request(self, body: Any) -> tuple[str, str]:
        if not isinstance(body, dict):
            raise OpenAIError(400, "We could not parse the JSON body of your request.")
        for key in body:
            if key not in SPEECH_FIELDS:
                raise OpenAIError(400, f"Unrecognized request argument supplied: {key}")
        model = body.get("model")
        if model not in SPEECH_MODELS:
            raise OpenAIError(400, f"Invalid value: '{model}'. Supported values are: {_quoted(SPEECH_MODELS)}.",
                              param="model", code="invalid_value")
        text = body.get("input")
        if not isinstance(text, str) or not text:
            raise OpenAIError(400, "Missing required parameter: 'input'.", param="input",
                              code="missing_required_parameter")
        if len(text) > 4096:
            raise OpenAIError(400, "Invalid 'input': string too long. Expected a string with maximum length 4096, "
                                   f"but got a string with length {len(text)} instead.", param="input",
                              code="string_above_max_length")
        voice = body.get("voice")
        if voice is None:
            raise OpenAIError(400, "Missing required parameter: 'voice'.", param="voice",
                              code="missing_required_parameter")
        if voice not in VOICES:
            raise OpenAIError(400, f"Invalid value: '{voice}'. Supported values are: {_quoted(VOICES)}.",
                              param="voice", code="invalid_value")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            raise OpenAIError(400, f"Invalid 'speed': expected a number between 0.25 and 4.0, got {speed!r}.",
                              param="speed")
        if "instructions" in body and model in ("tts-1", "tts-1-hd"):
            raise OpenAIError(400, f"Instructions are not supported for the model {model}.", param="instructions")
        fmt = body.get("response_format", "mp3")
        if fmt not in SPEECH_FORMATS:
            raise OpenAIError(400, f"Invalid value: '{fmt}'. Supported values are: {_quoted(SPEECH_FORMATS)}.",
                              param="response_format", code="invalid_value")
        if fmt not in ("wav", "pcm"):
            raise OpenAIError(400, f"this fake renders only wav and pcm speech, not {fmt}", param="response_format")
        return text, fmt

    # ----------------------------------------------------------------- transcriptions

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        if (early := await self._guard(request)) is not None:
            return early
        if len(self.last.raw) > MAX_AUDIO_BYTES:
            return self.error_response(413, f"Maximum content size limit ({MAX_AUDIO_BYTES}) exceeded "
                                            f"({len(self.last.raw)} bytes read)")
        fields = parse_multipart(request.headers.get("Content-Type", ""), self.last.raw)
        if fields is None:
            return self.error_response(400, "Invalid Content-Type header (application/json), expected "
                                            "multipart/form-data. (HINT: If you're using curl, you can pass -H "
                                            "'Content-Type: multipart/form-data')")
        self.uploads.append(fields)
        try:
            text, fmt, model = self._check_transcription(fields)
        except OpenAIError as e:
            return self._fail(e)
        if fmt == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        if fmt in ("srt", "vtt"):
            cue = "00:00:00,000 --> 00:00:02,000" if fmt == "srt" else "00:00:00.000 --> 00:00:02.000"
            head = "1\n" if fmt == "srt" else "WEBVTT\n\n"
            return web.Response(text=f"{head}{cue}\n{text}\n\n", content_type="text/plain")
        if fmt == "verbose_json":
            return web.json_response({"task": "transcribe", "language": "english", "duration": 2.0, "text": text,
                                      "segments": [{"id": 0, "start": 0.0, "end": 2.0, "text": f" {text}"}]})
        answer: dict[str, Any] = {"text": text}
        if model != "whisper-1":
            answer["usage"] = {"type": "tokens", "input_tokens": 20, "output_tokens": len(text.split()),
                               "total_tokens": 20 + len(text.split())}
        return web.json_response(answer)

    def _check_transcription(self, fields: dict[str, tuple[str | None, bytes]]) -> tuple[str, str, str]:
        for key in fields:
            if key not in TRANSCRIBE_FIELDS:
                raise OpenAIError(400, f"Unrecognized request argument supplied: {key}")
        model = fields.get("model", (None, b""))[1].decode()
        if not model:
            raise OpenAIError(400, "you must provide a model parameter", param="model")
        if model not in TRANSCRIBE_MODELS:
            raise OpenAIError(400, f"Invalid model {model}. The model argument should be left blank.",
                              param="model", code="invalid_value")
        if "file" not in fields or fields["file"][0] is None:
            raise OpenAIError(400, "Missing required parameter: 'file'.", param="file",
                              code="missing_required_parameter")
        filename, audio = fields["file"]
        ext = (filename or "").rsplit(".", 1)[-1].lower() if "." in (filename or "") else ""
        if ext not in AUDIO_EXTENSIONS:
            raise OpenAIError(400, f"Invalid file format. Supported formats: {list(AUDIO_EXTENSIONS)}",
                              param="file", code="invalid_value")
        if ext == "wav" and not is_wav(audio):
            raise OpenAIError(400, "Audio file might be corrupted or unsupported", param="file",
                              code="invalid_value")
        fmt = fields.get("response_format", (None, b"json"))[1].decode()
        allowed = ("json", "text", "srt", "verbose_json", "vtt") if model == "whisper-1" else ("json", "text")
        if fmt not in allowed:
            raise OpenAIError(400, f"response_format '{fmt}' is not compatible with model '{model}'. Use "
                                   f"{' or '.join(repr(a) for a in allowed)} instead.", param="response_format",
                              code="unsupported_value")
        return (wav_comment(audio) if ext == "wav" else None) or self.transcript, fmt, model
