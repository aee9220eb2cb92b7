"""Moving a request's uploads into the artifact store, and back out to local files for its job.

Uploads are kept under ``input/...`` before a job is queued, so a queued job
survives a restart and a job may run on a node other than the one that took the
request; the executor then stages each kept input into a local file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import aiofiles

from ..errors import NotFound
from ..interfaces import ArtifactStore
from ..media import MediaInput, content_type_for


class Upload(Protocol):
    """An uploaded file spooled to local disk (``aiport.core.http.inputs.UploadedFile``)."""

    @property
    def path(self) -> Path: ...
    @property
    def extension(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def content_type(self) -> str: ...
    @property
    def filename(self) -> str: ...


async def keep_inputs(store: ArtifactStore, uploads: Mapping[str, Upload], key_id: int) -> dict[str, dict[str, Any]]:
    """Move uploads into the artifact store (``input/...``) for key ``key_id``; their records for the job."""
    kept = {}
    for field_name, upload in uploads.items():
        stored = await store.put_file(upload.path, ext=upload.extension, key_id=key_id, kind="input",
                                      sha256=upload.sha256)
        kept[field_name] = {"path": stored.path, "contentType": upload.content_type, "fileName": upload.filename}
    return kept


async def stage_inputs(store: Any, inputs: Mapping[str, Any], workdir: Path) -> dict[str, MediaInput]:
    """Local files for a job's stored inputs: the store's own file when it has one, else a download."""
    staged = {}
    for field_name, record in inputs.items():
        found = await store.stat(record["path"])
        if found is None:
            raise NotFound(f"The uploaded {field_name} of this job is no longer stored.")
        path = found.local_path
        if path is None:
            path = workdir / f"input-{field_name}{Path(record['path']).suffix}"
            async with aiofiles.open(path, "wb") as out:
                async for chunk in store.iter_chunks(record["path"]):
                    await out.write(chunk)
        staged[field_name] = MediaInput(field=field_name, path=path, content_type=record.get("contentType") or
                                        content_type_for(Path(record["path"]).suffix),
                                        filename=record.get("fileName") or Path(record["path"]).name)
    return staged
