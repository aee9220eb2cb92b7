"""The ``openai-media`` provider against a protocol-faithful fake of OpenAI's images and audio APIs."""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiport.core.config import Config, ProviderConfig, Secret
from aiport.core.errors import ProviderError, ValidationFailed
from aiport.core.media import SPEECH_TO_TEXT, TEXT_TO_IMAGE, TEXT_TO_SPEECH, GenerationTask, MediaInput
from aiport.core.plugins import build_plugin_manager
from aiport.core.registry import ProviderContext, Registry, collect
from aiport.plugins import media_openai
from fakes.media_files import render_wav
from fakes.openai_media_server import FakeOpenAIMedia
from structlog.testing import capture_logs
from wand.image import Image

KEY = "sk-test-media-secret-5678"


class Progress:
    def __init__(self) -> None:
        self.reports: list[tuple[float | None, str | None]] = []

    async def __call__(self, value: float | None = None, status: str | None = None) -> None:
        self.reports.append((value, status))


@pytest.fixture(scope="module")
def registry() -> Registry:
    return collect(build_plugin_manager(), Config())


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIMedia]:
    async with FakeOpenAIMedia(api_key=KEY) as f:
        yield f  # type: ignore[misc]


@pytest.fixture
def make(registry: Registry, http: aiohttp.ClientSession, fake: FakeOpenAIMedia) -> Callable[..., Any]:
    """``make(options, **provider config)``: a provider built by the registered factory."""

    def build(options: dict[str, Any] | None = None, **cfg: Any) -> Any:
        cfg.setdefault("base_url", fake.base_url)
        cfg.setdefault("api_key", Secret(KEY))
        ctx = ProviderContext(provider=ProviderConfig(name="oai", type="openai-media", **cfg),
                              options=options or {}, http=http, config=Config())
        return registry.media_providers["openai-media"].factory(ctx)

    return build


def image_task(workdir: Path, model: str = "dall-e-3", **args: Any) -> GenerationTask:
    args.setdefault("positive_prompt", "a red fox in the snow")
    return GenerationTask(task=TEXT_TO_IMAGE, model=model, args=args, inputs={}, workdir=workdir, timeout=10)


def speech_task(workdir: Path, model: str = "tts-1:alloy", timeout: float = 10, **args: Any) -> GenerationTask:
    return GenerationTask(task=TEXT_TO_SPEECH, model=model, args=args, inputs={}, workdir=workdir, timeout=timeout)


def stt_task(workdir: Path, audio: Path | None, model: str = "whisper-1", filename: str = "clip.wav",
             **args: Any) -> GenerationTask:
    inputs = {} if audio is None else {"audio": MediaInput(field="audio", path=audio, content_type="audio/wav",
                                                           filename=filename)}
    return GenerationTask(task=SPEECH_TO_TEXT, model=model, args=args, inputs=inputs, workdir=workdir)


def api_calls(fake: FakeOpenAIMedia, path: str) -> list[Any]:
    return [r for r in fake.requests if r.path == path]


def measured(path: Path) -> tuple[int, int, str]:
    with Image(filename=str(path)) as img:
        return img.width, img.height, img.format


# --------------------------------------------------------------------------- registration


def test_registered_by_the_default_plugins(registry: Registry) -> None:
    ptype = registry.media_providers["openai-media"]
    assert ptype.tasks == frozenset({TEXT_TO_IMAGE, TEXT_TO_SPEECH, SPEECH_TO_TEXT})
    assert ptype.default_base_url == "https://api.openai.com"
    assert ptype.options is media_openai.OpenAIMediaOptions and ptype.description
    assert ptype.api_models["tts-1"] == "tts-1:alloy" and ptype.api_models["text-to-speech"] == "tts-1:alloy"
    assert ptype.api_models["speech-to-text"] == "whisper-1"
    assert {m for m, t in ptype.model_tasks.items() if t == TEXT_TO_IMAGE} == {"dall-e-3", "dall-e-2", "gpt-image-1"}
    assert {m for m, t in ptype.model_tasks.items() if t == TEXT_TO_SPEECH} >= {"tts-1", "tts-1-hd",
                                                                                "gpt-4o-mini-tts"}
    assert {m for m, t in ptype.model_tasks.items() if t == SPEECH_TO_TEXT} >= {"whisper-1", "gpt-4o-transcribe"}
    assert set(ptype.model_tasks) == set(ptype.api_models)


