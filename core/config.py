"""Configuration: one YAML file -> ``${VAR}`` substitution -> cattrs into attrs classes.

Every class here is frozen and has a default for every field, so ``Config()`` is
the embedded default configuration (SQLite, local files, in-process queue).
Problems are reported all at once, each with its key path and a hint::

    providers[2].concurrency: expected an integer, got 'four'
    server.prot: unknown key; did you mean 'port'?
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import attrs
import cattrs
import cattrs.gen
import yaml
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from .errors import ConfigError

MiB = 1024 * 1024


class Secret:
    """A secret string (API key, admin secret). Its ``repr``/``str`` never show the value.

    Use :meth:`reveal` at the one place that sends it (an HTTP header).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def masked(self) -> str:
        """A display form that proves which secret it is without disclosing it."""
        if len(self._value) <= 8:
            return "****"
        return self._value[:3] + "****" + self._value[-2:]

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class ByteSize(int):
    """A size in bytes; YAML may say ``52428800``, ``50MiB``, ``50MB`` or ``512k``."""


class Duration(float):
    """A duration in seconds; YAML may say ``120``, ``1.5``, ``500ms``, ``90s``, ``20m`` or ``1h``."""


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": MiB, "mb": 1000**2, "mib": MiB,
               "g": 1024**3, "gb": 1000**3, "gib": 1024**3}
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


class _FieldValueError(ValueError):
    """A validator's complaint about one field, so the message can name the field's path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _positive(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and value < 1:
        raise _FieldValueError(attribute.name, f"must be at least 1, got {value!r}")


def _non_negative(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and value < 0:
        raise _FieldValueError(attribute.name, f"must be 0 or more, got {value!r}")


def _positive_duration(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and value <= 0:
        raise _FieldValueError(attribute.name, f"must be more than 0, got {value!r}")


def _port(_inst: Any, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 65535:
        raise _FieldValueError(attribute.name, f"must be a TCP port (0-65535), got {value!r}")


@attrs.frozen
class CorsConfig:
    """Cross-origin access for browser apps. Empty ``allow_origins`` sends no CORS headers."""

    allow_origins: list[str] = attrs.field(factory=list)
    allow_headers: list[str] = attrs.field(
        factory=lambda: ["Authorization", "Content-Type", "X-Api-Key", "ReplyTo", "Tag"]
    )
    allow_credentials: bool = False
    max_age: int = attrs.field(default=600, validator=_non_negative)


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = attrs.field(default=5005, validator=_port)
    #: Absolute URL clients reach aiport at; used in ``statusUrl`` and artifact URLs.
    #: When unset, URLs are built from each request's own scheme and host.
    public_base_url: str | None = None
    #: Largest request body aiport accepts, applied even when mounted under a parent app.
    max_upload_size: ByteSize = attrs.field(default=ByteSize(50 * MiB), validator=_positive)
    cors: CorsConfig = attrs.field(factory=CorsConfig)


@attrs.frozen
class StorageConfig:
    #: SQLite database for jobs, keys and providers (relative paths are relative to the config file).
    database_path: str = "data/aiport.db"
    #: Folder of stored artifacts (generated files and uploaded inputs).
    artifacts_path: str = "data/artifacts"
    #: Which job-store plugin keeps jobs (``sqlite`` is built in).
    job_store: str = "sqlite"
    #: Which artifact-store plugin keeps files (``local`` is built in).
    artifact_store: str = "local"


@attrs.frozen
class AuthConfig:
    #: Secret that authorises the admin APIs (Bearer token or ``X-Api-Key``). Unset: admin APIs are closed.
    admin_secret: Secret | None = None
    #: When true, every AI and media API needs a valid API key.
    require_api_keys: bool = False


@attrs.frozen
class ModelMapping:
    """A gateway model id a provider serves, and the provider's own name for it (when different)."""

    model: str
    api_model: str | None = None


