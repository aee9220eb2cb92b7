"""A provider's options: the keys of its ``providers:`` entry beyond the common ones, as an attrs instance."""

from __future__ import annotations

from typing import TypeVar

import attrs

from ..config import structure
from ..registry import ProviderContext

__all__ = ["HttpOptions", "options_of"]

T = TypeVar("T")


@attrs.frozen
class HttpOptions:
    """Options every :class:`~.http.HttpProvider` type accepts; a type's own options class extends it."""

    #: Extra headers sent with every request (e.g. OpenRouter's ``HTTP-Referer`` and ``X-Title``).
    extra_headers: dict[str, str] = attrs.field(factory=dict)


def options_of(ctx: ProviderContext, cls: type[T]) -> T:
    """The provider's options as an instance of ``cls``.

    Core structures them already; a plain dict (or ``None``) is accepted too, so a
    provider built by hand, in a test or a script, gets the same validation and
    the same error messages (with the ``providers[name]`` path).
    """
    if isinstance(ctx.options, cls):
        return ctx.options
    result: T = structure(dict(ctx.options or {}), cls, f"providers[{ctx.provider.name}]")
    return result
