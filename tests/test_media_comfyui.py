"""The ``comfyui`` media provider against a protocol-faithful fake ComfyUI on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import types
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiport.core.config import Config, ProviderConfig, Secret
from aiport.core.errors import ConfigError, ProviderError
from aiport.core.media import GENERATION_TASKS, GenerationTask, MediaInput
from aiport.core.plugins import DEFAULT_PLUGINS, build_plugin_manager
from aiport.core.registry import ProviderContext, Registry, WorkflowSpec, collect
from aiport.plugins import comfyui_workflows as wf
from aiport.plugins.media_comfyui import NodeExecutionError, history_outputs
from fakes.comfyui_server import FakeComfyUI, png_bytes, wav_bytes
from wand.image import Image

PLUGIN = "aiport.plugins.media_comfyui"
LIGHTNING = "sdxl_lightning_4step.safetensors"
SDXL = "sd_xl_base_1.0.safetensors"


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
async def fake() -> AsyncIterator[FakeComfyUI]:
    async with FakeComfyUI() as f:
        yield f


@pytest.fixture(scope="module")
def registry() -> Registry:
    return collect(build_plugin_manager(default_plugins=(PLUGIN,), entry_points=False), Config())


def make_provider(registry: Registry, base_url: str, http: aiohttp.ClientSession, *, api_key: str | None = None,
                  config: Config | None = None, name: str = "comfy-1", **options: Any) -> Any:
    """The provider as the app builds it: the registered type's factory with a ProviderContext."""
    options.setdefault("history_poll_interval", 0.2)
    ptype = registry.media_providers["comfyui"]
    cfg = ProviderConfig(name=name, type="comfyui", base_url=base_url,
                         api_key=Secret(api_key) if api_key else None)
    return ptype.factory(ProviderContext(provider=cfg, options=options, http=http, config=config or Config()))


class Progress:
    """Records progress reports."""

    def __init__(self) -> None:
        self.calls: list[tuple[float | None, str | None]] = []

    async def __call__(self, value: float | None = None, status: str | None = None) -> None:
        self.calls.append((value, status))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, MediaInput]:
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(96, 64))
    mask = tmp_path / "mask.png"
    mask.write_bytes(png_bytes(96, 64, (255, 0, 0)))
    audio = tmp_path / "speech.wav"
    audio.write_bytes(wav_bytes(1.25, rate=16000))
    return {"image": MediaInput("image", image, "image/png", "photo.png"),
            "mask": MediaInput("mask", mask, "image/png", "mask.png"),
            "audio": MediaInput("audio", audio, "audio/wav", "speech.wav")}


def task(kind: str, model: str, tmp_path: Path, args: dict[str, Any] | None = None,
         inputs: dict[str, MediaInput] | None = None, timeout: float = 15.0) -> GenerationTask:
    return GenerationTask(task=kind, model=model, args=args or {}, inputs=inputs or {},
                          workdir=tmp_path / "work", timeout=timeout)


