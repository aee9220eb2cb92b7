"""ComfyUI workflow templates: loading, choosing, filling in and checking them. No network here.

A workflow is ComfyUI's **API format** (what "Export (API)" writes): a mapping of
node id -> ``{"class_type": ..., "inputs": {...}}`` where a link is
``[source_node_id, output_index]``. aiport's templates add two things:

- **placeholders**: a JSON string that is exactly ``"{{name}}"`` is replaced by
  the variable's value *keeping its JSON type* (``"{{steps}}"`` with ``steps=4``
  becomes the number ``4``); ``{{name}}`` inside a longer string is plain string
  interpolation (``"aiport/{{workflow}}"``). Nothing is evaluated and no JSON is
  built from strings, so a prompt containing quotes or braces cannot change the
  graph. A variable that is needed but has no value is an error naming it.
- an optional top-level ``"_meta"`` object, never sent to ComfyUI::

      "_meta": {"task": "TextToImage", "description": "...",
                "defaults": {"steps": 20, ...},          # placeholder defaults
                "models": ["flux1-schnell*", "*flux*"]}  # models (fnmatch patterns) it serves

The built-in templates ship as package data in ``data/comfyui/workflows/`` and are
registered by :mod:`.media_comfyui` through ``register_workflows``; a provider's
``workflows_dir`` adds or overrides them by file name (see
:func:`load_workflows_dir`). Variables are snake_case (``positive_prompt``,
``cfg_scale``, ``batch_size``), each also available in AI Server's camelCase
(``positivePrompt``) so its templates port over unchanged.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
from aiport.core.errors import ConfigError
from aiport.core.media import (
    GENERATION_TASKS,
    IMAGE_TO_IMAGE,
    IMAGE_TO_TEXT,
    IMAGE_UPSCALE,
    IMAGE_WITH_MASK,
    SPEECH_TO_TEXT,
    TEXT_TO_IMAGE,
    TEXT_TO_SPEECH,
    GenerationTask,
)
from aiport.core.registry import WorkflowSpec

META_KEY = "_meta"

#: The workflow each task uses when neither the model nor the config names one.
TASK_WORKFLOWS: Mapping[str, str] = {
    TEXT_TO_IMAGE: "text-to-image",
    IMAGE_TO_IMAGE: "image-to-image",
    IMAGE_UPSCALE: "image-upscale",
    IMAGE_WITH_MASK: "image-with-mask",
    IMAGE_TO_TEXT: "image-to-text",
    TEXT_TO_SPEECH: "text-to-speech",
    SPEECH_TO_TEXT: "speech-to-text",
}

#: Which upload field each file placeholder takes.
FILE_VARIABLES = ("image", "mask", "audio")

#: Variables coerced to whole numbers / numbers before they go into a template,
#: so a ``"4"`` from a form post still arrives at ComfyUI as the number 4.
INT_VARIABLES = frozenset({"width", "height", "batch_size", "steps", "seed"})
FLOAT_VARIABLES = frozenset({"cfg_scale", "denoise"})

#: Largest random seed: below 2**53 so the number survives JavaScript clients unchanged.
MAX_RANDOM_SEED = 2**50

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

_DATA = "data/comfyui"


class WorkflowError(ValueError):
    """A template cannot be used as asked: a missing variable, an unknown workflow, a bad value."""


# --------------------------------------------------------------------------- the model catalog


@attrs.frozen
class CatalogModel:
    """One gateway model id the ``comfyui`` type serves, from ``data/comfyui/models.json``."""

    id: str
    task: str
    #: ComfyUI's name for it: a checkpoint file, an upscale model, ``quality:voice`` for Piper...
    api_model: str
    description: str = ""
    #: The workflow it needs when not its task's default one.
    workflow: str | None = None
    #: Placeholder values it needs (a Lightning checkpoint wants 4 steps and a low cfg).
    vars: Mapping[str, Any] = attrs.field(factory=dict)


@functools.cache
def catalog() -> tuple[CatalogModel, ...]:
    """The shipped model catalog (read once)."""
    raw = json.loads(resources.files("aiport.plugins").joinpath(f"{_DATA}/models.json").read_text("utf-8"))
    return tuple(CatalogModel(id=m["id"], task=m["task"], api_model=m["api_model"],
                              description=m.get("description", ""), workflow=m.get("workflow"),
                              vars=dict(m.get("vars") or {})) for m in raw)


def api_models() -> dict[str, str]:
    """Gateway model id -> ComfyUI model name."""
    return {m.id: m.api_model for m in catalog()}


def model_tasks() -> dict[str, str]:
    """Gateway model id -> the task it performs."""
    return {m.id: m.task for m in catalog()}


def model_entry(task: str, api_model: str) -> CatalogModel | None:
    """The catalog entry for a ComfyUI model name used for ``task`` (any task as a fallback)."""
    found = [m for m in catalog() if m.api_model == api_model]
    return next((m for m in found if m.task == task), found[0] if found else None)


# --------------------------------------------------------------------------- loading templates


def _check_nodes(nodes: Mapping[str, Any], where: str) -> None:
    if "nodes" in nodes and "links" in nodes:
        raise WorkflowError(f"{where}: this is ComfyUI's UI format (nodes/links); "
                            "save the workflow with 'Export (API)' instead")
    if not nodes:
        raise WorkflowError(f"{where}: the workflow has no nodes")
    for node_id, node in nodes.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise WorkflowError(f"{where}: node {node_id!r} needs a 'class_type' string")
        if not isinstance(node.get("inputs", {}), dict):
            raise WorkflowError(f"{where}: node {node_id!r} 'inputs' must be an object")


def workflow_from_json(name: str, data: Any, *, where: str, base: WorkflowSpec | None = None,
                       sidecar: Mapping[str, Any] | None = None) -> WorkflowSpec:
    """A :class:`WorkflowSpec` from a parsed template file.

    The task comes from the file's ``_meta.task``, else from ``sidecar``'s, else from
    ``base`` (the registered workflow of the same name it overrides); ``defaults``
    likewise, so an exported workflow dropped in under a built-in's name keeps the
    built-in's task and defaults.
    """
    if not isinstance(data, dict):
        raise WorkflowError(f"{where}: a workflow must be a JSON object of nodes")
    meta = dict(sidecar or {})
    if isinstance(data.get(META_KEY), dict):
        meta.update(data[META_KEY])
    nodes = {k: v for k, v in data.items() if k != META_KEY}
    _check_nodes(nodes, where)
    task = meta.get("task") or (base.task if base else None)
    if task not in GENERATION_TASKS:
        hint = f"got {task!r}" if task else f"add \"{META_KEY}\": {{\"task\": ...}} or a {name}.meta.json sidecar"
        raise WorkflowError(f"{where}: the workflow's task must be one of {', '.join(GENERATION_TASKS)}; {hint}")
    defaults = meta.get("defaults")
    if defaults is None:
        defaults = dict(base.defaults) if base else {}
    if not isinstance(defaults, dict):
        raise WorkflowError(f"{where}: {META_KEY}.defaults must be an object")
    models = meta.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise WorkflowError(f"{where}: {META_KEY}.models must be a list of model names or patterns")
    template = {META_KEY: {"task": task, "models": models}, **nodes}
    return WorkflowSpec(name=name, task=task, template=template, defaults=defaults,
                        description=str(meta.get("description") or (base.description if base else "")))


@functools.cache
def builtin_workflows() -> tuple[WorkflowSpec, ...]:
    """The templates shipped in ``data/comfyui/workflows`` (read once)."""
    folder = resources.files("aiport.plugins").joinpath(f"{_DATA}/workflows")
    specs = []
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".json"):
            name = item.name.removesuffix(".json")
            specs.append(workflow_from_json(name, json.loads(item.read_text("utf-8")), where=f"workflow {name}"))
    return tuple(specs)


def load_workflows_dir(folder: Path, known: Mapping[str, WorkflowSpec], *, label: str = "workflows_dir"
                       ) -> list[WorkflowSpec]:
    """Every ``*.json`` template in ``folder``; its name is the file stem.

    ``NAME.meta.json`` files are sidecars holding the ``_meta`` object of ``NAME.json``
    (for files exported from ComfyUI as they are). Problems raise one
    :class:`~aiport.core.errors.ConfigError` listing every bad file.
    """
    if not folder.is_dir():
        raise ConfigError([f"{label}: {folder} is not a folder"])
    problems: list[str] = []
    specs: list[WorkflowSpec] = []
    for path in sorted(folder.glob("*.json")):
        if path.name.endswith(".meta.json"):
            continue
        name = path.stem
        sidecar_path = path.with_name(f"{name}.meta.json")
        try:
            data = json.loads(path.read_text("utf-8"))
            sidecar = json.loads(sidecar_path.read_text("utf-8")) if sidecar_path.exists() else None
            if sidecar is not None and not isinstance(sidecar, dict):
                raise WorkflowError(f"{sidecar_path}: a sidecar must be a JSON object")
            specs.append(workflow_from_json(name, data, where=str(path), base=known.get(name), sidecar=sidecar))
        except (OSError, ValueError) as exc:  # JSONDecodeError and WorkflowError are ValueErrors
            problems.append(f"{label}: {exc}" if isinstance(exc, WorkflowError) else f"{label}: {path}: {exc}")
    if problems:
        raise ConfigError(problems)
    return specs


# --------------------------------------------------------------------------- placeholders


def nodes_of(template: Mapping[str, Any]) -> dict[str, Any]:
    """The template's nodes, without its ``_meta``."""
    return {k: v for k, v in template.items() if k != META_KEY}


