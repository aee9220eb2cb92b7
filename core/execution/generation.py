"""Running generation jobs (TextToImage, SpeechToText...) on media providers.

The job runs on the media provider its queue names: its stored inputs are staged as
local files, the provider's ``generate`` runs the task, and its output files become
artifacts of the calling key. A retryable failure fails the job over to the next
provider serving the model (:class:`~aiport.core.execution.executor.ProviderExecutor`).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UpstreamError
from ..interfaces import ArtifactStore
from ..jobs.callbacks import generation_callback_body
from ..jobs.executor import JobContext
from ..jobs.model import Job, JobResult, Usage
from ..media import GenerationTask, MediaInput
from .executor import ProviderExecutor
from .routing import ProviderManager
from .staging import stage_inputs


class GenerationExecutor(ProviderExecutor):
    """Runs a generation job on its media provider and keeps the outputs."""

    kind = "media"

    def __init__(self, task: str, providers: ProviderManager, store: ArtifactStore, work_root: Path, timeout: float,
                 *, text: bool = False) -> None:
        super().__init__(providers)
        self.task = task
        #: Whether the task's results are texts (image-to-text, speech-to-text), not files.
        self.text = text
        self.store = store
        self.work_root = work_root
        self.timeout = timeout

    async def run(self, job: Job, ctx: JobContext) -> JobResult:
        provider = self.provider_for(job)
        model = str(job.request["model"])
        workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=f"job{job.id}-", dir=self.work_root))
        try:
            inputs: dict[str, MediaInput] = await stage_inputs(self.store, job.inputs, workdir)
            task = GenerationTask(task=self.task, model=provider.api_model(model), args=dict(job.request["args"]),
                                  inputs=inputs, workdir=workdir, timeout=self.timeout)
            await ctx.progress(0.0, f"Running on {provider.name}")
            try:
                outputs = await provider.instance.generate(task, ctx.progress)
            except Exception as exc:
                self.failed(provider, exc)
                raise
            self.served(provider)
            await ctx.executed(provider.name)
            results: list[dict[str, Any]] = []
            for out in outputs:
                if out.text is not None:
                    results.append({"text": out.text})
                elif out.path is not None:
                    stored = await self.store.put_file(out.path, ext=out.ext or out.path.suffix.lstrip("."),
                                                       key_id=job.key_id)
                    results.append({"path": stored.path, "fileName": stored.path.rsplit("/", 1)[-1],
                                    "provider": provider.name, "width": out.width, "height": out.height,
                                    "duration": out.duration})
            if not results:
                raise UpstreamError(f"{provider.name} returned no outputs.", error_code="NoOutputs")
            self.succeeded(job)
            return JobResult(response={"results": results}, outputs=[r["path"] for r in results if "path" in r],
                             usage=Usage(provider=provider.name, model=model))
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)

    def callback_body(self, job: Job) -> Mapping[str, Any] | None:
        return generation_callback_body(job, (job.response or {}).get("results", []), text=self.text)