def submitted(fake: FakeComfyUI) -> dict[str, Any]:
    """The last workflow POSTed to /prompt."""
    return fake.paths("/prompt")[-1].body["prompt"]


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait until ``condition()`` holds (the fake's worker runs concurrently)."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def png_dims(path: Path) -> tuple[int, int]:
    with Image(filename=str(path)) as img:
        assert img.format == "PNG"
        return img.width, img.height


# --------------------------------------------------------------------------- registration


def test_registers_the_type_its_catalog_and_workflows(registry: Registry) -> None:
    assert PLUGIN in DEFAULT_PLUGINS
    ptype = registry.media_providers["comfyui"]
    assert ptype.tasks == frozenset(GENERATION_TASKS) and len(ptype.tasks) == 7
    assert ptype.default_base_url == "http://127.0.0.1:8188"
    assert ptype.api_models["sdxl-lightning"] == LIGHTNING
    assert ptype.api_models["flux-schnell"] == "flux1-schnell-fp8.safetensors"
    assert ptype.api_models["image-upscale-2x"] == "RealESRGAN_x2.pth"
    assert ptype.api_models["text-to-speech"] == "high:en_US-lessac"
    assert ptype.api_models["speech-to-text"] == "base"
    assert ptype.model_tasks["image-with-mask"] == "ImageWithMask"
    assert ptype.model_tasks["image-to-text"] == "ImageToText"
    assert set(ptype.model_tasks) == set(ptype.api_models)
    assert {w.task for w in registry.workflows} == set(GENERATION_TASKS)
    flux = registry.workflows["flux-schnell"]
    assert flux.task == "TextToImage" and flux.defaults["steps"] == 4
    assert registry.workflows["image-to-image"].defaults["denoise"] == 0.5


def test_options_are_checked(registry: Registry, http: aiohttp.ClientSession) -> None:
    with pytest.raises(ConfigError, match="history_poll_interval"):
        make_provider(registry, "http://127.0.0.1:1", http, history_poll_interval=0)
    with pytest.raises(ConfigError, match="unknown key"):
        make_provider(registry, "http://127.0.0.1:1", http, slots=2)


# --------------------------------------------------------------------------- every task


async def test_text_to_image_writes_pngs_of_the_requested_size(fake: FakeComfyUI, registry: Registry,
                                                              http: aiohttp.ClientSession, tmp_path: Path) -> None:
    provider = make_provider(registry, fake.base_url, http)
    outputs = await provider.generate(task("TextToImage", LIGHTNING, tmp_path, {
        "positive_prompt": "a lighthouse", "width": 128, "height": 64, "batch_size": 3}), Progress())
    assert len(outputs) == 3
    for out in outputs:
        assert out.path is not None and out.path.parent == tmp_path / "work"
        assert out.ext == "png" and out.content_type == "image/png"
        assert png_dims(out.path) == (128, 64) == (out.width, out.height)
    sampler = submitted(fake)["3"]["inputs"]
    # SDXL Lightning's catalog vars beat the workflow's defaults.
    assert (sampler["steps"], sampler["cfg"], sampler["sampler_name"], sampler["scheduler"]) == \
        (4, 1.0, "euler", "sgm_uniform")


async def test_flux_models_use_the_flux_workflow(fake: FakeComfyUI, registry: Registry,
                                                 http: aiohttp.ClientSession, tmp_path: Path) -> None:
    provider = make_provider(registry, fake.base_url, http)
    [out] = await provider.generate(task("TextToImage", "flux1-schnell-fp8.safetensors", tmp_path,
                                         {"positive_prompt": "a fox", "width": 64, "height": 96}), Progress())
    assert png_dims(out.path) == (64, 96)
    prompt = submitted(fake)
    assert prompt["5"]["class_type"] == "EmptySD3LatentImage"
    assert prompt["3"]["inputs"]["scheduler"] == "simple" and prompt["9"]["inputs"]["filename_prefix"] == \
        "aiport/flux-schnell"


async def test_image_to_image(fake: FakeComfyUI, registry: Registry, http: aiohttp.ClientSession,
                              tmp_path: Path, files: dict[str, MediaInput]) -> None:
    provider = make_provider(registry, fake.base_url, http)
    outputs = await provider.generate(task("ImageToImage", SDXL, tmp_path, {"positive_prompt": "oil painting",
                                                                            "batch_size": 2},
                                           {"image": files["image"]}), Progress())
    assert [png_dims(o.path) for o in outputs] == [(96, 64), (96, 64)]
    sampler = submitted(fake)["3"]["inputs"]
    assert (sampler["denoise"], sampler["steps"], sampler["cfg"], sampler["sampler_name"], sampler["scheduler"]) \
        == (0.5, 25, 7.0, "euler_ancestral", "normal")


async def test_image_with_mask(fake: FakeComfyUI, registry: Registry, http: aiohttp.ClientSession,
                               tmp_path: Path, files: dict[str, MediaInput]) -> None:
    provider = make_provider(registry, fake.base_url, http)
    [out] = await provider.generate(task("ImageWithMask", SDXL, tmp_path, {"positive_prompt": "a hat"},
                                         {"image": files["image"], "mask": files["mask"]}), Progress())
    assert png_dims(out.path) == (96, 64)
    prompt = submitted(fake)
    assert prompt["2"]["class_type"] == "LoadImageMask" and prompt["2"]["inputs"]["channel"] == "red"
    assert prompt["2"]["inputs"]["image"].startswith("aiport/mask_")
    assert prompt["1"]["inputs"]["image"].startswith("aiport/image_")
    assert len(fake.paths("/upload/image")) == 2


async def test_image_upscale_doubles_the_size(fake: FakeComfyUI, registry: Registry, http: aiohttp.ClientSession,
                                              tmp_path: Path, files: dict[str, MediaInput]) -> None:
    provider = make_provider(registry, fake.base_url, http)
    [out] = await provider.generate(task("ImageUpscale", "RealESRGAN_x2.pth", tmp_path,
                                         inputs={"image": files["image"]}), Progress())
    assert png_dims(out.path) == (192, 128)
    assert submitted(fake)["2"] == {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "RealESRGAN_x2.pth"}}


