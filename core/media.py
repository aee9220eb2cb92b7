"""Media transforms and stored artifacts: the shapes shared by the engine and the plugins.

A transform is registered as a :class:`~aiport.core.registry.TransformSpec` whose
``run`` is an async callable ``run(TransformRequest) -> list[TransformOutput]``
(see :data:`Transform`). The caller (the job engine, or a remote worker later)
stages every input into a local file, hands the transform a scratch ``workdir``
it owns, and stores whatever outputs come back; a transform therefore never
assumes where artifacts live and never writes outside ``workdir``.

Arguments arrive as the request DTO's fields in snake_case (``output_format``,
``start_time``); :class:`Args` reads and checks them and reports problems the way
AI Server does, as :class:`~aiport.core.errors.ValidationFailed` field errors
named in PascalCase (``OutputFormat``, ``StartTime``).

Artifact stores return :class:`StoredArtifact` records from ``put_file`` and
:class:`ArtifactFile` from ``stat``/``open``; extensions map to content types
through one fixed table (:func:`content_type_for`) so every platform agrees.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs

from .errors import BadRequest, FieldError, ValidationFailed
from .http.dto import build

if TYPE_CHECKING:
    from .http.inputs import UploadedFile

#: A transform's fields class, as :meth:`TransformRequest.parse` returns it.
F = TypeVar("F")

# --------------------------------------------------------------------------- content types

#: Extension (lower case, no dot) -> content type. Fixed on purpose: the
#: ``mimetypes`` module reads the platform's tables, which differ between hosts.
CONTENT_TYPES: Mapping[str, str] = {
    # images
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "tif": "image/tiff",
    "tiff": "image/tiff",
    "webp": "image/webp",
    "avif": "image/avif",
    "heic": "image/heic",
    "heif": "image/heif",
    "svg": "image/svg+xml",
    "ico": "image/x-icon",
    # video
    "mp4": "video/mp4",
    "m4v": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "avi": "video/x-msvideo",
    "wmv": "video/x-ms-wmv",
    "mpeg": "video/mpeg",
    "mpg": "video/mpeg",
    "ogv": "video/ogg",
    "ts": "video/mp2t",
    "flv": "video/x-flv",
    # audio
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "opus": "audio/ogg",
    "m4a": "audio/mp4",
    "wma": "audio/x-ms-wma",
    # other
    "txt": "text/plain; charset=utf-8",
    "json": "application/json",
    "pdf": "application/pdf",
    "bin": "application/octet-stream",
}

DEFAULT_CONTENT_TYPE = "application/octet-stream"

_EXT = re.compile(r"[a-z0-9]{1,8}")


def normalize_ext(ext: str) -> str:
    """``ext`` in lower case without a leading dot; :class:`ValueError` unless it is 1-8 letters/digits.

    Extensions become part of stored file names, so anything else is refused.
    """
    value = ext.strip().lower().removeprefix(".")
    if not _EXT.fullmatch(value):
        raise ValueError(f"not a file extension: {ext!r}")
    return value


def content_type_for(ext: str) -> str:
    """The content type for a file extension (``application/octet-stream`` when unknown)."""
    return CONTENT_TYPES.get(ext.strip().lower().removeprefix("."), DEFAULT_CONTENT_TYPE)


# --------------------------------------------------------------------------- transform shapes


@attrs.frozen
class MediaInput:
    """One staged input file of a transform."""

    #: The upload field it came in: ``image``, ``video``, ``audio`` or ``watermark``.
    field: str
    #: A local file the transform may read (and must not modify or delete).
    path: Path
    content_type: str = DEFAULT_CONTENT_TYPE
    #: The client's file name (sanitised), used for the extension and in messages.
    filename: str = ""

    @property
    def extension(self) -> str:
        """Lower-case extension of ``filename`` (else of ``path``), without the dot; ``""`` if none."""
        for name in (self.filename, self.path.name):
            suffix = Path(name).suffix.lower().lstrip(".")
            if suffix and _EXT.fullmatch(suffix):
                return suffix
        return ""

    @classmethod
    def from_upload(cls, upload: UploadedFile) -> MediaInput:
        """The input for a spooled multipart upload."""
        return cls(field=upload.field, path=upload.path, content_type=upload.content_type,
                   filename=upload.filename)


@attrs.frozen
class TransformRequest:
    """Everything a transform gets: staged inputs, checked-later args, a scratch folder, a deadline."""

    #: Staged inputs by upload field (``image``, ``video``, ``audio``, ``watermark``).
    inputs: Mapping[str, MediaInput]
    #: The request's arguments by field name (snake_case as core passes them; any case works).
    args: Mapping[str, Any]
    #: A folder owned by the caller; outputs must be written inside it.
    workdir: Path
    #: Seconds the transform may take; it stops its work and raises when they run out.
    timeout: float = 300.0

    def parse(self, fields: type[F]) -> F:
        """The args as an instance of ``fields`` (the transform's ``TransformSpec.fields``),
        converted and checked by the DTO layer against the limits declared there.

        Core has checked them already when they came over HTTP; parsing again costs
        microseconds and holds for every caller (a queued job, a variant, a test) alike.
        Raises :class:`~aiport.core.errors.ValidationFailed` naming the bad fields.
        """
        parsed: F = build(fields, self.args, naming="pascal")
        return parsed

    def input(self, field: str) -> MediaInput:
        """The staged input of upload ``field``; a 400 field error naming it when it is missing."""
        found = self.inputs.get(field)
        if found is None:
            name = pascal(field)
            raise ValidationFailed([FieldError("NotEmpty", name, f"'{humanize(name)}' must not be empty: "
                                                                 f"upload a file in the '{field}' field.")])
        return found


@attrs.frozen
class TransformOutput:
    """One file a transform wrote into its request's ``workdir``."""

    path: Path
    #: Extension without the dot (``png``, ``mp4``); the store names the artifact with it.
    ext: str
    content_type: str
    #: Measured properties of the written file, when cheap to know.
    width: int | None = None
    height: int | None = None
    #: Seconds, for audio and video.
    duration: float | None = None


#: The signature of a transform's ``run``.
Transform = Callable[[TransformRequest], Awaitable[list[TransformOutput]]]


def output_path(workdir: Path, ext: str, stem: str = "output") -> Path:
    """A fresh file name in ``workdir`` for an output with extension ``ext``.

    Names are unique so that several transforms (or outputs) can share a workdir.
    """
    safe_stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem)[:40] or "output"
    return workdir / f"{safe_stem}-{uuid.uuid4().hex[:12]}.{normalize_ext(ext)}"