# --------------------------------------------------------------------------- images


async def test_dall_e_3_makes_one_call_per_image_at_the_nearest_size(fake: FakeOpenAIMedia, make: Any,
                                                                     tmp_path: Path) -> None:
    progress = Progress()
    outputs = await make().generate(image_task(tmp_path, width=1920, height=1080, batch_size=2), progress)
    calls = api_calls(fake, "/v1/images/generations")
    assert [c.body for c in calls] == [{"model": "dall-e-3", "prompt": "a red fox in the snow", "size": "1792x1024",
                                        "response_format": "b64_json", "n": 1}] * 2
    assert calls[0].headers["Authorization"] == f"Bearer {KEY}"
    assert [(o.ext, o.content_type, o.width, o.height) for o in outputs] == [("png", "image/png", 1792, 1024)] * 2
    assert measured(outputs[0].path) == (1792, 1024, "PNG")
    assert outputs[0].path.parent == tmp_path and outputs[0].path != outputs[1].path
    assert [v for v, _ in progress.reports] == [0.0, 0.5, 1.0]


async def test_dall_e_2_asks_for_the_whole_batch_in_one_call(fake: FakeOpenAIMedia, make: Any,
                                                             tmp_path: Path) -> None:
    outputs = await make().generate(image_task(tmp_path, "dall-e-2", width=500, height=500, batch_size=3),
                                    Progress())
    [call] = api_calls(fake, "/v1/images/generations")
    assert (call.body["n"], call.body["size"]) == (3, "512x512")
    assert [(o.width, o.height) for o in outputs] == [(512, 512)] * 3


async def test_gpt_image_never_sends_response_format_and_takes_output_format(fake: FakeOpenAIMedia, make: Any,
                                                                            tmp_path: Path) -> None:
    [out] = await make().generate(image_task(tmp_path, "gpt-image-1", width=1200, height=800, quality="high",
                                             output_format="webp"), Progress())
    [call] = api_calls(fake, "/v1/images/generations")
    assert call.body == {"model": "gpt-image-1", "prompt": "a red fox in the snow", "size": "1536x1024",
                         "quality": "high", "output_format": "webp", "n": 1}
    assert (out.ext, out.width, out.height) == ("webp", 1536, 1024)
    assert measured(out.path)[2] == "WEBP"


async def test_url_responses_are_downloaded_without_the_key(make: Any, tmp_path: Path) -> None:
    async with FakeOpenAIMedia(api_key=KEY, file_host="localhost") as blob_fake:
        provider = make({"image_response_format": "url"}, base_url=blob_fake.base_url)
        [out] = await provider.generate(image_task(tmp_path, "dall-e-2", width=256, height=256), Progress())
        [download] = [r for r in blob_fake.requests if r.path.startswith("/files/")]
        assert api_calls(blob_fake, "/v1/images/generations")[0].body["response_format"] == "url"
    assert "Authorization" not in download.headers
    assert (out.ext, out.width, out.height) == ("png", 256, 256)


async def test_impossible_sizes_are_refused_before_any_call(fake: FakeOpenAIMedia, make: Any,
                                                            tmp_path: Path) -> None:
    for model, width, height in (("dall-e-3", 1024, 768), ("dall-e-2", 1024, 576), ("gpt-image-1", 2048, 512)):
        with pytest.raises(ProviderError) as info:
            await make().generate(image_task(tmp_path, model, width=width, height=height), Progress())
        err = info.value
        assert (err.status, err.retryable) == (400, False)
        assert f"cannot make a {width}x{height} image" in err.message
    with pytest.raises(ProviderError, match="takes quality standard, hd"):
        await make().generate(image_task(tmp_path, quality="ultra"), Progress())
    with pytest.raises(ValidationFailed):
        await make().generate(image_task(tmp_path, positive_prompt=""), Progress())
    assert fake.requests == []


