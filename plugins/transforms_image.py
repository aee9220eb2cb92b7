"""Image transforms with ImageMagick (through wand): ScaleImage, CropImage, WatermarkImage, ConvertImage.

Each transform declares its request here, once: the ``*Fields`` classes below carry
the limits and choices, and core serves, validates and documents the APIs from
them. What is left to check in the transforms depends on the image itself (a crop
starting outside it) or on several fields at once (a scale needs a side).

Untrusted images are decoded through :mod:`aiport.plugins.imaging` (magic bytes,
header first, ImageMagick's security policy, a worker pool off the event loop).

Outputs keep the input's format (AI Server wrote PNG); ScaleImage keeps the aspect
ratio when only one side is given; WatermarkImage really applies ``Opacity`` and
``WatermarkScale`` (AI Server used the scale as the opacity).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

import attrs
from aiport.core import hookimpl
from aiport.core.errors import BadRequest
from aiport.core.http.dto import field
from aiport.core.media import Args, TransformOutput, TransformRequest
from aiport.core.registry import TransformSpec
from aiport.plugins.imaging import (
    FORMATS,
    MAX_TOTAL_PIXELS,
    decode,
    first_frame_only,
    for_each_frame,
    kept_format,
    prepare_watermark,
    read_checked,
    run_in_pool,
    watermark_offset,
    write_image,
)

Position = Literal["TopLeft", "TopRight", "BottomLeft", "BottomRight", "Center"]
OutputImageFormat = Literal["jpg", "jpeg", "png", "gif", "bmp", "tiff", "webp", "avif"]

#: ConvertImage's ``OutputFormat`` values -> ImageMagick coder name.
OUTPUT_FORMATS: dict[str, str] = {
    "jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF", "webp": "WEBP",
    "avif": "AVIF",
}


# --------------------------------------------------------------------------- requests


@attrs.define
class ScaleImageFields:
    """ScaleImage's arguments: one side keeps the aspect ratio."""

    width: int | None = field(ge=1, le=8192)
    height: int | None = field(ge=1, le=8192)


@attrs.define
class CropFields:
    """The rectangle CropImage cuts out (clipped to the image)."""

    x: int = field(required=True, ge=0)
    y: int = field(required=True, ge=0)
    width: int = field(required=True, ge=1)
    height: int = field(required=True, ge=1)


@attrs.define
class WatermarkImageFields:
    """Where and how strongly WatermarkImage draws its watermark."""

    position: Position = field(default="BottomRight")
    opacity: float = field(default=0.5, ge=0, le=1)
    watermark_scale: float = field(default=0.2, gt=0, le=1)


@attrs.define
class ConvertImageFields:
    """The format ConvertImage writes."""

    output_format: OutputImageFormat = field(required=True)


# --------------------------------------------------------------------------- the transforms


async def scale_image(request: TransformRequest) -> list[TransformOutput]:
    """ScaleImage: resize to ``Width`` and/or ``Height``; with one side only, the aspect ratio is kept.

    With ``fit="within"`` (image variants) both sides are a bounding box and the
    aspect ratio is kept too.
    """
    params = request.parse(ScaleImageFields)
    width, height = params.width, params.height
    if width is None and height is None:
        need = Args({})
        need.error("width", "NotEmpty", "must not be empty: give Width, Height or both.")
        need.check()
    within = request.args.get("fit") == "within"
    source = request.input("image")

    def work(cancelled: threading.Event) -> list[TransformOutput]:
        data, info = read_checked(source.path, source.field)
        if width and height and within:
            ratio = min(width / info.width, height / info.height)
            size = (max(1, round(info.width * ratio)), max(1, round(info.height * ratio)))
        elif width and height:
            size = (width, height)
        elif width:
            size = (width, max(1, round(info.height * width / info.width)))
        else:
            assert height is not None
            size = (max(1, round(info.width * height / info.height)), height)
        if size[0] * size[1] * info.frames > MAX_TOTAL_PIXELS:
            raise BadRequest(f"The scaled image would be {size[0]}x{size[1]}, which is too large.")
        with decode(data, info, source.field) as img:
            img.resize(*size)
            img.reset_coords()
            return [write_image(img, kept_format(info.magick), request.workdir, "scaled", cancelled)]

    return await run_in_pool("ScaleImage", request.timeout, work)


