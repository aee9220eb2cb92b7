"""The OpenAPI 3 document of an app, generated from its DTO declarations and routes."""

from __future__ import annotations

import datetime as dt
import enum
import re
import types
from typing import Any, Literal, Union, get_args, get_origin

import attrs
from aiohttp import web

from .. import state
from .dto import ApiMeta, field_meta, type_hints, wire_name
from .inputs import UploadedFile

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "responseStatus": {
            "type": "object",
            "properties": {
                "errorCode": {"type": "string"},
                "message": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "errorCode": {"type": "string"},
                            "fieldName": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
            "required": ["errorCode", "message"],
        }
    },
    "required": ["responseStatus"],
}


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {"ResponseStatusError": ERROR_SCHEMA}

    def for_type(self, tp: Any, naming: str) -> dict[str, Any]:
        origin = get_origin(tp)
        if origin is Union or origin is types.UnionType:
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) == 1:
                return self.for_type(args[0], naming)
            return {"oneOf": [self.for_type(a, naming) for a in args]}
        if tp is Any or tp is object:
            return {}
        if origin is Literal:
            values = list(get_args(tp))
            return {"type": "string" if all(isinstance(v, str) for v in values) else "integer", "enum": values}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"type": "string", "enum": [m.value for m in tp]}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer", "format": "int64"}
        if tp is float:
            return {"type": "number"}
        if tp is str:
            return {"type": "string"}
        if tp is dt.datetime:
            return {"type": "string", "format": "date-time"}
        if tp is UploadedFile:
            return {"type": "string", "format": "binary"}
        if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
            items = get_args(tp)
            return {"type": "array", "items": self.for_type(items[0], naming) if items else {}}
        if origin is dict or tp is dict:
            args = list(get_args(tp))
            extra = self.for_type(args[1], naming) if len(args) == 2 else {}
            return {"type": "object", "additionalProperties": extra or True}
        if attrs.has(tp):
            return self.ref(tp, naming)
        return {}

    def ref(self, cls: type, naming: str) -> dict[str, Any]:
        name = cls.__name__
        if name not in self.components:
            self.components[name] = {}  # placeholder against recursion
            self.components[name] = self.object_schema(cls, naming)
        return {"$ref": f"#/components/schemas/{name}"}

    def object_schema(self, cls: type, naming: str, *, for_output: bool = False) -> dict[str, Any]:
        hints = type_hints(cls)
        props: dict[str, Any] = {}
        required: list[str] = []
        cls_naming = getattr(cls, "__aiport_naming__", None)
        if cls_naming:
            naming = "snake" if cls_naming == "snake" else "camel"
        for a in attrs.fields(cls):
            meta = field_meta(a)
            name = wire_name(a, naming)  # type: ignore[arg-type]
            schema = dict(self.for_type(hints.get(a.name, Any), naming))
            if meta.description:
                schema["description"] = meta.description
            if meta.gt is not None and "$ref" not in schema:
                schema.update(minimum=meta.gt, exclusiveMinimum=True)  # OpenAPI 3.0 form
            for key, value in (("minimum", meta.ge), ("maximum", meta.le),
                               ("minLength", meta.min_length), ("maxLength", meta.max_length)):
                if value is not None and "$ref" not in schema:
                    if key in ("minLength", "maxLength") and schema.get("type") == "array":
                        key = key.replace("Length", "Items")
                    schema[key] = value
            props[name] = schema
            if meta.required:
                required.append(name)
        out: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            out["required"] = required
        if cls.__doc__:
            out["description"] = cls.__doc__.strip().split("\n\n")[0]
        return out


def _openapi_path(path: str) -> str:
    return re.sub(r"\{([^}:]+):[^}]*\}", r"{\1}", path.replace("{**", "{"))


def _path_params(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{([^}]+)\}", path)
    ]


def _operation(meta: ApiMeta, dto: type, method: str, path: str, schemas: _Schemas) -> dict[str, Any]:
    naming = meta.naming
    op: dict[str, Any] = {
        "operationId": f"{meta.name}_{method.lower()}" if path == f"/api/{meta.name}"
        else re.sub(r"[^A-Za-z0-9]+", "_", f"{meta.name}_{method.lower()}_{path}").strip("_"),
        "summary": meta.summary or meta.name,
        "tags": list(meta.tags) or ["api"],
    }
    params = _path_params(path)
    path_names = {p["name"].lower() for p in params}
    if method in ("GET", "DELETE"):
        obj = schemas.object_schema(dto, naming)
        for name, schema in obj["properties"].items():
            if name.lower() in path_names:
                continue
            params.append({"name": name, "in": "query", "required": name in obj.get("required", []),
                           "schema": schema or {"type": "string"}})
    else:
        body_ref = schemas.ref(dto, naming)
        content: dict[str, Any] = {"application/json": {"schema": body_ref}}
        content["application/x-www-form-urlencoded"] = {"schema": body_ref}
        if meta.uploads:
            content["multipart/form-data"] = {"schema": body_ref}
        op["requestBody"] = {"required": True, "content": content}
    if params:
        op["parameters"] = params
    ok: dict[str, Any] = {"description": "Success"}
    if meta.response is not None and attrs.has(meta.response):
        ok["content"] = {"application/json": {"schema": schemas.ref(meta.response, "camel")}}
    else:
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    op["responses"] = {"200": ok}
    error = {"description": "Error", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ResponseStatusError"}}}}
    for code in ("400", "401", "403", "404", "413", "500"):
        op["responses"][code] = dict(error)
    if meta.auth != "none":
        op["security"] = [{"bearer": []}, {"apiKeyHeader": []}]
    return op


def build_openapi(app: web.Application, *, title: str = "aiport", version: str = "") -> dict[str, Any]:
    """The OpenAPI 3.0.3 document listing every route of ``app``."""
    catalog = app[state.CATALOG]
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for entry in catalog.entries:
        for path in entry.paths:
            for method in entry.meta.methods:
                item = paths.setdefault(_openapi_path(path), {})
                item[method.lower()] = _operation(entry.meta, entry.dto, method, _openapi_path(path), schemas)
    for method, path, summary in catalog.plain:
        opath = _openapi_path(path)
        op: dict[str, Any] = {
            "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method}_{opath}").strip("_"),
            "summary": summary or f"{method} {opath}",
            "tags": ["system"],
            "responses": {"200": {"description": "Success"}},
        }
        if _path_params(opath):
            op["parameters"] = _path_params(opath)
        paths.setdefault(opath, {})[method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version or "0"},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
    }
