"""What plugins register, and the per-app registry that collects it.

Each registration hook (see :mod:`aiport.core.hookspecs`) hands its ``register``
callback one of the descriptor classes below. :func:`collect` calls every hook
implementation once, with a ``register`` that knows which plugin is calling, so
a duplicate name is reported with both plugins' names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import pluggy
from aiohttp import web

from .errors import PluginError
from .http.dto import api_meta, is_api

if TYPE_CHECKING:
    from .config import Config


@attrs.frozen
class ProviderContext:
    """What a provider factory gets to build one configured provider instance."""

    #: The provider's own section of the config (name, base_url, api_key, models, ...).
    provider: Any
    #: The provider's extra keys, structured into the type's ``options`` class (or a dict).
    options: Any
    #: The app's shared HTTP client session.
    http: Any
    #: The whole app config.
    config: Config
    #: Everything the app's plugins registered (e.g. workflows for a ComfyUI provider).
    registry: Any = None


@attrs.frozen
class ChatProviderType:
    """A chat wire format. ``factory(ctx)`` returns an object with the methods of
    :class:`aiport.core.interfaces.ChatProvider`."""

    name: str
    factory: Callable[[ProviderContext], Any]
    #: attrs class for the type's own config keys (``None``: the type takes none).
    options: type | None = None
    description: str = ""
    default_base_url: str | None = None
    #: Catalog data: gateway model id -> this type's model id.
    api_models: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class ModelSpec:
    """A model family of the catalog: gateway ids are ``name`` or ``name:tag``."""

    name: str
    tags: tuple[str, ...] = ()
    #: The tag a bare ``name`` (or ``name:latest``) means.
    latest: str | None = None
    vision: bool = False
    description: str = ""


@attrs.frozen
class MediaProviderType:
    """A media-generation backend type; ``factory(ctx)`` returns a
    :class:`aiport.core.media.MediaProvider`."""

    name: str
    factory: Callable[[ProviderContext], Any]
    tasks: frozenset[str] = frozenset()
    options: type | None = None
    description: str = ""
    default_base_url: str | None = None
    #: Catalog data: gateway model id -> this type's model name.
    api_models: Mapping[str, str] = attrs.field(factory=dict)
    #: Catalog data: gateway model id -> the task it performs (``TextToImage``...).
    model_tasks: Mapping[str, str] = attrs.field(factory=dict)
    #: Run one instance of this type (named after it, default options) when the config
    #: has none: for local backends that need no URL or key (espeak-ng speech).
    implicit_instance: bool = False


@attrs.frozen
class WorkflowSpec:
    """An API-format ComfyUI workflow template with ``{{placeholder}}`` values."""

    name: str
    task: str
    template: Mapping[str, Any]
    description: str = ""
    #: Default values for the template's placeholders.
    defaults: Mapping[str, Any] = attrs.field(factory=dict)


def _attrs_class_or_none(_spec: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not (isinstance(value, type) and attrs.has(value)):
        raise TypeError(f"TransformSpec.{attribute.name} must be an attrs class, got {value!r}")


def _upload_names(value: Any) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or not all(isinstance(n, str) and n.isidentifier() and n.islower() for n in names):
        raise TypeError(f"TransformSpec.uploads must name one or more snake_case upload fields, got {value!r}")
    return names


@attrs.frozen
class TransformSpec:
    """One media operation, served by core as ``/api/{name}`` (sync) and ``/api/Queue{name}``.

    ``run`` is the async callable that performs it (see :data:`aiport.core.media.Transform`);
    it reads its arguments with ``request.parse(fields)``. The request DTO is built from
    ``fields`` and ``uploads``; core adds the job fields (``RefId``, ``Tag``, ``ReplyTo``).
    A transform of one image and no arguments needs only ``name``, ``kind="image"`` and ``run``.
    """

    name: str
    #: What it works on (``image``, ``video``, ``audio``): its job queue is ``local-{kind}``.
    kind: str
    run: Callable[..., Awaitable[Any]]
    description: str = ""
    #: The request's own fields: an attrs class whose attributes are declared with
    #: :func:`aiport.core.http.dto.field` (limits, ``required``, descriptions; ``Literal``
    #: types for choices). ``None``: the transform takes no arguments.
    fields: type | None = attrs.field(default=None, validator=_attrs_class_or_none)
    #: The upload fields, in order (default: one named after ``kind``). With several, files
    #: sent under other names fill them by position, as AI Server's WatermarkImage does.
    uploads: tuple[str, ...] = attrs.field(
        default=attrs.Factory(lambda spec: (spec.kind,), takes_self=True), converter=_upload_names)
    #: The API's one-line summary in the OpenAPI document (default: ``description``).
    summary: str = ""


@attrs.frozen
class ArtifactStoreType:
    """``factory(config)`` returns an :class:`aiport.core.interfaces.ArtifactStore`."""

    name: str
    factory: Callable[[Config], Any]
    description: str = ""


@attrs.frozen
class JobStoreType:
    """``factory(config)`` returns an :class:`aiport.core.jobs.store.JobStore`."""

    name: str
    factory: Callable[..., Any]
    description: str = ""


@attrs.frozen
class CallbackStrategyType:
    """How results reach a ``ReplyTo``. ``accepts(reply_to)`` says whether it handles
    that target; ``factory(config, http)`` returns an object with ``async deliver(...)``."""

    name: str
    accepts: Callable[[str], bool]
    factory: Callable[..., Any]
    description: str = ""


@attrs.frozen
class RouteSpec:
    """An extra route: a plain aiohttp handler at ``method`` ``path`` (relative to the aiport
    app), or, with ``dto``, an API served as the DTO declares (``/api/{Name}`` plus its
    routes and verbs; ``method`` and ``path`` are then left empty)."""

    handler: Callable[..., Awaitable[Any]]
    method: str = ""
    path: str = ""
    #: A request DTO class (see :mod:`aiport.core.http.dto`); the handler then gets ``(request, dto)``.
    dto: type | None = None
    summary: str = ""

    def key(self) -> str:
        if self.dto is not None:
            return f"API {api_meta(self.dto).name}"
        return f"{self.method.upper()} {self.path}"


@attrs.frozen
class RoutingStrategySpec:
    """A routing strategy: ``factory(config)`` returns ``order(candidates) -> candidates``,
    where candidates are :class:`aiport.core.execution.routing.RuntimeProvider` objects."""

    name: str
    factory: Callable[[Config], Callable[[list[Any]], list[Any]]]
    description: str = ""


@attrs.frozen
class ResourceSpec:
    """A plugin resource with start-up and shut-down: an aiohttp ``cleanup_ctx`` generator."""

    name: str
    context: Callable[[web.Application], AsyncIterator[None]]


T = TypeVar("T")


class Kind(Generic[T]):
    """The registrations of one kind, by name, remembering which plugin made each."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.items: dict[str, T] = {}
        self.owners: dict[str, str] = {}

    def add(self, item: T, owner: str) -> None:
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {owner!r} registered a {self.label} without a name: {item!r}")
        if name in self.items:
            raise PluginError(
                f"{self.label} {name!r} is registered twice: by plugin {self.owners[name]!r} "
                f"and by plugin {owner!r}; disable one of them with plugins.disable"
            )
        self.items[name] = item
        self.owners[name] = owner

    def __getitem__(self, name: str) -> T:
        return self.items[name]

    def __contains__(self, name: object) -> bool:
        return name in self.items

    def __iter__(self) -> Any:
        return iter(self.items.values())

    def __len__(self) -> int:
        return len(self.items)

    def names(self) -> list[str]:
        return sorted(self.items)