def placeholders(template: Mapping[str, Any]) -> set[str]:
    """Every variable name the template's nodes use."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, str):
            found.update(_PLACEHOLDER.findall(node))
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(nodes_of(template))
    return found


def render(template: Mapping[str, Any], variables: Mapping[str, Any], *, workflow: str = "") -> dict[str, Any]:
    """The template's nodes with every placeholder filled in (a new object; the template is not changed).

    Raises :class:`WorkflowError` naming every variable that is needed but unset
    (``None`` counts as unset).
    """
    missing: set[str] = set()

    def value_of(name: str) -> Any:
        value = variables.get(name)
        if value is None:
            missing.add(name)
        return value

    def fill(text: str) -> Any:
        whole = _PLACEHOLDER.fullmatch(text)
        if whole:
            return copy.deepcopy(value_of(whole.group(1)))

        def interpolate(m: re.Match[str]) -> str:
            value = value_of(m.group(1))
            return value if isinstance(value, str) else json.dumps(value)

        return _PLACEHOLDER.sub(interpolate, text)

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return fill(node)
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result = walk(nodes_of(template))
    if missing:
        names = ", ".join(sorted(missing))
        files = sorted(missing & set(FILE_VARIABLES))
        hint = f" (upload a file in the {', '.join(repr(f) for f in files)} field)" if files else ""
        raise WorkflowError(f"workflow {workflow!r} needs a value for {names}{hint}")
    return result


# --------------------------------------------------------------------------- choosing a workflow


def _models_of(spec: WorkflowSpec) -> list[str]:
    meta = spec.template.get(META_KEY)
    return list(meta.get("models") or []) if isinstance(meta, dict) else []


def select_workflow(workflows: Mapping[str, WorkflowSpec], task: str, model: str, *,
                    model_workflows: Mapping[str, str] | None = None,
                    default_workflows: Mapping[str, str] | None = None) -> WorkflowSpec:
    """The workflow that runs ``task`` with ComfyUI model ``model``.

    In order: the provider's ``model_workflows[model]``; the catalog's workflow for
    the model; a workflow whose ``_meta.models`` lists the model (exact names
    before fnmatch patterns); the provider's ``default_workflows[task]``; the
    task's built-in default (:data:`TASK_WORKFLOWS`); any workflow for the task.
    """

    def named(name: str, why: str) -> WorkflowSpec:
        spec = workflows.get(name)
        if spec is None:
            raise WorkflowError(f"{why} names the workflow {name!r}, which does not exist; "
                                f"known: {', '.join(sorted(workflows)) or 'none'}")
        if spec.task != task:
            raise WorkflowError(f"{why} names the workflow {name!r}, which runs {spec.task}, not {task}")
        return spec

    if model_workflows and model in model_workflows:
        return named(model_workflows[model], f"model_workflows[{model!r}]")
    entry = model_entry(task, model)
    if entry is not None and entry.workflow and entry.workflow in workflows \
            and workflows[entry.workflow].task == task:
        return workflows[entry.workflow]
    candidates = sorted((s for s in workflows.values() if s.task == task), key=lambda s: s.name)
    for spec in candidates:
        if model in _models_of(spec):
            return spec
    for spec in candidates:
        if any(fnmatch.fnmatchcase(model, pattern) for pattern in _models_of(spec)):
            return spec
    if default_workflows and task in default_workflows:
        return named(default_workflows[task], f"default_workflows[{task!r}]")
    default = workflows.get(TASK_WORKFLOWS.get(task, ""))
    if default is not None and default.task == task:
        return default
    if candidates:
        return candidates[0]
    raise WorkflowError(f"no ComfyUI workflow runs {task}")


# --------------------------------------------------------------------------- variables


def snake(name: str) -> str:
    """``positivePrompt`` -> ``positive_prompt``; snake_case stays as it is."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def camel(name: str) -> str:
    """``positive_prompt`` -> ``positivePrompt``."""
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def random_seed() -> int:
    """A fresh seed (never 0: some nodes, e.g. Florence2Run, take 1 as their minimum)."""
    return secrets.randbelow(MAX_RANDOM_SEED) + 1


