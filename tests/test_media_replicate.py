"""The ``replicate`` media provider against a protocol-faithful fake Replicate (real image outputs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiport.core.config import Config, ProviderConfig, Secret
from aiport.core.errors import ProviderError, ValidationFailed
from aiport.core.media import TEXT_TO_IMAGE, GenerationTask
from aiport.core.plugins import build_plugin_manager
from aiport.core.registry import ProviderContext, Registry, collect
from aiport.plugins import media_replicate
from aiport.plugins.media_common import image_size, wav_duration
from fakes.media_files import render_image, render_wav
from fakes.replicate_server import SDXL_LIGHTNING_VERSION, SDXL_VERSION, FakeReplicate
from structlog.testing import capture_logs
from wand.image import Image

KEY = "r8_test-secret-token-1234"
FAST = {"poll_interval": 0.01, "poll_max_interval": 0.04}
SCHNELL = "black-forest-labs/flux-schnell"


class Progress:
    """Records what a provider reports."""

    def __init__(self) -> None:
        self.reports: list[tuple[float | None, str | None]] = []

    async def __call__(self, value: float | None = None, status: str | None = None) -> None:
        self.reports.append((value, status))

    @property
    def statuses(self) -> list[str | None]:
        return [s for _, s in self.reports]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return collect(build_plugin_manager(), Config())


@pytest.fixture
async def fake() -> AsyncIterator[FakeReplicate]:
    async with FakeReplicate(api_key=KEY) as f:
        yield f  # type: ignore[misc]


@pytest.fixture
def make(registry: Registry, http: aiohttp.ClientSession, fake: FakeReplicate) -> Callable[..., Any]:
    """``make(options, **provider config)``: a provider built by the registered factory."""

    def build(options: dict[str, Any] | None = None, **cfg: Any) -> Any:
        cfg.setdefault("base_url", fake.base_url)
        cfg.setdefault("api_key", Secret(KEY))
        ctx = ProviderContext(provider=ProviderConfig(name="rep", type="replicate", **cfg),
                              options={**FAST, **(options or {})}, http=http, config=Config())
        return registry.media_providers["replicate"].factory(ctx)

    return build


def task(workdir: Path, model: str = SCHNELL, timeout: float = 10.0, **args: Any) -> GenerationTask:
    args.setdefault("positive_prompt", "a lighthouse at dusk")
    return GenerationTask(task=TEXT_TO_IMAGE, model=model, args=args, inputs={}, workdir=workdir, timeout=timeout)


def creates(fake: FakeReplicate) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST" and r.path.endswith("/predictions")]


def polls(fake: FakeReplicate) -> list[Any]:
    return [r for r in fake.requests if r.method == "GET" and r.path.startswith("/v1/predictions/")]


def measured(path: Path) -> tuple[int, int, str]:
    with Image(filename=str(path)) as img:
        return img.width, img.height, img.format


# --------------------------------------------------------------------------- registration


def test_registered_by_the_default_plugins(registry: Registry) -> None:
    ptype = registry.media_providers["replicate"]
    assert ptype.tasks == frozenset({TEXT_TO_IMAGE})
    assert ptype.default_base_url == "https://api.replicate.com"
    assert ptype.options is media_replicate.ReplicateOptions and ptype.description
    assert ptype.api_models["flux-schnell"] == SCHNELL
    assert ptype.api_models["sdxl"] == f"stability-ai/sdxl:{SDXL_VERSION}"
    assert ptype.api_models["sdxl-lightning"] == f"bytedance/sdxl-lightning-4step:{SDXL_LIGHTNING_VERSION}"
    assert {"flux-dev", "flux-pro", "flux-1.1-pro"} <= set(ptype.api_models)
    assert ptype.model_tasks == {m: TEXT_TO_IMAGE for m in ptype.api_models}
    # Every catalogued model has an input profile, so none falls back to the generic shape.
    assert all(media_replicate.ModelRef.parse(m).slug in media_replicate.PROFILES  # type: ignore[union-attr]
               for m in ptype.api_models.values())


# --------------------------------------------------------------------------- input mapping and outputs


async def test_flux_batch_runs_as_one_prediction_with_real_outputs(fake: FakeReplicate, make: Any,
                                                                   tmp_path: Path) -> None:
    provider = make()
    progress = Progress()
    outputs = await provider.generate(task(tmp_path, width=1920, height=1080, batch_size=3, seed=7), progress)

    [create] = creates(fake)
    assert create.path == f"/v1/models/{SCHNELL}/predictions"
    assert create.headers["Authorization"] == f"Bearer {KEY}"
    assert "Prefer" not in create.headers
    assert create.body == {"input": {"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9", "num_outputs": 3,
                                     "output_format": "webp", "seed": 7}}
    assert len(outputs) == 3
    for out in outputs:
        assert out.path.parent == tmp_path and out.path.suffix == ".webp"
        assert (out.ext, out.content_type, out.width, out.height) == ("webp", "image/webp", 1344, 768)
        assert measured(out.path) == (1344, 768, "WEBP")
    assert progress.statuses[-1] == "Replicate prediction succeeded"


async def test_versioned_sdxl_maps_size_negative_prompt_steps_and_guidance(fake: FakeReplicate, make: Any,
                                                                          tmp_path: Path) -> None:
    model = f"stability-ai/sdxl:{SDXL_VERSION}"
    outputs = await make().generate(task(tmp_path, model=model, width=512, height=768, batch_size=2, seed=5,
                                         negative_prompt="blurry", steps=30, cfg_scale=7, output_format="png"),
                                    Progress())
    [create] = creates(fake)
    assert create.path == "/v1/predictions"
    assert create.body == {"version": SDXL_VERSION, "input": {
        "prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "width": 512, "height": 768,
        "num_inference_steps": 30, "guidance_scale": 7.0, "num_outputs": 2, "seed": 5}}
    assert [(o.ext, o.width, o.height) for o in outputs] == [("png", 512, 768)] * 2
    assert measured(outputs[1].path) == (512, 768, "PNG")


async def test_lightning_fits_sizes_and_steps_into_the_models_ranges(fake: FakeReplicate, make: Any,
                                                                    tmp_path: Path) -> None:
    model = f"bytedance/sdxl-lightning-4step:{SDXL_LIGHTNING_VERSION}"
    [out] = await make().generate(task(tmp_path, model=model, width=2048, height=1024, steps=25, cfg_scale=80),
                                  Progress())
    sent = creates(fake)[0].body["input"]
    assert (sent["width"], sent["height"]) == (1280, 640)
    assert sent["num_inference_steps"] == 10 and sent["guidance_scale"] == 50.0
    assert (out.width, out.height) == (1280, 640)


async def test_single_output_models_run_one_prediction_per_image(fake: FakeReplicate, make: Any,
                                                                tmp_path: Path) -> None:
    progress = Progress()
    outputs = await make().generate(task(tmp_path, model="black-forest-labs/flux-1.1-pro", width=1000, height=600,
                                         batch_size=3, seed=10), progress)
    sent = sorted((r.body["input"] for r in creates(fake)), key=lambda i: i["seed"])
    assert [i["seed"] for i in sent] == [10, 11, 12]
    assert all(i["aspect_ratio"] == "custom" and (i["width"], i["height"]) == (992, 608) for i in sent)
    assert all("num_outputs" not in i for i in sent)
    assert [(o.width, o.height) for o in outputs] == [(992, 608)] * 3
    assert len({o.path for o in outputs}) == 3
    assert "Replicate: 3 of 3 predictions done" in progress.statuses


async def test_cdn_downloads_never_get_the_token(make: Any, http: aiohttp.ClientSession, registry: Registry,
                                                 tmp_path: Path) -> None:
    async with FakeReplicate(api_key=KEY, delivery_host="localhost") as cdn_fake:
        provider = make(base_url=cdn_fake.base_url)
        [out] = await provider.generate(task(tmp_path), Progress())
        [download] = [r for r in cdn_fake.requests if r.path.startswith("/delivery/")]
    assert "Authorization" not in download.headers
    assert (out.width, out.height) == (1024, 1024)


def test_a_model_without_profile_gets_ai_servers_input() -> None:
    options = media_replicate.ReplicateOptions()
    got = media_replicate.plan_inputs({"positive_prompt": "cat", "width": 1024, "height": 576, "seed": 3,
                                       "negative_prompt": "dog", "steps": 9},
                                      media_replicate.GENERIC, options)
    assert got == [{"prompt": "cat", "aspect_ratio": "16:9", "seed": 3}]
    assert media_replicate.nearest_aspect_ratio(832, 1216, media_replicate.FLUX_RATIOS) == "2:3"
    assert media_replicate.plan_inputs({"positive_prompt": "cat", "aspect_ratio": "21:9", "width": 64},
                                       media_replicate.PROFILES[SCHNELL], options)[0]["aspect_ratio"] == "21:9"


# --------------------------------------------------------------------------- polling and progress


async def test_polls_with_backoff_and_reports_log_progress(fake: FakeReplicate, make: Any, tmp_path: Path) -> None:
    provider = make()
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(seconds)

    provider.sleep = sleep
    fake.slow_next(polls=4)
    progress = Progress()
    [out] = await provider.generate(task(tmp_path), progress)

    assert delays == [0.01, 0.02, 0.04, 0.04, 0.04]  # doubling from poll_interval, capped at poll_max_interval
    assert len(polls(fake)) == 5
    values = [v for v, _ in progress.reports if v is not None]
    assert values == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert progress.statuses[0] == "Replicate prediction starting"
    assert "Replicate prediction processing (40%)" in progress.statuses
    assert (out.width, out.height) == (1024, 1024)


async def test_prefer_wait_gets_the_result_from_the_create_call(fake: FakeReplicate, make: Any,
                                                                tmp_path: Path) -> None:
    [out] = await make({"prefer_wait": 30}).generate(task(tmp_path), Progress())
    assert creates(fake)[0].headers["Prefer"] == "wait=30"
    assert polls(fake) == []
    assert out.ext == "webp"


async def test_transient_poll_failures_do_not_abandon_the_prediction(fake: FakeReplicate, make: Any,
                                                                     tmp_path: Path) -> None:
    provider = make()
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    provider.sleep = sleep
    fake.fail_polls_next(1, status=503)
    fake.fail_polls_next(1, status=429, retry_after="0.5")
    [out] = await provider.generate(task(tmp_path), Progress())
    assert len(polls(fake)) == 3
    assert delays == [0.01, 0.01, 0.5]  # a 429's Retry-After is honoured
    assert fake.cancel_requests == []
    assert out.width == 1024


async def test_too_many_poll_failures_give_up_and_cancel(fake: FakeReplicate, make: Any, tmp_path: Path) -> None:
    fake.fail_polls_next(3, status=502)
    with pytest.raises(ProviderError) as info:
        await make({"poll_retries": 2}).generate(task(tmp_path), Progress())
    assert info.value.retryable and "502" in info.value.message
    assert fake.cancel_requests == list(fake.predictions)


# --------------------------------------------------------------------------- timeouts and cancellation


async def test_timeout_cancels_the_prediction(fake: FakeReplicate, make: Any, tmp_path: Path) -> None:
    fake.stuck_next()
    with pytest.raises(ProviderError) as info:
        await make().generate(task(tmp_path, timeout=0.3), Progress())
    err = info.value
    assert (err.error_code, err.status, err.retryable) == ("Timeout", 504, True)
    assert "0.3s" in err.message
    [pid] = fake.predictions
    assert fake.cancel_requests == [pid]
    assert fake.predictions[pid].status == "canceled"


async def test_a_cancelled_job_cancels_its_prediction(fake: FakeReplicate, make: Any, tmp_path: Path) -> None:
    fake.stuck_next()
    running = asyncio.create_task(make().generate(task(tmp_path), Progress()))
    await fake.wait_for_requests(3)  # create + two polls
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert fake.cancel_requests == list(fake.predictions)


async def test_a_failed_sibling_cancels_the_rest_of_the_batch(fake: FakeReplicate, make: Any,
                                                              tmp_path: Path) -> None:
    fake.fail_prediction_next("Prediction interrupted; please retry (code: PA)")
    fake.stuck_next()
    with pytest.raises(ProviderError) as info:
        await make().generate(task(tmp_path, model="black-forest-labs/flux-pro", batch_size=2), Progress())
    assert "interrupted" in info.value.message and info.value.retryable
    stuck = [p.id for p in fake.predictions.values() if p.script.stuck]
    assert fake.cancel_requests == stuck
    assert fake.predictions[stuck[0]].status == "canceled"


async def test_a_hanging_create_times_out(fake: FakeReplicate, make: Any, tmp_path: Path) -> None:
    fake.hang_next()
    with pytest.raises(ProviderError) as info:
        await make().generate(task(tmp_path, timeout=0.3), Progress())
    assert info.value.error_code == "Timeout"
    await fake.wait_cancelled()


# --------------------------------------------------------------------------- errors


async def test_failed_predictions_map_to_provider_errors(fake: FakeReplicate, make: Any, tmp_path: Path) -> None:
    fake.fail_prediction_next("NSFW content detected. Try running it again, or try a different prompt.")
    with pytest.raises(ProviderError) as info:
        await make().generate(task(tmp_path), Progress())
    err = info.value
    assert (err.status, err.retryable, err.error_code) == (400, False, "ContentPolicyViolation")
    assert "NSFW content detected" in err.message

    fake.fail_prediction_next("ValueError: bad latent shape", polls=1)
    with pytest.raises(ProviderError) as info:
        await make().generate(task(tmp_path), Progress())
    assert (info.value.status, info.value.retryable) == (502, False)
    assert "bad latent shape" in info.value.message


async def test_http_errors_keep_replicates_message_and_retry_after(fake: FakeReplicate, make: Any,
                                                                   tmp_path: Path) -> None:
    provider = make()
    fake.fail_next(1, status=429, retry_after="7")
    with pytest.raises(ProviderError) as info:
        await provider.generate(task(tmp_path), Progress())
    assert (info.value.status, info.value.retryable, info.value.retry_after) == (429, True, 7.0)

    fake.fail_next(1, status=500)
    with pytest.raises(ProviderError) as info:
        await provider.generate(task(tmp_path), Progress())
    assert info.value.retryable and info.value.status == 502

    with pytest.raises(ProviderError) as info:
        await provider.generate(task(tmp_path, model=f"stability-ai/sdxl:{'0' * 64}"), Progress())
    assert (info.value.status, info.value.retryable) == (422, False)
    assert "Invalid version or not permitted: The specified version does not exist" in info.value.message

    with pytest.raises(ProviderError) as info:
        await provider.generate(task(tmp_path, model="nobody/no-such-model"), Progress())
    assert info.value.status == 404 and not info.value.retryable

    await fake.close()
    with pytest.raises(ProviderError) as info:
        await provider.generate(task(tmp_path), Progress())
    assert info.value.retryable and "cannot reach" in info.value.message


async def test_the_token_never_appears_in_errors_or_logs(make: Any, tmp_path: Path) -> None:
    wrong = "r8_wrong-secret-token-9876"
    provider = make(api_key=Secret(wrong))
    with capture_logs() as logs, pytest.raises(ProviderError) as info:
        await provider.generate(task(tmp_path), Progress())
    assert info.value.status == 502 and info.value.upstream_status == 401
    assert "Invalid token" in info.value.message and wrong not in info.value.message
    assert wrong not in repr(logs)


async def test_bad_requests_fail_before_any_call(fake: FakeReplicate, make: Any, tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as invalid:
        await make().generate(task(tmp_path, positive_prompt="  "), Progress())
    assert invalid.value.errors[0].field_name == "PositivePrompt"
    with pytest.raises(ProviderError) as info:
        await make().generate(task(tmp_path, model="not a model"), Progress())
    assert info.value.status == 400
    with pytest.raises(ProviderError):
        await make().generate(GenerationTask(task="TextToSpeech", model=SCHNELL, args={"text": "hi"}, inputs={},
                                             workdir=tmp_path), Progress())
    assert fake.requests == []


async def test_probe_checks_the_account(fake: FakeReplicate, make: Any) -> None:
    await make().probe()
    assert fake.last.path == "/v1/account" and fake.last.headers["Authorization"] == f"Bearer {KEY}"
    with pytest.raises(ProviderError) as info:
        await make(api_key=Secret("r8_revoked-token-0000")).probe()
    assert info.value.upstream_status == 401


def test_options_are_checked() -> None:
    from aiport.core.config import structure
    from aiport.core.errors import ConfigError

    with pytest.raises(ConfigError, match="prefer_wait"):
        structure({"prefer_wait": 90}, media_replicate.ReplicateOptions)
    with pytest.raises(ConfigError, match="output_format"):
        structure({"output_format": "gif"}, media_replicate.ReplicateOptions)
    opts = structure({"poll_interval": "250ms", "extra_input": {"disable_safety_checker": True}},
                     media_replicate.ReplicateOptions)
    assert opts.poll_interval == 0.25 and opts.extra_input == {"disable_safety_checker": True}


# --------------------------------------------------------------------------- measuring outputs


@pytest.mark.parametrize("ext", ["png", "webp", "jpg", "gif"])
def test_image_sizes_are_read_from_headers(ext: str) -> None:
    data = render_image(321, 123, ext)
    assert image_size(data[:65536]) == (321, 123)


def test_lossless_and_extended_webp_sizes() -> None:
    from wand.color import Color

    with Image(width=300, height=77, background=Color("#ff000080")) as img:
        img.format = "webp"
        img.options["webp:lossless"] = "true"
        lossless = bytes(img.make_blob())
    assert lossless[12:16] in (b"VP8L", b"VP8X")
    assert image_size(lossless) == (300, 77)


def test_wav_duration_trusts_the_file_over_an_unknown_length() -> None:
    plain = render_wav(1.5, comment="hello")
    assert wav_duration(plain, len(plain)) == pytest.approx(1.5)
    streamed = render_wav(0.75, unknown_length=True)
    assert wav_duration(streamed, len(streamed)) == pytest.approx(0.75)
