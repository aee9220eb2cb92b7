"""A third-party transform plugin, defined only in the tests: GrayscaleImage (the docs/plugin-hooks.md example).

Core knows nothing of it; loaded with ``plugins.load: [grayscale_plugin]`` it is
served as ``/api/GrayscaleImage`` and ``/api/QueueGrayscaleImage`` from its
TransformSpec alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import attrs
from aiport.core import hookimpl
from aiport.core.http.dto import field
from aiport.core.media import TransformOutput, TransformRequest, bad_input, output_path
from aiport.core.registry import TransformSpec


@attrs.define
class GrayscaleFields:
    """GrayscaleImage's one argument."""

    intensity: float = field(default=1.0, ge=0, le=1, description="0 keeps the colours, 1 is fully gray")


def _to_gray(source: Path, target: Path, intensity: float) -> tuple[int, int]:
    from wand.exceptions import WandException
    from wand.image import Image

    try:
        with Image(filename=f"png:{source}") as img:
            img.modulate(saturation=100 * (1 - intensity))
            img.format = "png"
            img.save(filename=str(target))
            return img.width, img.height
    except WandException:
        raise bad_input("image", "The image file is not a PNG.") from None


async def grayscale(request: TransformRequest) -> list[TransformOutput]:
    """Take out ``Intensity`` of the image's colour (a PNG), in a worker thread."""
    intensity = request.parse(GrayscaleFields).intensity
    source = request.input("image")
    target = output_path(request.workdir, "png", "gray")
    width, height = await asyncio.to_thread(_to_gray, source.path, target, intensity)
    return [TransformOutput(path=target, ext="png", content_type="image/png", width=width, height=height)]


@hookimpl
def register_transforms(register: Callable[[TransformSpec], None]) -> None:
    register(TransformSpec(name="GrayscaleImage", kind="image", run=grayscale, fields=GrayscaleFields,
                           summary="Make an image gray"))