@attrs.define
class Registry:
    """Everything the app's plugins registered. One per app instance."""

    chat_providers: Kind[ChatProviderType] = attrs.field(factory=lambda: Kind("chat provider type"))
    media_providers: Kind[MediaProviderType] = attrs.field(factory=lambda: Kind("media provider type"))
    models: Kind[ModelSpec] = attrs.field(factory=lambda: Kind("model family"))
    workflows: Kind[WorkflowSpec] = attrs.field(factory=lambda: Kind("workflow"))
    transforms: Kind[TransformSpec] = attrs.field(factory=lambda: Kind("transform"))
    artifact_stores: Kind[ArtifactStoreType] = attrs.field(factory=lambda: Kind("artifact store type"))
    job_stores: Kind[JobStoreType] = attrs.field(factory=lambda: Kind("job store type"))
    callback_strategies: Kind[CallbackStrategyType] = attrs.field(
        factory=lambda: Kind("callback strategy")
    )
    routes: list[tuple[RouteSpec, str]] = attrs.field(factory=list)
    resources: Kind[ResourceSpec] = attrs.field(factory=lambda: Kind("resource"))
    routing_strategies: Kind[RoutingStrategySpec] = attrs.field(factory=lambda: Kind("routing strategy"))


_KIND_BY_HOOK = {
    "register_chat_providers": ("chat_providers", ChatProviderType),
    "register_media_providers": ("media_providers", MediaProviderType),
    "register_models": ("models", ModelSpec),
    "register_workflows": ("workflows", WorkflowSpec),
    "register_transforms": ("transforms", TransformSpec),
    "register_artifact_stores": ("artifact_stores", ArtifactStoreType),
    "register_job_stores": ("job_stores", JobStoreType),
    "register_callback_strategies": ("callback_strategies", CallbackStrategyType),
    "register_resources": ("resources", ResourceSpec),
    "register_routing_strategies": ("routing_strategies", RoutingStrategySpec),
}


