"""Local text-to-speech with espeak-ng: the ``espeak`` media provider type (task ``TextToSpeech``).

espeak-ng is a small formant synthesiser packaged by every Linux distribution
(Debian: ``apt-get install espeak-ng``). It needs no GPU, no model download and
no network, which makes it the gateway's speech of last resort: robotic, but
always there. Each request runs one ``espeak-ng`` child process:

- never through a shell, and the text goes in on **stdin** (``--stdin``), never
  as an argument, so no text (``-w /etc/passwd``, ``--help``...) can be read as
  an option;
- the voice is checked against ``espeak-ng --voices`` first (an unknown voice is
  a 400 naming a few valid ones), so the only user-chosen argument is one
  espeak-ng itself listed;
- the WAV is written into the task's ``workdir`` (``-w``), and its duration is
  read back from the WAV header;
- the process is killed when the task's timeout runs out or the job is cancelled.

Models and voices. A request's model picks the voice: the gateway ids ``espeak``
(the provider's default voice), ``espeak:VOICE`` (``espeak:en-us``,
``espeak:de``, ...) and ``text-to-speech`` (AI Server's default TTS model id)
map to the provider model names ``espeak`` / ``espeak:VOICE``; a request's
``voice`` argument, when given, wins over the model's. A voice is anything
``espeak-ng --voices`` lists: a language (``en-us``), one of a voice's other
languages (``en``, ``fr``), or a voice name (``English_(America)``), with an
optional ``+variant`` (``en-us+f3``, see ``espeak-ng --voices=variant``).

Arguments: ``text`` (or ``input``, the sync DTO's name), ``voice``, ``speed`` (a
multiplier, 0.25-4, as OpenAI's ``/v1/audio/speech`` has it; it scales the
provider's ``words_per_minute``) and ``pitch`` (0-99).

With espeak-ng installed the type asks for an implicit instance (see
:func:`implicit_instance`), so speech works with no provider configured.
"""

from __future__ import annotations

import asyncio
import difflib
import re
import shutil
import wave
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import attrs
import structlog
from aiport.core.errors import ProviderError
from aiport.core.hookspecs import hookimpl
from aiport.core.media import (
    TEXT_TO_SPEECH,
    Args,
    GeneratedOutput,
    GenerationTask,
    ProgressReporter,
    output_path,
)
from aiport.core.registry import MediaProviderType, ProviderContext

log = structlog.get_logger("aiport.speech_espeak")

TYPE_NAME = "espeak"
#: Voice of the bare ``espeak`` model unless the provider's ``voice`` option says otherwise.
DEFAULT_VOICE = "en-us"
#: espeak-ng's own limits for ``-s`` (words per minute) and ``-p`` (pitch).
MIN_WPM, MAX_WPM = 80, 450
#: Voices offered as gateway model ids ``espeak:VOICE``; any other voice works through the
#: ``voice`` argument. Each is a language espeak-ng 1.51 lists (checked by the tests).
CATALOG_VOICES = ("en-us", "en-gb", "de", "fr", "es", "it", "nl", "pt", "pt-br", "pl", "ru", "sv",
                  "tr", "hi", "cmn")
#: Largest stderr kept for an error message.
_STDERR_CHARS = 400


def api_models() -> dict[str, str]:
    """Gateway model id -> provider model name: ``espeak``, ``espeak:VOICE`` and ``text-to-speech``."""
    models = {TYPE_NAME: TYPE_NAME, "text-to-speech": TYPE_NAME}
    models.update({f"{TYPE_NAME}:{voice}": f"{TYPE_NAME}:{voice}" for voice in CATALOG_VOICES})
    return models