async def test_image_to_text(fake: FakeComfyUI, registry: Registry, http: aiohttp.ClientSession,
                             tmp_path: Path, files: dict[str, MediaInput]) -> None:
    provider = make_provider(registry, fake.base_url, http)
    outputs = await provider.generate(task("ImageToText", "microsoft/Florence-2-base", tmp_path,
                                           inputs={"image": files["image"]}), Progress())
    assert [o.text for o in outputs] == ["A fake caption of a 96x64 image"]
    assert outputs[0].path is None
    prompt = submitted(fake)
    assert prompt["2"]["class_type"] == "DownloadAndLoadFlorence2Model"
    assert prompt["3"]["class_type"] == "Florence2Run" and prompt["3"]["inputs"]["task"] == "caption"
    assert prompt["4"]["class_type"] == "ShowText|pysssss"
    assert len(fake.paths("/object_info/ShowText|pysssss")) == 1  # the "|" survived URL quoting


async def test_text_to_speech_writes_a_wav(fake: FakeComfyUI, registry: Registry, http: aiohttp.ClientSession,
                                           tmp_path: Path) -> None:
    provider = make_provider(registry, fake.base_url, http)
    [out] = await provider.generate(task("TextToSpeech", "high:en_US-lessac", tmp_path,
                                         {"text": "Hello from the gateway"}), Progress())
    assert out.ext == "wav" and out.content_type == "audio/wav"
    data = out.path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnchannels() == 1 and w.getnframes() > 0
    assert out.duration is not None and out.duration > 0
    # Piper's model "quality:voice" is split into the node's two inputs.
    assert submitted(fake)["1"]["inputs"] == {"text": "Hello from the gateway", "voice": "en_US-lessac",
                                              "quality": "high"}
    # Piper names the file after the text, spaces included: /view got the name URL-encoded.
    assert fake.paths("/view")[-1].query["filename"] == "Hello from the .wav"


async def test_speech_to_text_orders_json_last(fake: FakeComfyUI, registry: Registry, http: aiohttp.ClientSession,
                                               tmp_path: Path, files: dict[str, MediaInput]) -> None:
    provider = make_provider(registry, fake.base_url, http)
    outputs = await provider.generate(task("SpeechToText", "base", tmp_path, inputs={"audio": files["audio"]}),
                                      Progress())
    texts = [o.text for o in outputs]
    assert texts[0] == "Fake transcript of 1.25 seconds of audio by whisper base"
    assert json.loads(texts[1]) == [{"text": texts[0], "start": 0.0, "end": 1.25}]
    upload = fake.paths("/upload/image")[-1].body
    assert upload["image"]["filename"].startswith("audio_") and upload["image"]["filename"].endswith(".wav")
    assert submitted(fake)["1"]["inputs"]["audio"] == f"aiport/{upload['image']['filename']}"


# --------------------------------------------------------------------------- the protocol


async def test_progress_is_reported(fake: FakeComfyUI, registry: Registry, http: aiohttp.ClientSession,
                                    tmp_path: Path) -> None:
    provider = make_provider(registry, fake.base_url, http)
    progress = Progress()
    await provider.generate(task("TextToImage", LIGHTNING, tmp_path, {"positive_prompt": "x", "width": 64,
                                                                      "height": 64}), progress)
    statuses = [s for _, s in progress.calls]
    assert statuses[0] == "Queued"
    assert "Running KSampler (node 3)" in statuses
    sampling = [(v, s) for v, s in progress.calls if s and s.startswith("Sampling")]
    assert sampling == [(0.25, "Sampling 1/4"), (0.5, "Sampling 2/4"), (0.75, "Sampling 3/4"), (1.0, "Sampling 4/4")]
    ws = fake.ws_connections[-1]
    assert ws["clientId"] == fake.paths("/prompt")[-1].body["client_id"]
    # The websocket was opened before the prompt was posted.
    order = [r.path for r in fake.requests]
    assert order.index("/ws") < order.index("/prompt")


async def test_stalled_websocket_still_completes_through_history(fake: FakeComfyUI, registry: Registry,
                                                                 http: aiohttp.ClientSession, tmp_path: Path) -> None:
    fake.stall_ws = True
    provider = make_provider(registry, fake.base_url, http, history_poll_interval=0.1)
    progress = Progress()
    [out] = await provider.generate(task("TextToImage", LIGHTNING, tmp_path, {"positive_prompt": "x", "width": 64,
                                                                              "height": 64}), progress)
    assert png_dims(out.path) == (64, 64)
    assert not any(s and s.startswith("Sampling") for _, s in progress.calls)
    assert len(fake.paths(f"/history/{fake.deleted_history[-1]}")) >= 1


