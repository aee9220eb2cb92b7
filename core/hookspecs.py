"""Every hook a plugin can implement.

aiport's plugins are plain modules (or objects) with functions marked
``@aiport.core.hookimpl`` whose names match the specs below. Built-ins are
plugins too (``DEFAULT_PLUGINS`` in :mod:`aiport.core.plugins`); third-party
ones are found through the ``aiport`` entry-point group or named in
``plugins.load`` of the config.

Rules for every hook here:

- Hooks are **sync and do no I/O**. They are called once per app instance, in
  :func:`aiport.core.app.create_app`, before the app runs. Anything that needs
  the network, the disk or the event loop lives on the objects they register
  and runs later (a provider's ``chat``, a resource's async context).
- **Registration hooks** receive a ``register`` callback and call it once per
  thing they contribute. Names are global per kind: registering a name that
  another plugin already registered raises :class:`aiport.core.errors.PluginError`
  naming both plugins.
- Every hook may also take ``config`` (the app's :class:`aiport.core.config.Config`);
  like all pluggy hooks, an implementation may accept only the arguments it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .config import Config
    from .registry import (
        ArtifactStoreType,
        CallbackStrategyType,
        ChatProviderType,
        JobStoreType,
        MediaProviderType,
        ModelSpec,
        ResourceSpec,
        RouteSpec,
        RoutingStrategySpec,
        TransformSpec,
        WorkflowSpec,
    )

PROJECT = "aiport"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_chat_providers(register: Callable[[ChatProviderType], None], config: Config) -> None:
    """Register chat (LLM) provider types: one per wire format.

    :param register: call with a :class:`~aiport.core.registry.ChatProviderType`;
        its ``name`` is what a provider's ``type:`` in the config refers to.
    :param config: the app's configuration.
    :returns: nothing; contributions go through ``register``.

    Called once per app, in ``create_app``, before providers are built.
    """


@hookspec
def register_models(register: Callable[[ModelSpec], None], config: Config) -> None:
    """Register model families for the gateway's model catalog (``llama3.1`` with tags
    ``8b``, ``70b``...; ``gpt-4o`` with none).

    :param register: call with a :class:`~aiport.core.registry.ModelSpec`. A request
        for the bare family (or ``family:latest``) means its ``latest`` tag; a tag the
        family does not list is a 404. The ``models:`` section of the config adds
        families or replaces registered ones.
    :param config: the app's configuration.
    :returns: nothing.

    Called once per app, in ``create_app``. Ship the catalog as data in your package.
    """


@hookspec
def register_media_providers(register: Callable[[MediaProviderType], None], config: Config) -> None:
    """Register media-generation provider types (ComfyUI, Replicate, OpenAI media, local speech).

    :param register: call with a :class:`~aiport.core.registry.MediaProviderType`
        naming the tasks it can run (``TextToImage``, ``SpeechToText``, ...).
    :param config: the app's configuration.
    :returns: nothing.

    Called once per app, in ``create_app``.
    """


@hookspec
def register_workflows(register: Callable[[WorkflowSpec], None], config: Config) -> None:
    """Register ComfyUI workflow templates (API-format JSON with placeholders).

    :param register: call with a :class:`~aiport.core.registry.WorkflowSpec`;
        its ``name`` is unique and its ``task`` says which API it serves.
    :param config: the app's configuration.
    :returns: nothing.

    Called once per app, in ``create_app``. Templates are data: load them from
    package files here (reading your own package data is not I/O in the sense
    of this rule, it happens once at start-up), never from the network.
    """


@hookspec
def register_transforms(register: Callable[[TransformSpec], None], config: Config) -> None:
    """Register media transforms (ImageMagick, FFmpeg, ...), one per operation.

    :param register: call with a :class:`~aiport.core.registry.TransformSpec`;
        its ``name`` is the API it implements (``ScaleImage``, ``TrimVideo``).
    :param config: the app's configuration.
    :returns: nothing.

    Called once per app, in ``create_app``. The transform itself runs later, off
    the event loop.
    """


@hookspec
def register_artifact_stores(register: Callable[[ArtifactStoreType], None], config: Config) -> None:
    """Register artifact-store types (where generated files and uploads are kept).

    :param register: call with an :class:`~aiport.core.registry.ArtifactStoreType`;
        ``storage.artifact_store`` in the config picks one by name.
    :param config: the app's configuration.
    :returns: nothing.

    Called once per app, in ``create_app``.
    """


@hookspec
def register_job_stores(register: Callable[[JobStoreType], None], config: Config) -> None:
    """Register job-store types (the durable queue and history of requests).

    :param register: call with a :class:`~aiport.core.registry.JobStoreType`;
        ``storage.job_store`` in the config picks one by name.
    :param config: the app's configuration.
    :returns: nothing.

    Called once per app, in ``create_app``.
    """


@hookspec
def register_callback_strategies(register: Callable[[CallbackStrategyType], None], config: Config) -> None:
    """Register callback strategies: how a finished job is delivered to its ``ReplyTo``.

    :param register: call with a :class:`~aiport.core.registry.CallbackStrategyType`;
        the first strategy whose ``accepts(reply_to)`` is true delivers the result.
    :param config: the app's configuration.
    :returns: nothing.

    Called once per app, in ``create_app``.
    """


@hookspec
def register_routing_strategies(register: Callable[[RoutingStrategySpec], None], config: Config) -> None:
    """Register routing strategies: how the providers able to serve a request are ordered.

    :param register: call with a :class:`~aiport.core.registry.RoutingStrategySpec`
        whose ``factory(config)`` returns ``order(candidates) -> candidates`` (best
        first); ``routing.strategy`` in the config picks one by name. Failover walks
        the order.
    :param config: the app's configuration.
    :returns: nothing.

    Called once per app, in ``create_app``. ``order`` runs on every request: keep it
    O(n) in the number of candidates and free of I/O.
    """


@hookspec
def register_routes(register: Callable[[RouteSpec], None], config: Config) -> None:
    """Register extra HTTP routes on the aiport app.

    :param register: call with a :class:`~aiport.core.registry.RouteSpec`. With a
        ``dto`` the handler receives the parsed request DTO and its route is
        documented in ``/openapi.json`` from the DTO; without one it is a plain
        aiohttp handler (still listed).
    :param config: the app's configuration.
    :returns: nothing.

    Called once per app, in ``create_app``. Paths are relative to the aiport app,
    so they work unchanged when aiport is mounted under a prefix.
    """


@hookspec
def register_resources(register: Callable[[ResourceSpec], None], config: Config) -> None:
    """Register start-up/shut-down work for a plugin's resources.

    :param register: call with a :class:`~aiport.core.registry.ResourceSpec`
        whose ``context`` is an async generator function taking the app: code
        before its ``yield`` runs at start-up, code after it at shut-down (an
        aiohttp ``cleanup_ctx``).
    :param config: the app's configuration.
    :returns: nothing.

    Called once per app, in ``create_app``; the contexts run when the app starts,
    after aiport's own resources (HTTP client, stores) are ready.
    """
