"""The gateway's model catalog: model ids like AI Server's (``llama3.1:70b``), families and tags.

``qualify`` turns what a client asks for into the one id providers are matched on:
``llama3.1`` and ``llama3.1:latest`` mean the family's latest tag; a tag the family
does not list is a 404 naming the tags it has. Ids outside the catalog pass
unchanged (custom models a provider lists exactly).
"""

from __future__ import annotations

from collections.abc import Iterable

from .config import ModelConfig
from .errors import NotFound
from .registry import ModelSpec


class ModelCatalog:
    def __init__(self, specs: Iterable[ModelSpec], overrides: Iterable[ModelConfig] = ()) -> None:
        self.families: dict[str, ModelSpec] = {s.name: s for s in specs}
        for o in overrides:
            self.families[o.id] = ModelSpec(name=o.id, tags=tuple(o.tags), latest=o.latest, vision=o.vision,
                                            description=o.description)

    def qualify(self, model: str, *, strict: bool = True) -> str:
        family, _, tag = model.strip().partition(":")
        spec = self.families.get(family)
        if spec is None:
            return model.strip()
        if tag in ("", "latest"):
            return f"{family}:{spec.latest}" if spec.latest else family
        if spec.tags and tag not in spec.tags:
            if not strict:
                return model.strip()
            raise NotFound(f"Model {model!r} not found: {family} comes as "
                           f"{', '.join(f'{family}:{t}' for t in spec.tags)}.")
        return model.strip()

    def is_vision(self, model: str) -> bool:
        spec = self.families.get(model.partition(":")[0])
        return bool(spec and spec.vision)