def collect(pm: pluggy.PluginManager, config: Config) -> Registry:
    """Call every registration hook of every plugin and gather what they register."""
    registry = Registry()
    for hook_name, (attr, expected) in _KIND_BY_HOOK.items():
        kind: Kind[Any] = getattr(registry, attr)
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            owner = impl.plugin_name

            def register(item: Any, _owner: str = owner, _kind: Kind[Any] = kind,
                         _expected: type = expected, _hook: str = hook_name) -> None:
                if not isinstance(item, _expected):
                    raise PluginError(
                        f"plugin {_owner!r} passed {item!r} to {_hook}'s register; "
                        f"it takes a {_expected.__name__}"
                    )
                _kind.add(item, _owner)

            _call_impl(impl, register=register, config=config)

    seen: dict[str, str] = {}
    for impl in pm.hook.register_routes.get_hookimpls():
        owner = impl.plugin_name

        def register_route(route: Any, _owner: str = owner) -> None:
            if not isinstance(route, RouteSpec):
                raise PluginError(f"plugin {_owner!r} passed {route!r} to register_routes; it takes a RouteSpec")
            if route.dto is None and not (route.method and route.path.startswith("/")):
                raise PluginError(f"plugin {_owner!r}: a RouteSpec without a dto needs a method and a path "
                                  f"starting with '/', got {route.method!r} {route.path!r}")
            if route.dto is not None and not is_api(route.dto):
                raise PluginError(f"plugin {_owner!r}: RouteSpec.dto {route.dto!r} is not declared with @api")
            key = route.key()
            if key in seen:
                raise PluginError(
                    f"route {key} is registered twice: by plugin {seen[key]!r} and by plugin {_owner!r}"
                )
            seen[key] = _owner
            registry.routes.append((route, _owner))

        _call_impl(impl, register=register_route, config=config)
    return registry


def _call_impl(impl: pluggy.HookImpl, **kwargs: Any) -> None:
    try:
        result = impl.function(*[kwargs[name] for name in impl.argnames])
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"plugin {impl.plugin_name!r} failed in {impl.function.__name__}: {exc!r}") from exc
    if result is not None:
        raise PluginError(
            f"plugin {impl.plugin_name!r}: {impl.function.__name__} returned {result!r}; "
            "registration hooks return nothing and call register() instead"
        )
