"""AI Server's wire conventions, declared once per request DTO.

A request DTO is an attrs class decorated with :func:`api`. That one
declaration drives:

- the routes (``/api/{DtoName}`` plus any custom routes) and their verbs;
- parsing from JSON, form, multipart or the query string, with property names
  matched case-insensitively (``PositivePrompt``, ``positivePrompt`` and
  ``positive_prompt`` are the same field);
- validation (required fields, ranges, lengths, choices) into the
  ``responseStatus`` envelope with field errors named as AI Server names them;
- the OpenAPI 3 document (:mod:`aiport.core.http.openapi`).

Responses are attrs classes too (or plain dicts for OpenAI-shaped bodies);
:func:`to_wire` renders attrs objects in camelCase with nulls dropped.

Example::

    @api(routes=["/generate/text-to-image"], response=ArtifactGenerationResponse)
    @attrs.define
    class TextToImage:
        positive_prompt: str = field(required=True, max_length=4000)
        width: int | None = field(default=None, ge=64, le=2048)
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Union, get_args, get_origin

import attrs

from ..errors import FieldError, ValidationFailed

Naming = Literal["pascal", "camel", "snake"]
Auth = Literal["none", "key", "admin"]


@attrs.frozen
class ApiMeta:
    """How a request DTO is served."""

    name: str
    methods: tuple[str, ...]
    routes: tuple[str, ...]
    auth: Auth
    response: Any
    summary: str
    tags: tuple[str, ...]
    #: How input/field-error names are spelled: AI Server DTOs are PascalCase,
    #: OpenAI/Ollama DTOs snake_case.
    naming: Naming
    #: Whether the handler may receive uploaded files.
    uploads: bool


_META = "__aiport_api__"
_FIELD = "aiport"


def api(
    name: str | None = None,
    *,
    methods: Iterable[str] = ("POST",),
    routes: Iterable[str] = (),
    auth: Auth = "key",
    response: Any = None,
    summary: str = "",
    tags: Iterable[str] = (),
    naming: Naming = "pascal",
    uploads: bool = False,
) -> Callable[[type], type]:
    """Declare an attrs class as a request DTO served at ``/api/{name}`` (plus ``routes``)."""

    def decorate(cls: type) -> type:
        if not attrs.has(cls):
            raise TypeError(f"@api needs an attrs class; decorate {cls.__name__} with @attrs.define first")
        meta = ApiMeta(
            name=name or cls.__name__,
            methods=tuple(m.upper() for m in methods),
            routes=tuple(routes),
            auth=auth,
            response=response,
            summary=summary or (cls.__doc__ or "").strip().split("\n")[0],
            tags=tuple(tags),
            naming=naming,
            uploads=uploads,
        )
        setattr(cls, _META, meta)
        return cls

    return decorate


def is_api(cls: type) -> bool:
    return isinstance(getattr(cls, _META, None), ApiMeta)


def api_meta(cls: type) -> ApiMeta:
    meta = getattr(cls, _META, None)
    if meta is None:
        raise TypeError(f"{cls.__name__} is not a request DTO (decorate it with @api)")
    return meta


@attrs.frozen
class FieldMeta:
    required: bool = False
    ge: float | None = None
    le: float | None = None
    gt: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    wire_name: str | None = None
    description: str = ""
    #: Extra input names accepted for this field (e.g. the HTTP header ``ReplyTo``).
    aliases: tuple[str, ...] = ()


def field(
    *,
    default: Any = attrs.NOTHING,
    factory: Callable[[], Any] | None = None,
    required: bool = False,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    wire_name: str | None = None,
    description: str = "",
    aliases: Iterable[str] = (),
) -> Any:
    """An attrs field with aiport's validation and naming metadata."""
    meta = FieldMeta(required, ge, le, gt, min_length, max_length, wire_name, description, tuple(aliases))
    if factory is not None:
        return attrs.field(factory=factory, metadata={_FIELD: meta})
    if default is attrs.NOTHING and not required:
        default = None
    if default is attrs.NOTHING:
        default = None  # required fields are checked by parse(), not by attrs
    return attrs.field(default=default, metadata={_FIELD: meta})


