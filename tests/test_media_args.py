"""aiport.core.media: argument checking, time parsing, content types and the transform shapes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from aiport.core.errors import ValidationFailed
from aiport.core.http.inputs import UploadedFile
from aiport.core.media import (
    Args,
    MediaInput,
    TransformRequest,
    content_type_for,
    normalize_ext,
    output_path,
    parse_time,
    pascal,
)


@pytest.mark.parametrize(("text", "seconds"), [
    ("12", 12.0), ("12.5", 12.5), (7, 7.0), (1.25, 1.25), ("0:05", 5.0), ("1:05", 65.0), ("01:05.250", 65.25),
    ("120:00", 7200.0), ("1:02:03", 3723.0), ("1:02:03.5", 3723.5), (dt.timedelta(seconds=90), 90.0),
])
def test_parse_time(text: object, seconds: float) -> None:
    assert parse_time(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "-1", "1:60", "1:60:00", "1:2:3:4", "1:", ":30", True, None, "nan"])
def test_parse_time_refuses(text: object) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def test_pascal_names() -> None:
    assert [pascal(n) for n in ("output_format", "x", "start_time", "watermark_scale")] == [
        "OutputFormat", "X", "StartTime", "WatermarkScale"]


def test_args_collects_every_problem_with_pascal_names() -> None:
    args = Args({"Width": "12", "height": 1.5, "outputFormat": "JPEG", "opacity": "2", "start_time": "soon"})
    assert args.integer("width", ge=1) == 12
    assert args.integer("height") is None
    assert args.choice("output_format", {"jpg": "jpg", "jpeg": "jpg"}) == "jpg"
    assert args.number("opacity", ge=0, le=1) is None
    assert args.time("start_time") is None
    assert args.integer("x", required=True) is None
    assert args.choice("position", ["TopLeft", "Center"], default="Center") == "Center"
    with pytest.raises(ValidationFailed) as info:
        args.check()
    assert [(e.field_name, e.error_code) for e in info.value.errors] == [
        ("Height", "InvalidValue"), ("Opacity", "InclusiveBetween"), ("StartTime", "InvalidValue"),
        ("X", "NotEmpty")]
    assert info.value.errors[1].message == "'Opacity' must be between 0 and 1. You entered 2."
    assert info.value.to_wire()["responseStatus"]["errorCode"] == "InvalidValue"


def test_args_without_problems_pass_and_blank_strings_are_unset() -> None:
    args = Args({"width": "", "height": None, "position": "bottomright"})
    assert args.integer("width", required=False, default=5) == 5
    assert args.choice("position", ["BottomRight"]) == "BottomRight"
    args.check()


def test_content_types_and_extensions() -> None:
    assert content_type_for("PNG") == "image/png" and content_type_for(".webm") == "video/webm"
    assert content_type_for("avif") == "image/avif" and content_type_for("wma") == "audio/x-ms-wma"
    assert content_type_for("whatever") == "application/octet-stream"
    assert normalize_ext(".JPG") == "jpg"
    for bad in ("", "a/b", "toolongext", "p.ng"):
        with pytest.raises(ValueError):
            normalize_ext(bad)


def test_transform_shapes(tmp_path: Path) -> None:
    upload = UploadedFile(field="video", filename="My Clip.MOV", content_type="video/quicktime",
                          path=tmp_path / "abc.part", size=3, sha256="0" * 64)
    media = MediaInput.from_upload(upload)
    assert (media.field, media.extension, media.path) == ("video", "mov", tmp_path / "abc.part")
    request = TransformRequest(inputs={"video": media}, args={}, workdir=tmp_path)
    assert request.input("video") is media
    with pytest.raises(ValidationFailed) as info:
        request.input("watermark")
    assert info.value.errors[0].field_name == "Watermark"
    first, second = output_path(tmp_path, "png", "scaled"), output_path(tmp_path, "png", "scaled")
    assert first != second and first.parent == tmp_path and first.suffix == ".png"
    assert first.name.startswith("scaled-")