async def test_websocket_closed_or_disabled_falls_back_to_polling(fake: FakeComfyUI, registry: Registry,
                                                                  http: aiohttp.ClientSession, tmp_path: Path) -> None:
    fake.close_ws_after_status = True
    provider = make_provider(registry, fake.base_url, http, history_poll_interval=0.1)
    args = {"positive_prompt": "x", "width": 64, "height": 64}
    assert len(await provider.generate(task("TextToImage", LIGHTNING, tmp_path, args), Progress())) == 1
    polling = make_provider(registry, fake.base_url, http, use_websocket=False, history_poll_interval=0.1)
    before = len(fake.ws_connections)
    assert len(await polling.generate(task("TextToImage", LIGHTNING, tmp_path, args), Progress())) == 1
    assert len(fake.ws_connections) == before


async def test_history_is_confirmed_then_deleted(fake: FakeComfyUI, registry: Registry, http: aiohttp.ClientSession,
                                                 tmp_path: Path) -> None:
    fake.history_delay = 0.3  # history lands a while after "executing: null", as it can in ComfyUI
    provider = make_provider(registry, fake.base_url, http, history_poll_interval=5.0)
    await provider.generate(task("TextToImage", LIGHTNING, tmp_path, {"positive_prompt": "x", "width": 64,
                                                                      "height": 64}), Progress())
    prompt_id = fake.paths("/prompt")[-1].body["prompt_id"]
    assert fake.deleted_history == [prompt_id] and fake.history == {}
    assert fake.paths("/history")[-1].body == {"delete": [prompt_id]}
    # /view came before the delete: outputs were copied first.
    order = [(r.method, r.path) for r in fake.requests]
    assert order.index(("GET", "/view")) < order.index(("POST", "/history"))
    # Kept with delete_history off.
    keep = make_provider(registry, fake.base_url, http, delete_history=False)
    await keep.generate(task("TextToImage", LIGHTNING, tmp_path, {"positive_prompt": "x", "width": 64,
                                                                  "height": 64}), Progress())
    assert len(fake.history) == 1


async def test_inputs_are_uploaded_and_the_returned_name_is_used(fake: FakeComfyUI, registry: Registry,
                                                                 http: aiohttp.ClientSession, tmp_path: Path,
                                                                 files: dict[str, MediaInput]) -> None:
    fake.rename_uploads = True
    provider = make_provider(registry, fake.base_url, http)
    await provider.generate(task("ImageUpscale", "RealESRGAN_x2.pth", tmp_path, inputs={"image": files["image"]}),
                            Progress())
    upload = fake.paths("/upload/image")[-1].body
    assert upload["type"] == "input" and upload["overwrite"] == "true" and upload["subfolder"] == "aiport"
    sent = upload["image"]["filename"]
    assert submitted(fake)["1"]["inputs"]["image"] == f"aiport/renamed-{sent}"
    # Named by content: the same input uploads under the same name again.
    await provider.generate(task("ImageUpscale", "RealESRGAN_x2.pth", tmp_path, inputs={"image": files["image"]}),
                            Progress())
    assert fake.paths("/upload/image")[-1].body["image"]["filename"] == sent


# --------------------------------------------------------------------------- failures


async def test_a_failing_node_fails_with_its_message(fake: FakeComfyUI, registry: Registry,
                                                     http: aiohttp.ClientSession, tmp_path: Path) -> None:
    fake.fail_node = "KSampler"
    fake.fail_message = "Expected all tensors to be on the same device"
    provider = make_provider(registry, fake.base_url, http)
    with pytest.raises(NodeExecutionError) as err:
        await provider.generate(task("TextToImage", LIGHTNING, tmp_path, {"positive_prompt": "x", "width": 64,
                                                                          "height": 64}), Progress())
    exc = err.value
    assert not exc.retryable and exc.provider == "comfy-1"
    assert (exc.node_id, exc.node_type) == ("3", "KSampler")
    assert "comfy-1" in exc.message and "node 3 (KSampler)" in exc.message
    assert "Expected all tensors to be on the same device" in exc.message
    assert fake.interrupts == [] and fake.queue_deletes == []  # a settled prompt is not "abandoned"
    assert fake.history == {}  # the failed entry is cleaned up too


async def test_out_of_memory_is_retryable(fake: FakeComfyUI, registry: Registry, http: aiohttp.ClientSession,
                                          tmp_path: Path) -> None:
    fake.fail_node = "8"
    fake.fail_type = "torch.OutOfMemoryError"
    fake.fail_message = "Allocation on device"
    provider = make_provider(registry, fake.base_url, http)
    with pytest.raises(NodeExecutionError) as err:
        await provider.generate(task("TextToImage", LIGHTNING, tmp_path, {"positive_prompt": "x", "width": 64,
                                                                          "height": 64}), Progress())
    assert err.value.retryable and "OutOfMemoryError: Allocation on device" in err.value.message