def field_meta(a: attrs.Attribute) -> FieldMeta:
    meta = a.metadata.get(_FIELD)
    return meta if isinstance(meta, FieldMeta) else FieldMeta()


# --------------------------------------------------------------------------- names


def pascal(snake: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


def camel(snake: str) -> str:
    p = pascal(snake)
    return p[:1].lower() + p[1:]


def norm(name: str) -> str:
    """The case- and underscore-insensitive form input names are matched on."""
    return name.replace("_", "").replace("-", "").lower()


def wire_name(a: attrs.Attribute, naming: Naming) -> str:
    meta = field_meta(a)
    if meta.wire_name:
        return meta.wire_name
    if naming == "snake":
        return a.name
    return pascal(a.name) if naming == "pascal" else camel(a.name)


@functools.lru_cache(maxsize=4096)
def _humanize(name: str) -> str:
    """``PositivePrompt`` -> ``Positive Prompt``, as FluentValidation writes names in messages."""
    if "_" in name:
        return name.replace("_", " ")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)


# --------------------------------------------------------------------------- types


_HINTS: dict[type, dict[str, Any]] = {}


def type_hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = hints
    return hints


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return tp, False


class _Invalid(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


_EXACT = (str, int, float, bool)


def coerce(value: Any, tp: Any, naming: Naming = "pascal") -> Any:
    """Convert an input value (JSON value or form/query string) to ``tp``; raise on mismatch."""
    if type(value) is tp and tp in _EXACT:  # the common JSON case: already the right type
        return value
    tp, _ = _unwrap_optional(tp)
    if type(value) is tp and tp in _EXACT:
        return value
    if value is None:
        return None
    if tp is Any or tp is object:
        return value
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        for choice in choices:
            if value == choice or (isinstance(value, str) and isinstance(choice, str)
                                   and value.lower() == choice.lower()):
                return choice
        raise _Invalid("Enum", "has a range of values which does not include '{value}'.")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if value == member.value or (isinstance(value, str) and value.lower() in
                                         (str(member.value).lower(), member.name.lower())):
                return member
        raise _Invalid("Enum", "has a range of values which does not include '{value}'.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _Invalid("InvalidValue", "must be true or false.")
    if tp is int:
        if isinstance(value, bool):
            raise _Invalid("InvalidValue", "must be a whole number.")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            return int(value)
        raise _Invalid("InvalidValue", "must be a whole number.")
    if tp is float:
        if isinstance(value, bool):
            raise _Invalid("InvalidValue", "must be a number.")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _Invalid("InvalidValue", "must be a number.")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise _Invalid("InvalidValue", "must be a string.")
    if tp is dt.datetime:
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                pass
        raise _Invalid("InvalidValue", "must be an ISO 8601 date and time.")
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        (item_tp,) = get_args(tp)[:1] or (Any,)
        if origin is list and isinstance(value, list):
            item_origin = get_origin(item_tp)
            if item_tp is Any or (item_origin is dict and get_args(item_tp)[1:] == (Any,)
                                  and all(type(v) is dict for v in value)):
                return value  # list[dict[str, Any]] (chat messages): nothing to convert
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    raise _Invalid("InvalidValue", "must be a list.") from None
            else:
                value = [v.strip() for v in text.split(",") if v.strip()] if text else []
        if not isinstance(value, list | tuple):
            value = [value]
        items = [coerce(v, item_tp, naming) for v in value]
        return items if origin in (list, None) else (origin or list)(items)
    if origin is dict or tp is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise _Invalid("InvalidValue", "must be a JSON object.") from None
        if not isinstance(value, dict):
            raise _Invalid("InvalidValue", "must be an object.")
        args = get_args(tp)
        if len(args) == 2 and args[1] is not Any:
            return {str(k): coerce(v, args[1], naming) for k, v in value.items()}
        return dict(value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    if attrs.has(tp):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise _Invalid("InvalidValue", "must be a JSON object.") from None
        if not isinstance(value, dict):
            raise _Invalid("InvalidValue", "must be an object.")
        return build(tp, value, naming=naming)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Invalid("InvalidValue", f"must be a {getattr(tp, '__name__', tp)}.")


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


def _check(a: attrs.Attribute, meta: FieldMeta, value: Any, name: str) -> FieldError | None:
    if value is None and not meta.required:
        return None
    human = _humanize(name)
    if meta.required and (_is_empty(value) or (isinstance(value, str) and not value.strip())):
        return FieldError("NotEmpty", name, f"'{human}' must not be empty.")
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if meta.ge is not None and meta.le is not None and not meta.ge <= value <= meta.le:
            return FieldError("InclusiveBetween", name,
                              f"'{human}' must be between {_num(meta.ge)} and {_num(meta.le)}. "
                              f"You entered {_num(value)}.")
        if meta.ge is not None and value < meta.ge:
            return FieldError("GreaterThanOrEqual", name,
                              f"'{human}' must be greater than or equal to '{_num(meta.ge)}'.")
        if meta.gt is not None and value <= meta.gt:
            return FieldError("GreaterThan", name, f"'{human}' must be greater than '{_num(meta.gt)}'.")
        if meta.le is not None and value > meta.le:
            return FieldError("LessThanOrEqual", name,
                              f"'{human}' must be less than or equal to '{_num(meta.le)}'.")
    if isinstance(value, str | list):
        n = len(value)
        if meta.max_length is not None and n > meta.max_length:
            return FieldError("MaximumLength", name,
                              f"The length of '{human}' must be {meta.max_length} characters or fewer. "
                              f"You entered {n} characters." if isinstance(value, str) else
                              f"'{human}' must have {meta.max_length} items or fewer.")
        if meta.min_length is not None and n < meta.min_length:
            return FieldError("MinimumLength", name,
                              f"The length of '{human}' must be at least {meta.min_length} characters."
                              if isinstance(value, str) else
                              f"'{human}' must have at least {meta.min_length} items.")
    return None


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


_MISSING = object()


@attrs.frozen
class _FieldPlan:
    attribute: attrs.Attribute
    meta: FieldMeta
    name: str
    keys: tuple[str, ...]
    hint: Any
    #: Checked even when absent (required) or when present (bounds): else skipped when absent.
    always_check: bool
    #: ``str``, ``int``, ``float`` or ``bool`` (optional or not): a value of exactly that type needs no coercion.
    exact: type | None = None
    #: ``list[dict[str, Any]]`` (optional or not), like chat messages: a list of dicts passes as it is.
    dict_list: bool = False


@attrs.frozen
class _Plan:
    fields: tuple[_FieldPlan, ...]
    #: Normalised input key -> the (field's position, key's rank among the field's keys) it names.
    by_key: dict[str, tuple[tuple[int, int], ...]]
    #: Positions of the fields checked even when absent (required ones).
    required: tuple[int, ...]


_PLANS: dict[tuple[type, str], _Plan] = {}


def _plan(cls: type, naming: Naming) -> _Plan:
    """Per DTO class, what ``build`` needs of each field, worked out once."""
    plan = _PLANS.get((cls, naming))
    if plan is None:
        hints = type_hints(cls)
        fields = []
        by_key: dict[str, tuple[tuple[int, int], ...]] = {}
        for position, a in enumerate(attrs.fields(cls)):
            meta = field_meta(a)
            name = wire_name(a, naming)
            keys = tuple(dict.fromkeys(norm(k) for k in (a.name, name, *meta.aliases)))
            hint = hints.get(a.name, Any)
            bare, _ = _unwrap_optional(hint)
            dict_list = (get_origin(bare) is list and get_origin(get_args(bare)[0]) is dict
                         and get_args(get_args(bare)[0])[1:] == (Any,))
            fields.append(_FieldPlan(a, meta, name, keys, hint, meta.required,
                                     bare if bare in _EXACT else None, dict_list))
            for rank, key in enumerate(keys):
                by_key[key] = (*by_key.get(key, ()), (position, rank))
        required = tuple(i for i, f in enumerate(fields) if f.always_check)
        plan = _PLANS[(cls, naming)] = _Plan(tuple(fields), by_key, required)
    return plan


def build(cls: type, data: Mapping[str, Any], *, naming: Naming | None = None,
          files: Mapping[str, Any] | None = None) -> Any:
    """Make a DTO instance from input data whose names are matched case-insensitively.

    Raises :class:`ValidationFailed` with every field error found.
    """
    meta = getattr(cls, _META, None)
    naming = naming or (meta.naming if meta else "pascal")
    by_norm: dict[str, Any] = {}
    for key, item in data.items():
        by_norm.setdefault(norm(str(key)), item)
    for key, item in (files or {}).items():
        by_norm[norm(str(key))] = item
    kwargs: dict[str, Any] = {}
    errors: list[FieldError] = []
    plan = _plan(cls, naming)
    # Walk the keys sent (a few) rather than the fields (often dozens): position -> (rank, value),
    # where a field sent under several of its names takes the value of its best-ranked name.
    sent: dict[int, tuple[int, Any]] = {}
    for key, item in by_norm.items():
        for position, rank in plan.by_key.get(key, ()):
            if position not in sent or rank < sent[position][0]:
                sent[position] = (rank, item)
    positions = sorted({*sent, *plan.required})  # field order: errors are listed in it
    for position in positions:
        field_plan = plan.fields[position]
        a, fmeta, name = field_plan.attribute, field_plan.meta, field_plan.name
        raw: Any = sent[position][1] if position in sent else _MISSING
        value: Any = None
        if raw is _MISSING:
            pass
        elif type(raw) is field_plan.exact or (field_plan.dict_list and type(raw) is list
                                                and all(type(item) is dict for item in raw)):
            value = raw  # what coerce() would return, without working out the type again
        else:
            try:
                value = coerce(raw, field_plan.hint, naming)
            except ValidationFailed as nested:
                errors.extend(
                    FieldError(e.error_code, f"{name}.{e.field_name}", e.message) for e in nested.errors
                )
                continue
            except _Invalid as exc:
                text = str(exc).replace("{value}", str(raw)[:100])
                errors.append(FieldError(exc.code, name, f"'{_humanize(name)}' {text}"))
                continue
        problem = _check(a, fmeta, value, name)
        if problem:
            errors.append(problem)
            continue
        if raw is not _MISSING and value is not None:
            kwargs[a.name] = value
    if errors:
        raise ValidationFailed(errors)
    return cls(**kwargs)


# --------------------------------------------------------------------------- output


def xsd_duration(td: dt.timedelta) -> str:
    """``timedelta`` as an XSD duration (``PT12.5S``), as AI Server writes ``TimeSpan``."""
    total = td.total_seconds()
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    out = f"{sign}P"
    if days:
        out += f"{int(days)}D"
    out += "T"
    if hours:
        out += f"{int(hours)}H"
    if minutes:
        out += f"{int(minutes)}M"
    if seconds or out.endswith("T"):
        out += f"{round(seconds, 7):g}S"
    return out


def to_wire(obj: Any, naming: Naming = "camel") -> Any:
    """Plain JSON-ready data: attrs objects in camelCase (or their declared naming), nulls dropped."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if attrs.has(type(obj)):
        cls_naming = getattr(type(obj), "__aiport_naming__", naming)
        out = {}
        for a in attrs.fields(type(obj)):
            value = getattr(obj, a.name)
            if value is None:
                continue
            key = wire_name(a, "snake" if cls_naming == "snake" else "camel")
            out[key] = to_wire(value, naming)
        return out
    if isinstance(obj, Mapping):
        return {k: to_wire(v, naming) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_wire(v, naming) for v in obj]
    if isinstance(obj, dt.datetime):
        if obj.tzinfo is None:
            obj = obj.replace(tzinfo=dt.UTC)
        return obj.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(obj, dt.timedelta):
        return xsd_duration(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    raise TypeError(f"cannot render {type(obj).__name__} as JSON")


def response_model(naming: Naming = "camel") -> Callable[[type], type]:
    """Mark an attrs class as a response body rendered with ``naming`` (default camelCase)."""

    def decorate(cls: type) -> type:
        cls.__aiport_naming__ = naming  # type: ignore[attr-defined]
        return cls

    return decorate