def _coerce(name: str, value: Any) -> Any:
    if isinstance(value, bool):
        raise WorkflowError(f"{name} must be a number, got {value!r}")
    if name in INT_VARIABLES:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            return int(value)
        if not isinstance(value, int):
            raise WorkflowError(f"{name} must be a whole number, got {value!r}")
    elif name in FLOAT_VARIABLES:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise WorkflowError(f"{name} must be a number, got {value!r}") from None
    return value


def build_variables(task: GenerationTask, spec: WorkflowSpec, *, files: Mapping[str, str] | None = None,
                    extra: Iterable[tuple[str, Any]] = ()) -> dict[str, Any]:
    """The placeholder values for running ``task`` with ``spec``.

    Lowest to highest precedence: the workflow's ``defaults``; the catalog's
    ``vars`` for the model; the request's non-empty ``args``; then what is
    computed here, as AI Server does it: ``model`` (ComfyUI's name), a random
    ``seed`` for 0/unset, ``batch_size`` 0 -> 1, a TextToImage negative prompt
    keeps the default one appended, a Piper model ``quality:voice`` splits into
    ``quality`` and ``voice``; ``files`` are the uploaded inputs' ComfyUI names.
    Every name is also offered in camelCase.
    """
    values: dict[str, Any] = dict(spec.defaults)
    entry = model_entry(task.task, task.model)
    if entry is not None:
        values.update(entry.vars)
    default_negative = values.get("negative_prompt")
    given: dict[str, Any] = {}
    for key, value in task.args.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        given[snake(str(key))] = value
    given.pop("model", None)  # the request's model is the gateway id; ComfyUI's name is task.model
    values.update(given)
    values.update(dict(extra))

    values["model"] = task.model
    values["workflow"] = spec.name
    values["task"] = task.task
    if not values.get("seed"):
        values["seed"] = random_seed()
    if not values.get("batch_size"):
        values["batch_size"] = 1
    if (task.task == TEXT_TO_IMAGE and given.get("negative_prompt") and default_negative
            and default_negative not in given["negative_prompt"]):
        values["negative_prompt"] = f"{given['negative_prompt']}, {default_negative}"
    if task.task == TEXT_TO_SPEECH:
        quality, sep, voice = task.model.partition(":")
        if sep:
            values.setdefault("quality", quality)
            values.setdefault("voice", voice)
        else:
            values.setdefault("voice", task.model)
            values.setdefault("quality", "high")
        if values.get("text") is None:
            values["text"] = given.get("input") or given.get("positive_prompt")
    for name in INT_VARIABLES | FLOAT_VARIABLES:
        if values.get(name) is not None:
            values[name] = _coerce(name, values[name])
    values.update(files or {})
    for name in list(values):
        if "_" in name:
            values.setdefault(camel(name), values[name])
    return values