# --------------------------------------------------------------------------- argument checking


def pascal(name: str) -> str:
    """``output_format`` -> ``OutputFormat``, ``x`` -> ``X``: how AI Server names DTO fields."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def humanize(name: str) -> str:
    """``OutputFormat`` -> ``Output Format``, as FluentValidation writes names in messages."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)


def _norm(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


_TIME = re.compile(r"(?:(\d+):)?(\d{1,3}):(\d{1,2}(?:\.\d+)?)")
_SECONDS = re.compile(r"\d+(?:\.\d+)?")

T = TypeVar("T")


def parse_time(value: Any) -> float:
    """Seconds from ``12.5``, ``"12.5"``, ``"m:ss"``, ``"mmm:ss.fff"`` or ``"h:mm:ss[.fff]"``.

    Raises :class:`ValueError` for anything else (negative values, seconds or
    minutes of 60 and more after a colon).
    """
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _SECONDS.fullmatch(text):
            seconds = float(text)
        else:
            m = _TIME.fullmatch(text)
            if not m:
                raise ValueError(f"not a time: {value!r}")
            hours, minutes, secs = int(m.group(1) or 0), int(m.group(2)), float(m.group(3))
            if secs >= 60 or (m.group(1) is not None and minutes >= 60):
                raise ValueError(f"not a time: {value!r}")
            seconds = hours * 3600 + minutes * 60 + secs
    else:
        raise ValueError(f"not a time: {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a time: {value!r}")
    return seconds


class Args:
    """Reads a transform's ``args`` field by field, collecting every problem.

    Each getter returns the converted value, or ``None`` when the field is unset
    or invalid (the problem is recorded); :meth:`check` then raises one
    :class:`~aiport.core.errors.ValidationFailed` with all of them::

        args = Args(request.args)
        width = args.integer("width", ge=1, le=7680)
        fmt = args.choice("output_format", ["png", "jpg"], required=True)
        args.check()

    Names are looked up case- and underscore-insensitively, so ``output_format``,
    ``OutputFormat`` and ``outputFormat`` all find the same value; field errors
    always use the PascalCase name.
    """

    def __init__(self, args: Mapping[str, Any]) -> None:
        self._values = {_norm(str(k)): v for k, v in args.items()}
        self.errors: list[FieldError] = []

    def raw(self, name: str) -> Any:
        """The value as given (``None`` when unset or an empty string)."""
        value = self._values.get(_norm(name))
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def error(self, name: str, code: str, message: str) -> None:
        """Record a problem with field ``name`` (snake_case or PascalCase); ``message`` follows the name."""
        field = pascal(name) if "_" in name or name[:1].islower() else name
        self.errors.append(FieldError(code, field, f"'{humanize(field)}' {message}"))

    def check(self) -> None:
        """Raise :class:`~aiport.core.errors.ValidationFailed` if any problem was recorded."""
        if self.errors:
            raise ValidationFailed(self.errors)

    def _missing(self, name: str, required: bool) -> None:
        if required:
            self.error(name, "NotEmpty", "must not be empty.")

    def _range(self, name: str, value: float, ge: float | None, le: float | None, gt: float | None) -> bool:
        if ge is not None and le is not None and not ge <= value <= le:
            self.error(name, "InclusiveBetween",
                       f"must be between {_num(ge)} and {_num(le)}. You entered {_num(value)}.")
            return False
        if ge is not None and value < ge:
            self.error(name, "GreaterThanOrEqual", f"must be greater than or equal to '{_num(ge)}'.")
            return False
        if gt is not None and value <= gt:
            self.error(name, "GreaterThan", f"must be greater than '{_num(gt)}'.")
            return False
        if le is not None and value > le:
            self.error(name, "LessThanOrEqual", f"must be less than or equal to '{_num(le)}'.")
            return False
        return True

    def integer(self, name: str, *, required: bool = False, ge: int | None = None, le: int | None = None,
                default: int | None = None) -> int | None:
        """A whole number (``12``, ``12.0`` or ``"12"``)."""
        value = self.raw(name)
        if value is None:
            self._missing(name, required)
            return default
        number: int | None = None
        integral_float = isinstance(value, float) and value.is_integer()
        integral_text = isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value) is not None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif integral_float or integral_text:
            number = int(value)
        if number is None:
            self.error(name, "InvalidValue", f"must be a whole number; got {str(value)[:40]!r}.")
            return None
        return number if self._range(name, number, ge, le, None) else None

    def number(self, name: str, *, required: bool = False, ge: float | None = None, le: float | None = None,
               gt: float | None = None, default: float | None = None) -> float | None:
        """A finite number (``0.5`` or ``"0.5"``)."""
        value = self.raw(name)
        if value is None:
            self._missing(name, required)
            return default
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            self.error(name, "InvalidValue", f"must be a number; got {str(value)[:40]!r}.")
            return None
        return number if self._range(name, number, ge, le, gt) else None

    def choice(self, name: str, choices: Iterable[str] | Mapping[str, T], *, required: bool = False,
               default: str | None = None) -> Any:
        """One of ``choices``, matched case-insensitively; returns the canonical spelling.

        With a mapping the mapped value is returned (use it for aliases such as
        ``{"jpg": "jpg", "jpeg": "jpg"}``); the message lists the keys.
        """
        table: Mapping[str, Any] = choices if isinstance(choices, Mapping) else {c: c for c in choices}
        value = self.raw(name)
        if value is None:
            self._missing(name, required)
            return table.get(default) if default is not None else None
        text = value.value if hasattr(value, "value") and isinstance(value.value, str) else value
        if isinstance(text, str):
            wanted = _norm(text.strip().lstrip("."))
            for key, mapped in table.items():
                if _norm(key) == wanted:
                    return mapped
        allowed = ", ".join(table)
        self.error(name, "InvalidValue", f"must be one of {allowed}; got {str(value)[:40]!r}.")
        return None

    def time(self, name: str, *, required: bool = False) -> float | None:
        """A time offset in seconds, from seconds or ``[h:]mm:ss[.fff]`` (see :func:`parse_time`)."""
        value = self.raw(name)
        if value is None:
            self._missing(name, required)
            return None
        try:
            return parse_time(value)
        except ValueError:
            self.error(name, "InvalidValue",
                       f"must be seconds (12.5) or a time as mm:ss or h:mm:ss; got {str(value)[:40]!r}.")
            return None