@pytest.mark.parametrize("legacy", [False, True])
async def test_prompt_validation_errors_are_not_retryable(fake: FakeComfyUI, registry: Registry,
                                                          http: aiohttp.ClientSession, tmp_path: Path,
                                                          legacy: bool) -> None:
    fake.legacy_errors = legacy
    provider = make_provider(registry, fake.base_url, http, validate_workflows=False)
    with pytest.raises(ProviderError) as err:
        await provider.generate(task("TextToImage", "missing.safetensors", tmp_path, {"positive_prompt": "x"}),
                                Progress())
    exc = err.value
    assert not exc.retryable and exc.upstream_status == 400 and exc.status == 400
    assert "Prompt outputs failed validation" in exc.message
    assert "node 4 (CheckpointLoaderSimple)" in exc.message and "missing.safetensors" in exc.message
    assert "Value not in list" in exc.message


async def test_a_model_the_server_lacks_is_named_before_submitting(fake: FakeComfyUI, registry: Registry,
                                                                   http: aiohttp.ClientSession,
                                                                   tmp_path: Path) -> None:
    provider = make_provider(registry, fake.base_url, http)
    with pytest.raises(ProviderError) as err:
        await provider.generate(task("TextToImage", "juggernaut_v99.safetensors", tmp_path,
                                     {"positive_prompt": "x"}), Progress())
    exc = err.value
    assert not exc.retryable and exc.upstream_status == 400
    assert exc.message.startswith("comfy-1: ")
    assert "model 'juggernaut_v99.safetensors' is not available for node 4 (CheckpointLoaderSimple) input " \
           "'ckpt_name'" in exc.message
    assert fake.paths("/prompt") == []


async def test_a_missing_node_class_is_named(registry: Registry, http: aiohttp.ClientSession, tmp_path: Path,
                                             files: dict[str, MediaInput]) -> None:
    async with FakeComfyUI(missing_classes=("Florence2Run",)) as fake:
        provider = make_provider(registry, fake.base_url, http)
        with pytest.raises(ProviderError) as err:
            await provider.generate(task("ImageToText", "microsoft/Florence-2-base", tmp_path,
                                         inputs={"image": files["image"]}), Progress())
        assert not err.value.retryable and err.value.upstream_status == 400
        assert "node class 'Florence2Run' (node 3) is not installed" in err.value.message
        assert "comfy-1" in err.value.message and fake.paths("/prompt") == []


async def test_object_info_is_cached_and_refetched_on_a_miss(fake: FakeComfyUI, registry: Registry,
                                                             http: aiohttp.ClientSession, tmp_path: Path) -> None:
    provider = make_provider(registry, fake.base_url, http)
    args = {"positive_prompt": "x", "width": 64, "height": 64}
    await provider.generate(task("TextToImage", LIGHTNING, tmp_path, args), Progress())
    first = len([r for r in fake.requests if r.path.startswith("/object_info/")])
    assert first == 6  # one per node class of the workflow
    await provider.generate(task("TextToImage", LIGHTNING, tmp_path, args), Progress())
    assert len([r for r in fake.requests if r.path.startswith("/object_info/")]) == first
    fake.checkpoints.append("brand-new.safetensors")  # installed after the cache was filled
    await provider.generate(task("TextToImage", "brand-new.safetensors", tmp_path, args), Progress())
    assert submitted(fake)["4"]["inputs"]["ckpt_name"] == "brand-new.safetensors"


async def test_an_offline_server_is_a_retryable_error(fake: FakeComfyUI, registry: Registry,
                                                      http: aiohttp.ClientSession, tmp_path: Path) -> None:
    provider = make_provider(registry, fake.base_url, http)
    await provider.probe()
    fake.offline = True
    with pytest.raises(ProviderError) as err:
        await provider.probe()
    assert err.value.retryable and err.value.upstream_status == 503
    with pytest.raises(ProviderError) as err:
        await provider.generate(task("TextToImage", LIGHTNING, tmp_path, {"positive_prompt": "x"}), Progress())
    assert err.value.retryable
    await fake.close()  # now connections are refused
    with pytest.raises(ProviderError) as err:
        await provider.generate(task("TextToImage", LIGHTNING, tmp_path, {"positive_prompt": "x"}), Progress())
    assert err.value.retryable and "cannot reach the backend" in err.value.message


