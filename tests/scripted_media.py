"""A media provider for tests that really produces files (loaded via ``plugins.load``).

Prompts script it: ``slow`` takes a second (reporting progress), ``fail`` fails
retryably, ``broken node`` fails like a ComfyUI node error (not retryable).
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Callable
from typing import Any

import attrs
from aiport.core.errors import ProviderError
from aiport.core.hookspecs import hookimpl
from aiport.core.media import GeneratedOutput, GenerationTask, ProgressReporter
from aiport.core.registry import MediaProviderType
from wand.image import Image

MODELS = {"pic-1": "TextToImage", "pic-2": "TextToImage", "redraw-1": "ImageToImage", "inpaint-1": "ImageWithMask",
          "upscale-1": "ImageUpscale", "see-1": "ImageToText", "say-1": "TextToSpeech", "hear-1": "SpeechToText"}
CALLS: list[str] = []


@attrs.frozen
class ScriptedMediaOptions:
    down: bool = False


class ScriptedMedia:
    def __init__(self, ctx: Any) -> None:
        self.name = ctx.provider.name
        self.down = ctx.options.down

    async def generate(self, task: GenerationTask, progress: ProgressReporter) -> list[GeneratedOutput]:
        CALLS.append(f"{self.name}:{task.task}:{task.model}")
        prompt = str(task.args.get("positive_prompt") or task.args.get("text") or "")
        if self.down or prompt == "fail":
            raise ProviderError(f"{self.name} is unavailable", provider=self.name, upstream_status=503, retryable=True)
        if prompt == "broken node":
            raise ProviderError("KSampler (node 3): CUDA out of memory", provider=self.name, upstream_status=400)
        if prompt == "slow":
            for step in range(1, 5):
                await progress(step / 5, f"Sampling {step}/5")
                await asyncio.sleep(0.25)
        return await asyncio.to_thread(self._make, task)

    def _make(self, task: GenerationTask) -> list[GeneratedOutput]:
        if task.task == "TextToImage":
            w, h = task.args.get("width", 512), task.args.get("height", 512)
            return [self._png(task, w, h, i) for i in range(task.args.get("batch_size", 1))]
        if task.task in ("ImageToImage", "ImageWithMask", "ImageUpscale"):
            with Image(filename=str(task.inputs["image"].path)) as img:
                w, h = img.size
            factor = 2 if task.task == "ImageUpscale" else 1
            return [self._png(task, w * factor, h * factor, 0)]
        if task.task == "ImageToText":
            return [GeneratedOutput(text="a gradient from red to blue")]
        if task.task == "TextToSpeech":
            path = task.workdir / "speech.wav"
            with wave.open(str(path), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(8000)
                out.writeframes(b"\x00\x10" * 8000)
            return [GeneratedOutput(path=path, ext="wav", content_type="audio/wav", duration=1.0)]
        return [GeneratedOutput(text="hello from the transcript")]

    def _png(self, task: GenerationTask, w: int, h: int, i: int) -> GeneratedOutput:
        path = task.workdir / f"out{i}.png"
        with Image(width=w, height=h, pseudo=f"xc:rgb({i * 40},100,200)") as img:
            img.format = "png"
            img.save(filename=str(path))
        return GeneratedOutput(path=path, ext="png", content_type="image/png", width=w, height=h)

    async def probe(self) -> None:
        if self.down:
            raise ProviderError(f"{self.name} is down", provider=self.name, retryable=True)

    async def aclose(self) -> None:
        pass


@hookimpl
def register_media_providers(register: Callable[[MediaProviderType], None]) -> None:
    register(MediaProviderType(name="scripted-media", factory=ScriptedMedia, tasks=frozenset(MODELS.values()),
                               api_models={m: f"{m}.safetensors" for m in MODELS}, model_tasks=MODELS,
                               options=ScriptedMediaOptions))