async def crop_image(request: TransformRequest) -> list[TransformOutput]:
    """CropImage: the rectangle at ``X``,``Y`` of ``Width``x``Height``, clipped to the image."""
    params = request.parse(CropFields)
    x, y = params.x, params.y
    source = request.input("image")

    def work(cancelled: threading.Event) -> list[TransformOutput]:
        data, info = read_checked(source.path, source.field)
        bounds = Args({})
        if x >= info.width:
            bounds.error("X", "InclusiveBetween", f"must be less than the image width ({info.width}).")
        if y >= info.height:
            bounds.error("Y", "InclusiveBetween", f"must be less than the image height ({info.height}).")
        bounds.check()
        w, h = min(params.width, info.width - x), min(params.height, info.height - y)
        with decode(data, info, source.field) as img:
            for_each_frame(img, lambda frame: frame.crop(left=x, top=y, width=w, height=h))
            img.reset_coords()
            return [write_image(img, kept_format(info.magick), request.workdir, "cropped", cancelled)]

    return await run_in_pool("CropImage", request.timeout, work)


async def watermark_image(request: TransformRequest) -> list[TransformOutput]:
    """WatermarkImage: draw ``watermark`` on ``image`` at ``Position`` (default BottomRight, 10 px
    inset), ``WatermarkScale`` x the image's width wide (default .2), at ``Opacity`` (default .5)."""
    params = request.parse(WatermarkImageFields)
    source, mark_input = request.input("image"), request.input("watermark")

    def work(cancelled: threading.Event) -> list[TransformOutput]:
        data, info = read_checked(source.path, source.field)
        with decode(data, info, source.field) as img:
            mark = prepare_watermark(mark_input.path, mark_input.field, img.width, img.height,
                                     params.watermark_scale, params.opacity)
            with mark:
                left, top = watermark_offset(params.position, (img.width, img.height), (mark.width, mark.height))
                for_each_frame(img, lambda frame: frame.composite(mark, left=left, top=top, operator="over"))
            return [write_image(img, kept_format(info.magick), request.workdir, "watermarked", cancelled)]

    return await run_in_pool("WatermarkImage", request.timeout, work)


async def convert_image(request: TransformRequest) -> list[TransformOutput]:
    """ConvertImage: re-encode as ``OutputFormat`` (jpg, png, gif, bmp, tiff, webp, avif).

    Animated and multi-page images stay so in gif, tiff and webp; other formats get the
    first frame. Transparency is flattened onto white for jpg.
    """
    fmt = FORMATS[OUTPUT_FORMATS[request.parse(ConvertImageFields).output_format]]
    source = request.input("image")

    def work(cancelled: threading.Event) -> list[TransformOutput]:
        data, info = read_checked(source.path, source.field)
        with decode(data, info, source.field) as img:
            if len(img.sequence) > 1 and not fmt.multi_frame:
                with first_frame_only(img) as first:
                    return [write_image(first, fmt, request.workdir, "converted", cancelled)]
            return [write_image(img, fmt, request.workdir, "converted", cancelled)]

    return await run_in_pool("ConvertImage", request.timeout, work)


TRANSFORMS = (
    TransformSpec(name="ScaleImage", kind="image", run=scale_image, fields=ScaleImageFields,
                  summary="Resize an image; one side given keeps the aspect ratio",
                  description="Resize an image; with only Width or Height the aspect ratio is kept."),
    TransformSpec(name="CropImage", kind="image", run=crop_image, fields=CropFields,
                  summary="Crop an image to X, Y, Width, Height",
                  description="Cut the X, Y, Width, Height rectangle out of an image."),
    TransformSpec(name="WatermarkImage", kind="image", run=watermark_image, fields=WatermarkImageFields,
                  uploads=("image", "watermark"), summary="Watermark an image",
                  description="Draw a watermark image at a corner or the centre, scaled and translucent."),
    TransformSpec(name="ConvertImage", kind="image", run=convert_image, fields=ConvertImageFields,
                  summary="Convert an image to another format",
                  description="Re-encode an image as jpg, png, gif, bmp, tiff, webp or avif."),
)


@hookimpl
def register_transforms(register: Callable[[TransformSpec], None]) -> None:
    """Register the ImageMagick image transforms."""
    for spec in TRANSFORMS:
        register(spec)