async def test_the_api_key_is_sent_as_bearer_and_on_the_websocket(registry: Registry, http: aiohttp.ClientSession,
                                                                  tmp_path: Path,
                                                                  files: dict[str, MediaInput]) -> None:
    async with FakeComfyUI(api_key="agent-pw") as fake:
        provider = make_provider(registry, fake.base_url, http, api_key="agent-pw")
        await provider.probe()
        await provider.generate(task("ImageUpscale", "RealESRGAN_x2.pth", tmp_path, inputs={"image": files["image"]}),
                                Progress())
        assert all(r.headers.get("Authorization") == "Bearer agent-pw" for r in fake.requests)
        assert fake.ws_connections[-1]["apiKey"] == "agent-pw"
        wrong = make_provider(registry, fake.base_url, http, api_key="nope")
        with pytest.raises(ProviderError) as err:
            await wrong.generate(task("TextToImage", LIGHTNING, tmp_path, {"positive_prompt": "x"}), Progress())
        assert not err.value.retryable and "nope" not in err.value.message
        # The agent's default guards only /prompt: then /prompt still needs the key.
        fake.guard_all = False
        with pytest.raises(ProviderError, match="HTTP 401"):
            await wrong.generate(task("TextToImage", LIGHTNING, tmp_path, {"positive_prompt": "x"}), Progress())


async def test_a_timeout_interrupts_the_running_prompt(fake: FakeComfyUI, registry: Registry,
                                                       http: aiohttp.ClientSession, tmp_path: Path) -> None:
    fake.step_delay = 0.05
    provider = make_provider(registry, fake.base_url, http)
    with pytest.raises(ProviderError) as err:
        await provider.generate(task("TextToImage", SDXL, tmp_path, {"positive_prompt": "x", "width": 64,
                                                                     "height": 64}, timeout=0.5), Progress())
    assert err.value.retryable and err.value.error_code == "Timeout" and err.value.status == 504
    prompt_id = fake.paths("/prompt")[-1].body["prompt_id"]
    assert fake.interrupts == [{"prompt_id": prompt_id}]
    await eventually(lambda: prompt_id in fake.history)  # the interrupted prompt settles in history
    assert fake.history[prompt_id]["status"]["status_str"] == "error"
    assert fake.history[prompt_id]["status"]["messages"][-1][0] == "execution_interrupted"


async def test_cancelling_a_queued_prompt_removes_it_from_the_queue(fake: FakeComfyUI, registry: Registry,
                                                                    http: aiohttp.ClientSession,
                                                                    tmp_path: Path) -> None:
    fake.step_delay = 0.05
    provider = make_provider(registry, fake.base_url, http)
    args = {"positive_prompt": "x", "width": 64, "height": 64}
    busy = asyncio.create_task(provider.generate(task("TextToImage", SDXL, tmp_path, args), Progress()))
    await eventually(lambda: fake.running is not None)
    waiting = asyncio.create_task(provider.generate(task("TextToImage", SDXL, tmp_path, args), Progress()))
    await eventually(lambda: bool(fake.pending))
    queued_id = fake.pending[0].prompt_id
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert fake.queue_deletes == [queued_id] and fake.interrupts == []
    busy.cancel()
    with pytest.raises(asyncio.CancelledError):
        await busy


async def test_a_missing_input_is_reported_before_any_call(fake: FakeComfyUI, registry: Registry,
                                                           http: aiohttp.ClientSession, tmp_path: Path) -> None:
    provider = make_provider(registry, fake.base_url, http)
    with pytest.raises(ProviderError) as err:
        await provider.generate(task("ImageToImage", SDXL, tmp_path, {"positive_prompt": "x"}), Progress())
    assert err.value.upstream_status == 400 and not err.value.retryable
    assert "needs a value for image (upload a file in the 'image' field)" in err.value.message
    assert fake.requests == []


# --------------------------------------------------------------------------- templates and variables


def test_placeholders_keep_their_json_type() -> None:
    template = {"_meta": {"task": "TextToImage"},
                "1": {"class_type": "X", "inputs": {"steps": "{{steps}}", "cfg": "{{cfg_scale}}",
                                                    "flag": "{{flag}}", "size": ["{{width}}", "{{height}}"],
                                                    "name": "out/{{workflow}}-{{steps}}", "link": ["2", 0],
                                                    "text": "{{ positive_prompt }}"}}}
    variables = {"steps": 4, "cfg_scale": 1.5, "flag": False, "width": 64, "height": 32, "workflow": "w",
                 "positive_prompt": 'a "quoted" {{steps}} prompt", "x": ['}
    out = wf.render(template, variables)
    inputs = out["1"]["inputs"]
    assert inputs == {"steps": 4, "cfg": 1.5, "flag": False, "size": [64, 32], "name": "out/w-4", "link": ["2", 0],
                      "text": 'a "quoted" {{steps}} prompt", "x": ['}
    assert "_meta" not in out and template["1"]["inputs"]["steps"] == "{{steps}}"  # the template is untouched
    with pytest.raises(wf.WorkflowError, match="needs a value for height, steps"):
        wf.render(template, {**variables, "steps": None, "height": None}, workflow="t")


