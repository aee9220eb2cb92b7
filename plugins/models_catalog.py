"""The built-in model catalog: families, their tags and latest tag, shipped as data."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources

from aiport.core.hookspecs import hookimpl
from aiport.core.registry import ModelSpec


@hookimpl
def register_models(register: Callable[[ModelSpec], None]) -> None:
    data = json.loads(resources.files("aiport.plugins").joinpath("data/ai-models.json").read_text())
    for item in data:
        register(ModelSpec(name=item["id"], tags=tuple(item["tags"]), latest=item["latest"],
                           vision=item["vision"], description=item["description"]))