def test_size_choice() -> None:
    sizes = media_openai.IMAGE_MODELS["dall-e-2"].sizes
    assert media_openai.choose_size(None, None, sizes) == (1024, 1024)
    assert media_openai.choose_size(300, None, sizes) == (512, 512)
    assert media_openai.choose_size(2048, 2048, sizes) == (1024, 1024)
    dalle3 = media_openai.IMAGE_MODELS["dall-e-3"].sizes
    assert media_openai.choose_size(832, 1216, dalle3) == (1024, 1792)
    assert media_openai.choose_size(1024, 768, dalle3) is None


async def test_a_content_policy_refusal_is_a_400_with_openais_message(fake: FakeOpenAIMedia, make: Any,
                                                                      tmp_path: Path) -> None:
    fake.reject_content_next()
    with pytest.raises(ProviderError) as info:
        await make().generate(image_task(tmp_path), Progress())
    err = info.value
    assert (err.status, err.retryable, err.error_code) == (400, False, "ContentPolicyViolation")
    assert "rejected as a result of our safety system" in err.message


async def test_rate_limits_and_server_errors_are_retryable(fake: FakeOpenAIMedia, make: Any, tmp_path: Path) -> None:
    fake.fail_next(1, status=429, retry_after="12")
    with pytest.raises(ProviderError) as info:
        await make().generate(image_task(tmp_path), Progress())
    assert (info.value.status, info.value.retryable, info.value.retry_after) == (429, True, 12.0)
    assert info.value.headers["Retry-After"] == "12"
    fake.fail_next(1, status=503)
    with pytest.raises(ProviderError) as info:
        await make().generate(speech_task(tmp_path, text="hi"), Progress())
    assert info.value.retryable and info.value.status == 502


async def test_the_key_never_appears_in_errors_or_logs(make: Any, tmp_path: Path) -> None:
    wrong = "sk-wrong-secret-key-4321"
    with capture_logs() as logs, pytest.raises(ProviderError) as info:
        await make(api_key=Secret(wrong)).generate(image_task(tmp_path), Progress())
    assert "Incorrect API key provided: ****" in info.value.message
    assert wrong not in info.value.message and wrong not in repr(logs)


async def test_a_custom_key_header_replaces_bearer(make: Any, tmp_path: Path) -> None:
    async with FakeOpenAIMedia(api_key=KEY) as azure_like:
        azure_like.key_header = "api-key"
        provider = make({"organization": "org-1"}, base_url=f"{azure_like.base_url}/v1", api_key_header="api-key")
        await provider.generate(speech_task(tmp_path, text="hello"), Progress())
        sent = azure_like.last
    assert sent.path == "/v1/audio/speech"
    assert sent.headers["api-key"] == KEY and "Authorization" not in sent.headers
    assert sent.headers["OpenAI-Organization"] == "org-1"


# --------------------------------------------------------------------------- speech