async def test_request_values_are_typed_and_defaulted_as_ai_server(fake: FakeComfyUI, registry: Registry,
                                                                   http: aiohttp.ClientSession,
                                                                   tmp_path: Path) -> None:
    provider = make_provider(registry, fake.base_url, http)
    await provider.generate(task("TextToImage", SDXL, tmp_path, {
        "positive_prompt": "a castle", "negative_prompt": "people", "width": "64", "height": 64.0, "seed": 0,
        "cfgScale": 5, "model": "sdxl"}), Progress())
    prompt = submitted(fake)
    latent, sampler = prompt["5"]["inputs"], prompt["3"]["inputs"]
    assert latent == {"width": 64, "height": 64, "batch_size": 1}
    assert isinstance(latent["width"], int) and isinstance(sampler["cfg"], float) and sampler["cfg"] == 5.0
    assert isinstance(sampler["seed"], int) and sampler["seed"] > 0  # 0 means random
    assert prompt["4"]["inputs"]["ckpt_name"] == SDXL  # ComfyUI's name, not the gateway id
    assert prompt["7"]["inputs"]["text"] == "people, low quality, blurry, noisy, compression artifacts"
    await provider.generate(task("TextToImage", SDXL, tmp_path, {"positive_prompt": "a castle", "seed": 42,
                                                                 "width": 64, "height": 64}), Progress())
    prompt = submitted(fake)
    assert prompt["3"]["inputs"]["seed"] == 42
    assert prompt["7"]["inputs"]["text"] == "low quality, blurry, noisy, compression artifacts"


def test_history_outputs_reads_files_and_puts_json_texts_last() -> None:
    entry = {"prompt": [1, "p", {}, {}, ["9", "4"]],
             "outputs": {"4": {"text": ['[{"start": 0}]', "plain"]},
                         "9": {"images": [{"filename": "a.png", "subfolder": "x", "type": "output"}],
                               "previews": [{"filename": "b.wav", "subfolder": "", "type": "output"}]},
                         "12": {"gifs": [{"filename": "c.gif", "subfolder": "", "type": "temp"}]}}}
    found, texts = history_outputs(entry)
    assert [f["filename"] for f in found] == ["a.png", "b.wav", "c.gif"]
    assert found[2]["type"] == "temp"
    assert texts == ["plain", '[{"start": 0}]']


# --------------------------------------------------------------------------- workflows as plugins and files


async def test_workflows_dir_overrides_and_adds(fake: FakeComfyUI, registry: Registry, http: aiohttp.ClientSession,
                                                tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    builtin = json.loads(json.dumps(wf.nodes_of(registry.workflows["text-to-image"].template)))
    # An exported file without _meta overriding a built-in keeps its task and defaults.
    builtin["9"]["inputs"]["filename_prefix"] = "override/{{workflow}}"
    (folder / "text-to-image.json").write_text(json.dumps(builtin))
    # A new workflow for a model pattern, its task and defaults in a sidecar file.
    custom = json.loads(json.dumps(builtin))
    custom["9"]["inputs"]["filename_prefix"] = "anime/{{workflow}}"
    (folder / "anime.json").write_text(json.dumps(custom))
    (folder / "anime.meta.json").write_text(json.dumps({"task": "TextToImage", "models": ["anime*"],
                                                        "defaults": {"width": 64, "height": 64, "steps": 2,
                                                                     "cfg_scale": 3, "sampler": "euler",
                                                                     "scheduler": "normal", "denoise": 1.0,
                                                                     "negative_prompt": ""}}))
    fake.checkpoints.append("animeXL.safetensors")
    config = Config(base_dir=str(tmp_path))
    provider = make_provider(registry, fake.base_url, http, config=config, workflows_dir="workflows")
    await provider.generate(task("TextToImage", LIGHTNING, tmp_path, {"positive_prompt": "x", "width": 64,
                                                                      "height": 64}), Progress())
    assert submitted(fake)["9"]["inputs"]["filename_prefix"] == "override/text-to-image"
    [out] = await provider.generate(task("TextToImage", "animeXL.safetensors", tmp_path, {"positive_prompt": "x"}),
                                    Progress())
    assert png_dims(out.path) == (64, 64)
    assert submitted(fake)["9"]["inputs"]["filename_prefix"] == "anime/anime"
    assert submitted(fake)["3"]["inputs"]["steps"] == 2
    # model_workflows picks a workflow for any model name.
    pinned = make_provider(registry, fake.base_url, http, config=config, workflows_dir="workflows",
                           model_workflows={LIGHTNING: "anime"})
    await pinned.generate(task("TextToImage", LIGHTNING, tmp_path, {"positive_prompt": "x"}), Progress())
    assert submitted(fake)["9"]["inputs"]["filename_prefix"] == "anime/anime"


def test_bad_workflow_files_are_config_errors(registry: Registry, http: aiohttp.ClientSession,
                                              tmp_path: Path) -> None:
    (tmp_path / "ui.json").write_text(json.dumps({"nodes": [], "links": []}))
    (tmp_path / "nameless.json").write_text(json.dumps({"1": {"class_type": "SaveImage", "inputs": {}}}))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConfigError) as err:
        make_provider(registry, "http://127.0.0.1:1", http, config=Config(base_dir=str(tmp_path)),
                      workflows_dir=".")
    text = "\n".join(err.value.problems)
    assert "Export (API)" in text and "nameless.json" in text and "task must be one of" in text
    assert "broken.json" in text
    with pytest.raises(ConfigError, match="is not a folder"):
        make_provider(registry, "http://127.0.0.1:1", http, workflows_dir=str(tmp_path / "nope"))