def bad_input(field: str, message: str) -> BadRequest:
    """A 400 about an uploaded file (not decodable, wrong kind, too large), naming its field."""
    name = pascal(field)
    return ValidationFailed([FieldError("InvalidFile", name, message)])


# --------------------------------------------------------------------------- stored artifacts


def owner_key_id(path: str) -> int | None:
    """The API key id a stored path belongs to (its ``{keyId}`` folder), or ``None`` if it has none.

    ``2026/11/21/7/abc.png`` and ``input/2026/11/21/7/abc.png`` both give 7 (and a
    variant beside either, too); a delete is allowed only to that key (spec
    section 5, "Isolation").
    """
    parts = path.split("/")
    if parts and parts[0] == "input":
        parts = parts[1:]
    if len(parts) == 5 and parts[3].isdigit():
        return int(parts[3])
    return None


@attrs.frozen
class StoredArtifact:
    """What an artifact store's ``put_file`` returns."""

    #: Relative POSIX path inside the store (``2026/11/21/7/{sha256}.png``); the artifact URL's tail.
    path: str
    size: int
    sha256: str
    content_type: str


@attrs.frozen
class ArtifactFile:
    """A stored file, for serving (what ``stat``/``open`` of an artifact store return)."""

    path: str
    size: int
    content_type: str
    modified: dt.datetime
    #: The file on local disk (stores that have one); serve it with ``web.FileResponse``.
    local_path: Path | None = None