@attrs.frozen
class ProviderConfig:
    """One backend instance. ``type`` names the plugin that speaks its wire format.

    Keys other than the common ones below are the plugin's own options; they end
    up in ``options`` and are checked against the plugin's options class.
    """

    name: str
    type: str
    enabled: bool = True
    base_url: str | None = None
    api_key: Secret | None = None
    #: Environment variable holding the API key; a provider naming an unset variable is skipped.
    api_key_env: str | None = None
    #: Header to send the key in instead of ``Authorization: Bearer``.
    api_key_header: str | None = None
    heartbeat_url: str | None = None
    concurrency: int = attrs.field(default=1, validator=_positive)
    priority: int = 0
    #: Share of traffic under the ``weighted`` routing strategy (relative to the others).
    weight: int = attrs.field(default=1, validator=_positive)
    timeout: Duration = attrs.field(default=Duration(180.0), validator=_positive_duration)
    models: list[ModelMapping] = attrs.field(factory=list)
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ModelConfig:
    """A model family added to (or replacing one in) the catalog."""

    id: str
    tags: list[str] = attrs.field(factory=list)
    latest: str | None = None
    vision: bool = False
    description: str = ""


@attrs.frozen
class PluginsConfig:
    #: Extra plugin modules to load by dotted name.
    load: list[str] = attrs.field(factory=list)
    #: Plugin names (built-in, entry point or loaded) to block.
    disable: list[str] = attrs.field(factory=list)


@attrs.frozen
class JobsConfig:
    #: A job running longer than this is cancelled.
    timeout: Duration = attrs.field(default=Duration(1200.0), validator=_positive_duration)
    #: How many times a job that failed with a retryable error is tried again.
    retries: int = attrs.field(default=2, validator=_non_negative)
    #: First retry delay; each further retry doubles it.
    retry_backoff: Duration = attrs.field(default=Duration(2.0), validator=_non_negative)
    #: How long a sync chat call waits for its job before answering with the job reference.
    sync_timeout_chat: Duration = attrs.field(default=Duration(120.0), validator=_positive_duration)
    #: The same for media generation and transforms.
    sync_timeout_media: Duration = attrs.field(default=Duration(300.0), validator=_positive_duration)
    #: How many times a ReplyTo callback is attempted before it is given up.
    callback_attempts: int = attrs.field(default=10, validator=_positive)
    #: Let ReplyTo URLs point at loopback, link-local and private addresses (off: SSRF guard).
    allow_private_callbacks: bool = False
    #: Key for the ``X-Aiport-Signature`` HMAC of callback bodies (default: the admin secret).
    callback_signing_key: Secret | None = None


@attrs.frozen
class RoutingConfig:
    #: How providers that can serve a request are ordered: ``least-busy`` (most free
    #: slots, then priority), ``weighted`` (random by ``weight``), ``latency`` (fastest
    #: recent answers), or one a plugin registers.
    strategy: str = "least-busy"


LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]


@attrs.frozen
class LoggingConfig:
    level: LogLevel = "info"
    #: ``auto``: readable in a terminal, JSON lines otherwise.
    format: LogFormat = "auto"


@attrs.frozen
class MetricsConfig:
    """``GET /metrics`` in the Prometheus text format."""

    enabled: bool = True
    #: Require the admin secret, an ``Admin``-scoped API key or ``token`` to read it.
    require_auth: bool = False
    #: A token only for scrapers (``Authorization: Bearer``); setting it also requires auth.
    token: Secret | None = None


@attrs.frozen
class Config:
    """The whole configuration; ``Config()`` is the embedded default."""

    server: ServerConfig = attrs.field(factory=ServerConfig)
    storage: StorageConfig = attrs.field(factory=StorageConfig)
    auth: AuthConfig = attrs.field(factory=AuthConfig)
    providers: list[ProviderConfig] = attrs.field(factory=list)
    #: Model families added to or replacing the built-in catalog.
    models: list[ModelConfig] = attrs.field(factory=list)
    plugins: PluginsConfig = attrs.field(factory=PluginsConfig)
    routing: RoutingConfig = attrs.field(factory=RoutingConfig)
    jobs: JobsConfig = attrs.field(factory=JobsConfig)
    logging: LoggingConfig = attrs.field(factory=LoggingConfig)
    metrics: MetricsConfig = attrs.field(factory=MetricsConfig)
    #: Folder relative paths are resolved against (the config file's folder). Not a YAML key.
    base_dir: str = attrs.field(default=".", kw_only=True)

    def resolve_path(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p)

    def secrets(self) -> list[str]:
        """Every secret value in this config, for log redaction."""
        found = [s.reveal() for s in (self.auth.admin_secret, self.jobs.callback_signing_key, self.metrics.token)
                 if s]
        found += [p.api_key.reveal() for p in self.providers if p.api_key]
        return found