async def test_workflows_other_plugins_register_are_used_when_the_context_has_the_registry(
        fake: FakeComfyUI, registry: Registry, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    nodes = wf.nodes_of(registry.workflows["text-to-image"].template)
    extra = WorkflowSpec(name="from-a-plugin", task="TextToImage",
                         template={"_meta": {"models": ["plugin-model*"]},
                                   **{k: v for k, v in nodes.items() if k != "9"},
                                   "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "plugin/x",
                                                                               "images": ["8", 0]}}},
                         defaults=dict(registry.workflows["text-to-image"].defaults))
    ctx = types.SimpleNamespace(
        provider=ProviderConfig(name="c", type="comfyui", base_url=fake.base_url), options={}, http=http,
        config=Config(), registry=types.SimpleNamespace(workflows={**registry.workflows.items, extra.name: extra}))
    provider = registry.media_providers["comfyui"].factory(ctx)
    fake.checkpoints.append("plugin-model.safetensors")
    await provider.generate(task("TextToImage", "plugin-model.safetensors", tmp_path,
                                 {"positive_prompt": "x", "width": 64, "height": 64}), Progress())
    assert submitted(fake)["9"]["inputs"]["filename_prefix"] == "plugin/x"


# --------------------------------------------------------------------------- the fake itself


async def test_the_fake_view_and_upload_behave_like_comfyui(fake: FakeComfyUI, http: aiohttp.ClientSession) -> None:
    async def upload(overwrite: bool) -> dict[str, Any]:
        form = aiohttp.FormData()
        form.add_field("image", png_bytes(4, 4, (1, 2, 3)) if overwrite else png_bytes(4, 4),
                       filename="x.png", content_type="image/png")
        if overwrite:
            form.add_field("overwrite", "true")
        async with http.post(f"{fake.base_url}/upload/image", data=form) as resp:
            return await resp.json()

    assert await upload(False) == {"name": "x.png", "subfolder": "", "type": "input"}
    assert (await upload(False))["name"] == "x.png"  # identical content is reused
    assert (await upload(True))["name"] == "x.png"
    assert (await upload(False))["name"] == "x (1).png"  # a different file with a clashing name
    for query, status in ((dict(filename="x.png", type="input"), 200), (dict(filename="nope.png"), 404),
                          (dict(filename="x.png", subfolder="../../etc", type="input"), 403),
                          (dict(filename="../x.png"), 400)):
        async with http.get(f"{fake.base_url}/api/view", params=query) as resp:
            assert resp.status == status, query
    async with http.get(f"{fake.base_url}/history/unknown") as resp:
        assert await resp.json() == {}
    async with http.post(f"{fake.base_url}/prompt", json={"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}) \
            as resp:
        body = await resp.json()
        assert resp.status == 400 and body["error"]["message"] == "Cannot execute because node Nope does not exist."
    async with http.post(f"{fake.base_url}/prompt", json={"prompt": {"1": {"class_type": "VAEDecode",
                                                                           "inputs": {}}}}) as resp:
        assert (await resp.json())["error"]["type"] == "prompt_no_outputs"