# --------------------------------------------------------------------------- generation providers

#: The generation tasks (AI Server's APIs; ``TaskType`` numbers in brackets).
TEXT_TO_IMAGE = "TextToImage"  # 1
IMAGE_TO_IMAGE = "ImageToImage"  # 2
IMAGE_UPSCALE = "ImageUpscale"  # 3
IMAGE_WITH_MASK = "ImageWithMask"  # 4
IMAGE_TO_TEXT = "ImageToText"  # 5
TEXT_TO_SPEECH = "TextToSpeech"  # 7
SPEECH_TO_TEXT = "SpeechToText"  # 8
GENERATION_TASKS = (TEXT_TO_IMAGE, IMAGE_TO_IMAGE, IMAGE_UPSCALE, IMAGE_WITH_MASK, IMAGE_TO_TEXT,
                    TEXT_TO_SPEECH, SPEECH_TO_TEXT)
TEXT_TASKS = (IMAGE_TO_TEXT, SPEECH_TO_TEXT)


@attrs.frozen
class GenerationTask:
    """One generation request, as a media provider receives it."""

    #: One of :data:`GENERATION_TASKS`.
    task: str
    #: The provider's own model name (already mapped from the gateway model id).
    model: str
    #: The request's fields as snake_case python values: ``positive_prompt``,
    #: ``negative_prompt``, ``width``, ``height``, ``batch_size``, ``seed``, ``steps``,
    #: ``cfg_scale``, ``denoise``, ``sampler``, ``scheduler``, ``text`` (speech),
    #: ``prompt`` (image-to-text), ``voice``, ``language``...; unset ones are absent.
    args: Mapping[str, Any]
    #: Staged inputs by upload field: ``image``, ``mask``, ``audio``.
    inputs: Mapping[str, MediaInput]
    #: A folder owned by the caller; output files must be written inside it.
    workdir: Path
    #: Seconds the provider may take.
    timeout: float = 300.0


@attrs.frozen
class GeneratedOutput:
    """One result: a file written into the task's ``workdir`` (images, audio) or a text."""

    path: Path | None = None
    ext: str | None = None
    content_type: str | None = None
    text: str | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None


class ProgressReporter(Protocol):
    """Reports a running job's progress (shown by the status APIs)."""

    async def __call__(self, value: float | None = None, status: str | None = None) -> None: ...


class MediaProvider(Protocol):
    """One configured media backend (made by a ``MediaProviderType`` factory).

    ``generate`` runs one task and returns its outputs; it raises
    :class:`~aiport.core.errors.ProviderError` on failure (``retryable`` for
    connection errors, timeouts, 429 and 5xx; a node error with its message is
    not retryable) and reports progress through ``progress`` as it goes.
    """

    name: str

    async def generate(self, task: GenerationTask, progress: ProgressReporter) -> list[GeneratedOutput]: ...

    async def probe(self) -> None:
        """Raise :class:`~aiport.core.errors.ProviderError` unless the backend is healthy."""
        ...

    async def aclose(self) -> None: ...