@attrs.frozen
class EspeakOptions:
    """The ``espeak`` provider's own config keys."""

    #: The program to run: a name looked up on ``PATH`` or an absolute path.
    binary: str = "espeak-ng"
    #: Voice used when neither the model (``espeak:VOICE``) nor the request names one.
    voice: str = DEFAULT_VOICE
    #: Speaking rate at ``speed`` 1 (espeak-ng's default is 175).
    words_per_minute: int = attrs.field(default=175)
    #: Pitch when the request gives none, 0-99 (espeak-ng's default is 50).
    pitch: int = attrs.field(default=50)
    #: Longest text accepted, in characters.
    max_chars: int = attrs.field(default=20_000)

    @words_per_minute.validator
    def _check_wpm(self, attribute: attrs.Attribute, value: int) -> None:
        if not MIN_WPM <= value <= MAX_WPM:
            raise ValueError(f"words_per_minute must be between {MIN_WPM} and {MAX_WPM}, got {value}")

    @pitch.validator
    def _check_pitch(self, attribute: attrs.Attribute, value: int) -> None:
        if not 0 <= value <= 99:
            raise ValueError(f"pitch must be between 0 and 99, got {value}")

    @max_chars.validator
    def _check_max_chars(self, attribute: attrs.Attribute, value: int) -> None:
        if value < 1:
            raise ValueError(f"max_chars must be at least 1, got {value}")


@attrs.frozen
class Voices:
    """What ``espeak-ng --voices`` (and ``--voices=variant``) listed, for checking requests."""

    #: Lower-cased accepted name -> the spelling passed to ``-v``.
    names: Mapping[str, str]
    #: Lower-cased variant name -> its file name (``f3``, ``klatt``...).
    variants: Mapping[str, str]
    #: The languages, in espeak-ng's order, for messages.
    languages: tuple[str, ...]

    def resolve(self, voice: str) -> str | None:
        """The ``-v`` value for ``voice`` (``en-us``, ``en``, ``English_(America)``, ``de+f3``), or None."""
        base, plus, variant = voice.strip().partition("+")
        found = self.names.get(base.lower())
        if found is None:
            return None
        if not plus:
            return found
        file = self.variants.get(variant.lower())
        return f"{found}+{file}" if file else None

    def suggest(self, voice: str, count: int = 8) -> list[str]:
        """A few valid voices for an error message: close matches first, then common ones."""
        close = difflib.get_close_matches(voice.strip().lower().partition("+")[0], self.languages, n=4, cutoff=0.5)
        common = [v for v in CATALOG_VOICES if v in self.names]
        picked: list[str] = []
        for name in [*close, *common, *self.languages]:
            if name not in picked:
                picked.append(name)
        return picked[:count]


_VOICE_LINE = re.compile(r"\s*\d+\s+(\S+)\s+\S+\s+(\S+)\s+(\S+)(.*)")
_OTHER_LANGUAGE = re.compile(r"\(([^\s()]+)\s+(\d+)\)")


def parse_voices(listing: str, variant_listing: str = "") -> Voices:
    """Read ``espeak-ng --voices`` output (and ``--voices=variant``) into :class:`Voices`.

    A voice is accepted by its language, by any of its "other languages" and by
    its name; when several voices claim the same other language, the one with
    the best (lowest) priority number wins, as in espeak-ng itself. A primary
    language always beats another voice's "other language".
    """
    names: dict[str, str] = {}
    languages: list[str] = []
    others: dict[str, tuple[int, str]] = {}
    for line in listing.splitlines()[1:]:
        m = _VOICE_LINE.match(line)
        if not m:
            continue
        language, name, _file, rest = m.groups()
        if language == "variant":
            continue
        languages.append(language)
        names.setdefault(language.lower(), language)
        names.setdefault(name.lower(), name)
        for other, priority in _OTHER_LANGUAGE.findall(rest):
            best = others.get(other.lower())
            if best is None or int(priority) < best[0]:
                others[other.lower()] = (int(priority), other)
    for key, (_priority, spelling) in others.items():
        names.setdefault(key, spelling)
    variants: dict[str, str] = {}
    for line in variant_listing.splitlines()[1:]:
        m = _VOICE_LINE.match(line)
        if m and m.group(1) == "variant":
            file = m.group(3).rsplit("/", 1)[-1]
            variants.setdefault(file.lower(), file)
            variants.setdefault(m.group(2).lower(), file)
    return Voices(names=names, variants=variants, languages=tuple(languages))