# --------------------------------------------------------------------------- checking against /object_info

#: Combo inputs whose options are model files (for clearer messages).
_MODEL_INPUTS = re.compile(r"(ckpt|unet|vae|lora|clip|control_net|model|upscale|style_model|gligen)(_name)?$|^model$")


def is_link(value: Any) -> bool:
    """Whether an input value is a link ``[node_id, output_index]``."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def combo_options(spec: Any) -> tuple[list[Any] | None, dict[str, Any]]:
    """An input spec's combo options (``None`` if it is not a combo) and its flags.

    Both shapes: ``[[options...], {flags}]`` and the newer ``["COMBO", {"options": [...]}]``.
    """
    if not isinstance(spec, list | tuple) or not spec:
        return None, {}
    flags = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(spec[0], list):
        return list(spec[0]), flags
    if spec[0] == "COMBO" and isinstance(flags.get("options"), list):
        return list(flags["options"]), flags
    return None, flags


def _preview(options: list[Any], limit: int = 5) -> str:
    shown = ", ".join(repr(o) for o in options[:limit])
    more = f" and {len(options) - limit} more" if len(options) > limit else ""
    return f"[{shown}{more}]" if options else "nothing"


def check_prompt(prompt: Mapping[str, Any], infos: Mapping[str, Any]) -> list[str]:
    """Problems ComfyUI would reject ``prompt`` for, judged from its ``/object_info`` entries.

    ``infos`` maps each class_type used to its object_info entry (``None`` when the
    server does not know the class). Checked: the node class exists, required
    inputs are present, and combo values (model files, samplers...) are among the
    options, except upload combos (``image_upload``...), whose files were just
    uploaded and are not in a cached list.
    """
    problems: list[str] = []
    for node_id, node in prompt.items():
        cls = node.get("class_type")
        info = infos.get(cls)
        if not isinstance(info, dict):
            problems.append(f"node class {cls!r} (node {node_id}) is not installed")
            continue
        declared = info.get("input") or {}
        required = declared.get("required") or {}
        known = {**(declared.get("optional") or {}), **required}
        inputs = node.get("inputs") or {}
        for name in required:
            if name not in inputs:
                problems.append(f"node {node_id} ({cls}) lacks its required input {name!r}")
        for name, value in inputs.items():
            if name not in known or is_link(value):
                continue
            options, flags = combo_options(known[name])
            if options is None or any(k.endswith("_upload") or k == "upload" for k in flags):
                continue
            if value not in options:
                what = "model" if _MODEL_INPUTS.search(name) else "value"
                problems.append(f"{what} {value!r} is not available for node {node_id} ({cls}) input {name!r}; "
                                f"it offers {_preview(options)}")
    return problems