# --------------------------------------------------------------------------- substitution

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def substitute_env(data: Any, environ: Mapping[str, str], path: str = "") -> tuple[Any, list[str]]:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; ``$$`` is a literal ``$``.

    A value that is one ``${...}`` and comes out empty becomes null, so
    ``admin_secret: ${SECRET:-}`` means "unset" when SECRET is unset.
    Returns the new data and the problems (unset variables without a default).
    """
    problems: list[str] = []

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, str):
            def repl(m: re.Match[str]) -> str:
                if m.group(0) == "$$":
                    return "$"
                name, default = m.group(1), m.group(2)
                value = environ.get(name)
                if value is None or (value == "" and ":-" in m.group(0)):
                    if default is not None:
                        return default
                    problems.append(
                        f"{where or '<root>'}: environment variable {name} is not set; "
                        f"set it, or give a default as ${{{name}:-value}}"
                    )
                    return ""
                return value
            result = _VAR.sub(repl, node)
            if result == "" and node.startswith("${") and _VAR.fullmatch(node):
                return None
            return result
        if isinstance(node, dict):
            return {k: walk(v, _join(where, str(k))) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        return node

    return walk(data, path), problems


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --------------------------------------------------------------------------- structuring


class _ValueProblem(ValueError):
    """A leaf problem with a ready-made message."""


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _structure_int(value: Any, _t: type) -> int:
    if isinstance(value, bool):
        raise _ValueProblem(f"expected an integer, got {_describe(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise _ValueProblem(f"expected an integer, got {_describe(value)}")


def _structure_float(value: Any, _t: type) -> float:
    if isinstance(value, bool):
        raise _ValueProblem(f"expected a number, got {_describe(value)}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise _ValueProblem(f"expected a number, got {_describe(value)}")


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", ""}


def _structure_bool(value: Any, _t: type) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _ValueProblem(f"expected true or false, got {_describe(value)}")


def _structure_str(value: Any, _t: type) -> str:
    if isinstance(value, str):
        return value
    hint = " (quote it in YAML)" if isinstance(value, int | float | bool) else ""
    raise _ValueProblem(f"expected a string, got {_describe(value)}{hint}")


def _structure_secret(value: Any, _t: type) -> Secret:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return Secret(str(value))
    raise _ValueProblem("expected a string")  # never echo a secret


def _structure_bytesize(value: Any, _t: type) -> ByteSize:
    if isinstance(value, int) and not isinstance(value, bool):
        return ByteSize(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return ByteSize(int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]))
    raise _ValueProblem(f"expected a size such as 52428800, 50MiB or 512k, got {_describe(value)}")


def _structure_duration(value: Any, _t: type) -> Duration:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Duration(float(value))
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", value)
        if m and m.group(2) in _DURATION_UNITS:
            return Duration(float(m.group(1)) * _DURATION_UNITS[m.group(2)])
    raise _ValueProblem(f"expected a duration such as 120, 90s, 20m or 1h, got {_describe(value)}")


def _structure_literal(value: Any, t: Any) -> Any:
    choices = get_args(t)
    if value in choices:
        return value
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    allowed = ", ".join(repr(c) for c in choices)
    raise _ValueProblem(f"expected one of {allowed}, got {_describe(value)}")


def _structure_model(value: Any, _t: type) -> ModelMapping:
    if isinstance(value, str):
        return ModelMapping(model=value)
    if isinstance(value, dict):
        unknown = set(value) - {"model", "api_model"}
        if unknown:
            raise _ValueProblem(
                f"unknown key {sorted(unknown)[0]!r} in a model entry; use 'model' and 'api_model'"
            )
        if not isinstance(value.get("model"), str):
            raise _ValueProblem("a model entry needs 'model' (the gateway model id)")
        api_model = value.get("api_model")
        if api_model is not None and not isinstance(api_model, str):
            raise _ValueProblem(f"api_model: expected a string, got {_describe(api_model)}")
        return ModelMapping(model=value["model"], api_model=api_model)
    raise _ValueProblem(
        f"expected a model id or {{model: ..., api_model: ...}}, got {_describe(value)}"
    )


_PROVIDER_FIELDS = {a.name for a in attrs.fields(ProviderConfig)} - {"options"}


def _is_literal(t: Any) -> bool:
    return get_origin(t) is Literal


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(Secret, _structure_secret)
    conv.register_structure_hook(ByteSize, _structure_bytesize)
    conv.register_structure_hook(Duration, _structure_duration)
    conv.register_structure_hook(ModelMapping, _structure_model)
    conv.register_structure_hook_func(_is_literal, _structure_literal)

    default_provider = cattrs.gen.make_dict_structure_fn(
        ProviderConfig, conv, _cattrs_forbid_extra_keys=True
    )

    def structure_provider(value: Any, t: type) -> ProviderConfig:
        if not isinstance(value, dict):
            raise _ValueProblem(f"expected a mapping with name and type, got {_describe(value)}")
        common = {k: v for k, v in value.items() if k in _PROVIDER_FIELDS}
        options = {k: v for k, v in value.items() if k not in _PROVIDER_FIELDS}
        if "options" in value:
            raise _ValueProblem("write provider options as keys of the provider itself, not under 'options'")
        return attrs.evolve(default_provider(common, t), options=options)

    conv.register_structure_hook(ProviderConfig, structure_provider)
    return conv


CONVERTER = _make_converter()


def _problems_from(exc: BaseException, path: str, cls: type | None) -> list[str]:
    """Flatten a cattrs exception tree into ``path: message`` lines."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        problems: list[str] = []
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            if isinstance(note, AttributeValidationNote):
                problems += _problems_from(sub, _join(path, note.name), note.type)
            elif isinstance(note, IterableValidationNote):
                problems += _problems_from(sub, f"{path}[{note.index}]", note.type)
        for sub in without:
            problems += _problems_from(sub, path, getattr(exc, "cl", None))
        return problems
    if isinstance(exc, ForbiddenExtraKeysError):
        valid = sorted(a.name for a in attrs.fields(exc.cl)) if attrs.has(exc.cl) else []
        valid = [v for v in valid if v not in ("base_dir", "options")]
        lines = []
        for key in sorted(exc.extra_fields):
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
            lines.append(f"{_join(path, key)}: unknown key; {hint}")
        return lines
    if isinstance(exc, _FieldValueError):
        return [f"{_join(path, exc.field)}: {exc}"]
    if isinstance(exc, KeyError):
        return [f"{path}: required key is missing"]
    if isinstance(exc, _ValueProblem | ValueError):
        return [f"{path or '<root>'}: {exc}"]
    if isinstance(exc, TypeError) and "missing" in str(exc) and "required" in str(exc):
        names = re.findall(r"'(\w+)'", str(exc))
        return [f"{_join(path, n)}: required key is missing" for n in names] or [f"{path}: {exc}"]
    if isinstance(exc, AttributeError | TypeError):
        want = "a mapping of keys" if cls is None or attrs.has(cls) or cls is dict else cls.__name__
        return [f"{path or '<root>'}: expected {want}"]
    return [f"{path or '<root>'}: {exc}"]


def structure(data: Any, cls: type[Any], path: str = "") -> Any:
    """Structure plain data into ``cls`` with the config converter, raising :class:`ConfigError`."""
    try:
        return CONVERTER.structure(data, cls)
    except Exception as exc:
        raise ConfigError(_problems_from(exc, path, cls)) from None


def parse_config(
    data: Any, *, environ: Mapping[str, str] | None = None, base_dir: str = "."
) -> Config:
    """Turn parsed YAML (or any plain mapping) into a :class:`Config`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["<root>: the config file must be a mapping of sections (server:, providers:, ...)"])
    data, problems = substitute_env(data, os.environ if environ is None else environ)
    if problems:
        raise ConfigError(problems)
    config: Config = structure(data, Config)
    names = [p.name for p in config.providers]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError([f"providers: the name {d!r} is used twice; provider names must be unique" for d in dupes])
    return attrs.evolve(config, base_dir=base_dir)


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, substitute and validate one YAML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read the config file ({exc.strerror})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None
    return parse_config(data, environ=environ, base_dir=str(p.resolve().parent))
