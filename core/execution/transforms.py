"""Running a transform job: stage its inputs, run the transform off the loop, store its outputs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ApiError
from ..jobs.callbacks import generation_callback_body
from ..jobs.executor import Executor, JobContext
from ..jobs.model import Job, JobResult, Usage
from ..media import TransformRequest
from ..registry import TransformSpec
from .staging import stage_inputs

#: How many transforms of a kind run at once on this node (CPU-bound work).
_CPUS = os.cpu_count() or 2
TRANSFORM_CONCURRENCY = {"image": min(4, _CPUS), "video": max(1, _CPUS // 2), "audio": max(1, _CPUS // 2)}


def transform_queue(spec: TransformSpec) -> str:
    """The job queue a transform's jobs wait in: one per kind, so video work cannot starve images."""
    return f"local-{spec.kind}"


class TransformExecutor(Executor):
    """Runs one transform: stage inputs, run it off the loop, store the outputs."""

    def __init__(self, spec: TransformSpec, store: Any, work_root: Path, timeout: float) -> None:
        self.spec = spec
        self.store = store
        self.work_root = work_root
        self.timeout = timeout

    async def run(self, job: Job, ctx: JobContext) -> JobResult:
        workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=f"job{job.id}-", dir=self.work_root))
        try:
            inputs = await stage_inputs(self.store, job.inputs, workdir)
            await ctx.progress(None, f"Running {self.spec.name}")
            try:
                outputs = await self.spec.run(TransformRequest(
                    inputs=inputs, args=dict(job.request.get("args", {})), workdir=workdir, timeout=self.timeout))
            except ApiError as exc:
                if exc.status < 500:  # the input is bad: it is not worth keeping
                    for record in job.inputs.values():
                        with contextlib.suppress(ApiError, OSError):
                            await self.store.delete(record["path"])
                raise
            await ctx.executed()
            results = []
            for out in outputs:
                stored = await self.store.put_file(out.path, ext=out.ext, key_id=job.key_id)
                results.append({"path": stored.path, "fileName": stored.path.rsplit("/", 1)[-1],
                                "outputFormat": out.ext, "width": out.width, "height": out.height,
                                "duration": out.duration, "size": stored.size})
            return JobResult(response={"results": results}, outputs=[r["path"] for r in results],
                             usage=Usage(provider="local", model=self.spec.name))
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)

    def callback_body(self, job: Job) -> Mapping[str, Any] | None:
        return generation_callback_body(job, (job.response or {}).get("results", []), text=False)

    def provider_of(self, job: Job) -> str | None:
        return "local"