def wav_duration(path: Path) -> tuple[int, int, float]:
    """``(frames, sample rate, seconds)`` from a WAV file's header."""
    with wave.open(str(path), "rb") as wav:
        frames, rate = wav.getnframes(), wav.getframerate()
    return frames, rate, (frames / rate if rate else 0.0)


class EspeakProvider:
    """One configured ``espeak`` provider: runs ``espeak-ng`` per request."""

    def __init__(self, ctx: ProviderContext) -> None:
        options = ctx.options if isinstance(ctx.options, EspeakOptions) else EspeakOptions(**dict(ctx.options or {}))
        self.name: str = ctx.provider.name
        self.options = options
        #: The provider's timeout caps each task's own (a stuck synthesiser must not hold a slot).
        self.timeout = float(getattr(ctx.provider, "timeout", 180.0))
        self._voices: Voices | None = None
        self._voices_lock = asyncio.Lock()

    # ------------------------------------------------------------------ helpers

    def _error(self, message: str, **kwargs: Any) -> ProviderError:
        return ProviderError(message, provider=self.name, **kwargs)

    def binary(self) -> str:
        """The absolute path of the espeak-ng program; a ProviderError when it is not installed."""
        found = shutil.which(self.options.binary)
        if found is None:
            raise self._error(f"{self.options.binary!r} is not installed or not on PATH; "
                              "install it with: apt-get install espeak-ng", error_code="NotInstalled")
        return found

    async def _run(self, argv: list[str], stdin: bytes | None, timeout: float) -> tuple[bytes, bytes]:
        """Run ``argv`` (no shell) feeding ``stdin``; kill it at ``timeout`` or on cancellation."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except BaseException as exc:
            # Timeout or cancellation: the child must not outlive the request.
            with suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            if isinstance(exc, TimeoutError):
                raise self._error(f"espeak-ng did not finish within {timeout:g} s and was stopped",
                                  error_code="Timeout") from None
            raise
        if proc.returncode != 0:
            detail = stderr.decode("utf-8", "replace").strip()[-_STDERR_CHARS:]
            raise self._error(f"espeak-ng failed (exit status {proc.returncode}): {detail or 'no message'}")
        return stdout, stderr

    async def voices(self) -> Voices:
        """The installed voices, listed once per provider (``espeak-ng --voices``)."""
        async with self._voices_lock:
            if self._voices is None:
                binary = self.binary()
                listing, _ = await self._run([binary, "--voices"], None, 30.0)
                variants, _ = await self._run([binary, "--voices=variant"], None, 30.0)
                self._voices = parse_voices(listing.decode("utf-8", "replace"),
                                            variants.decode("utf-8", "replace"))
            return self._voices

    def requested_voice(self, task: GenerationTask) -> str:
        """The voice asked for: the ``voice`` argument, else the model's ``:VOICE``, else the default."""
        voice = task.args.get("voice")
        if isinstance(voice, str) and voice.strip():
            return voice.strip()
        model = (task.model or "").strip()
        family, colon, tag = model.partition(":")
        if colon and family == TYPE_NAME and tag:
            return tag
        if model and model not in (TYPE_NAME, "text-to-speech") and not colon:
            # A provider model mapped to a bare voice (``api_model: de``) names that voice.
            return model
        return self.options.voice

    # ------------------------------------------------------------------ contract

    async def generate(self, task: GenerationTask, progress: ProgressReporter) -> list[GeneratedOutput]:
        """Speak ``task.args['text']`` into a WAV file in ``task.workdir``."""
        if task.task != TEXT_TO_SPEECH:
            raise self._error(f"the espeak provider only does {TEXT_TO_SPEECH}, not {task.task}",
                              upstream_status=400)
        args = Args(task.args)
        text_field = "input" if args.raw("text") is None and args.raw("input") is not None else "text"
        raw_text = args.raw(text_field)
        speed = args.number("speed", ge=0.25, le=4.0, default=1.0)
        pitch = args.integer("pitch", ge=0, le=99, default=self.options.pitch)
        text = raw_text if isinstance(raw_text, str) else None
        if raw_text is None:
            args.error(text_field, "NotEmpty", "must not be empty.")
        elif text is None:
            args.error(text_field, "InvalidValue", "must be text.")
        elif len(text) > self.options.max_chars:
            args.error(text_field, "MaximumLength",
                       f"must be {self.options.max_chars} characters or fewer. You entered {len(text)} characters.")
        args.check()  # raises unless text, speed and pitch are all set and valid
        assert text is not None and speed is not None and pitch is not None

        voices = await self.voices()
        wanted = self.requested_voice(task)
        voice = voices.resolve(wanted)
        if voice is None:
            raise self._error(
                f"Unknown espeak-ng voice {wanted!r}; valid voices include: {', '.join(voices.suggest(wanted))} "
                f"({len(voices.languages)} in all; `espeak-ng --voices` lists them)",
                upstream_status=400, error_code="InvalidVoice")

        wpm = max(MIN_WPM, min(MAX_WPM, round(self.options.words_per_minute * speed)))
        out = output_path(task.workdir.resolve(), "wav", "speech")
        argv = [self.binary(), "-b", "1", "-v", voice, "-s", str(wpm), "-p", str(pitch), "-w", str(out), "--stdin"]
        # NUL would end espeak-ng's text early; everything else is read as text, never as options.
        data = text.replace("\x00", " ").encode("utf-8")
        await progress(None, f"Speaking with espeak-ng voice {voice}")
        await self._run(argv, data, min(task.timeout, self.timeout))

        try:
            frames, _rate, duration = await asyncio.to_thread(wav_duration, out)
        except (OSError, EOFError, wave.Error) as exc:
            raise self._error(f"espeak-ng wrote no readable WAV file: {exc}") from None
        if frames == 0:
            raise self._error("espeak-ng wrote an empty WAV file (nothing to say?)", upstream_status=400)
        await progress(1.0, "Done")
        return [GeneratedOutput(path=out, ext="wav", content_type="audio/wav", duration=round(duration, 3))]

    async def probe(self) -> None:
        """Healthy when espeak-ng is installed and answers ``--version``."""
        binary = self.binary()
        stdout, _ = await self._run([binary, "--version"], None, 10.0)
        if b"espeak" not in stdout.lower():
            raise self._error(f"{binary} --version did not answer like espeak-ng: {stdout[:80]!r}")

    async def aclose(self) -> None:
        """Nothing to release: every process ends with its request."""


# --------------------------------------------------------------------------- registration


def implicit_instance() -> bool:
    """Whether aiport should run an ``espeak`` provider when the config has none: when espeak-ng is
    installed. ``shutil.which`` is a few ``stat`` calls, cheap enough for a registration hook.

    That instance makes speech work in the embedded default config: it is named
    ``espeak``, has the default options and serves every model of the type
    (including ``text-to-speech``). Configuring any provider of type ``espeak``
    (even ``enabled: false``) replaces it.
    """
    return shutil.which(EspeakOptions().binary) is not None


@hookimpl
def register_media_providers(register: Callable[[MediaProviderType], None]) -> None:
    """Register the ``espeak`` media provider type."""
    models = api_models()
    register(MediaProviderType(
        name=TYPE_NAME,
        factory=EspeakProvider,
        tasks=frozenset({TEXT_TO_SPEECH}),
        options=EspeakOptions,
        description="Local text-to-speech with espeak-ng (no GPU, no model download)",
        api_models=models,
        model_tasks=dict.fromkeys(models, TEXT_TO_SPEECH),
        implicit_instance=implicit_instance(),
    ))