async def test_speech_splits_model_and_voice_and_writes_a_wav(fake: FakeOpenAIMedia, make: Any,
                                                              tmp_path: Path) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    [out] = await make().generate(speech_task(tmp_path, "tts-1:nova", text=text), Progress())
    assert fake.last.body == {"model": "tts-1", "input": text, "voice": "nova", "response_format": "wav"}
    assert (out.ext, out.content_type) == ("wav", "audio/wav")
    with wave.open(str(out.path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
        frames = w.getnframes()
    assert out.duration == pytest.approx(frames / 24000) == pytest.approx(0.05 * len(text), abs=0.01)


async def test_voice_arg_wins_and_default_voice_fills_in(fake: FakeOpenAIMedia, make: Any, tmp_path: Path) -> None:
    await make().generate(speech_task(tmp_path, "tts-1-hd:alloy", input="hi", voice="echo"), Progress())
    assert (fake.last.body["model"], fake.last.body["voice"]) == ("tts-1-hd", "echo")
    await make({"default_voice": "coral"}).generate(speech_task(tmp_path, "gpt-4o-mini-tts", text="hi", speed=1.5),
                                                    Progress())
    assert fake.last.body == {"model": "gpt-4o-mini-tts", "input": "hi", "voice": "coral",
                              "response_format": "wav", "speed": 1.5}


async def test_streamed_wav_headers_still_give_the_duration(make: Any, tmp_path: Path) -> None:
    async with FakeOpenAIMedia(api_key=KEY, wav_unknown_length=True) as streaming:
        [out] = await make(base_url=streaming.base_url).generate(speech_task(tmp_path, text="x" * 20), Progress())
    assert out.duration == pytest.approx(1.0, abs=0.01)


async def test_speech_problems_are_caught_before_the_call(fake: FakeOpenAIMedia, make: Any, tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="at most 4096 characters"):
        await make().generate(speech_task(tmp_path, text="a" * 4097), Progress())
    with pytest.raises(ValidationFailed):
        await make().generate(speech_task(tmp_path), Progress())
    assert fake.requests == []
    with pytest.raises(ProviderError) as info:  # an unknown voice is OpenAI's to refuse
        await make().generate(speech_task(tmp_path, "tts-1:robot", text="hi"), Progress())
    assert info.value.status == 400 and "'robot'" in info.value.message


async def test_a_hanging_call_times_out(fake: FakeOpenAIMedia, make: Any, tmp_path: Path) -> None:
    fake.hang_next()
    with pytest.raises(ProviderError) as info:
        await make().generate(speech_task(tmp_path, timeout=0.3, text="hi"), Progress())
    assert (info.value.error_code, info.value.status, info.value.retryable) == ("Timeout", 504, True)
    await fake.wait_cancelled()


# --------------------------------------------------------------------------- transcription


async def test_speech_round_trips_through_transcription(fake: FakeOpenAIMedia, make: Any, tmp_path: Path) -> None:
    provider = make()
    text = "Meet me at the station at noon."
    [speech] = await provider.generate(speech_task(tmp_path, text=text), Progress())
    [result] = await provider.generate(stt_task(tmp_path, speech.path, filename="My Clip (1).WAV", language="en"),
                                       Progress())
    assert result.text == text and result.path is None
    upload = fake.uploads[-1]
    assert upload["file"][0] == "audio.wav" and upload["file"][1] == speech.path.read_bytes()
    assert {k: v[1] for k, v in upload.items() if k != "file"} == {
        "model": b"whisper-1", "response_format": b"json", "language": b"en"}


async def test_transcribing_foreign_audio_gives_the_fakes_transcript(fake: FakeOpenAIMedia, make: Any,
                                                                     tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(render_wav(0.5))
    [result] = await make().generate(stt_task(tmp_path, clip, model="gpt-4o-transcribe"), Progress())
    assert result.text == "Hello from the fake transcriber."


async def test_transcription_problems(fake: FakeOpenAIMedia, make: Any, tmp_path: Path) -> None:
    odd = tmp_path / "notes.xyz"
    odd.write_bytes(b"not audio")
    with pytest.raises(ProviderError, match="transcribes flac") as info:
        await make().generate(stt_task(tmp_path, odd, filename="notes.xyz"), Progress())
    assert info.value.status == 400
    with pytest.raises(ValidationFailed) as invalid:
        await make().generate(stt_task(tmp_path, None), Progress())
    assert invalid.value.errors[0].field_name == "Audio"
    assert fake.requests == []
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(ProviderError) as info:
        await make().generate(stt_task(tmp_path, broken), Progress())
    assert (info.value.status, info.value.retryable) == (400, False)
    assert "corrupted or unsupported" in info.value.message


async def test_probe_lists_models(fake: FakeOpenAIMedia, make: Any) -> None:
    await make().probe()
    assert fake.last.path == "/v1/models"
    fake.fail_next(1, status=500)
    with pytest.raises(ProviderError):
        await make().probe()


async def test_unsupported_tasks_are_refused(make: Any, tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="not ImageUpscale"):
        await make().generate(GenerationTask(task="ImageUpscale", model="dall-e-2", args={}, inputs={},
                                             workdir=tmp_path), Progress())
    with pytest.raises(ProviderError, match="not an OpenAI image model"):
        await make().generate(image_task(tmp_path, "stable-diffusion"), Progress())
