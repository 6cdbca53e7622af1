"""Generate the PromptExperiment CRD from the pydantic models (the single source of truth).

Pydantic emits JSON Schema 2020-12; a CRD needs a *structural* OpenAPI v3.0 schema. This module inlines
``$ref``s, turns ``Optional[X]`` into ``X``, rewrites exclusive bounds to the OpenAPI 3.0 form, drops
titles and ``null`` defaults, defaults nested objects to ``{}`` so their own defaults apply, and fails loudly
on anything a structural schema cannot express.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from canopy_operator.api.base import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus

CRD_FILE = f"{PLURAL}.{GROUP}.yaml"
Schema = dict[str, Any]

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Experiment phase"},
    {
        "name": "Progress",
        "type": "string",
        "jsonPath": ".status.progress",
        "description": "Decisive votes toward minVotes, or the running evaluation's cases",
    },
    {
        "name": "Challenger",
        "type": "integer",
        "jsonPath": ".status.votes.challengerWins",
        "description": "Votes preferring the challenger",
    },
    {
        "name": "Champion",
        "type": "integer",
        "jsonPath": ".status.votes.championWins",
        "description": "Votes preferring the champion",
    },
    {
        "name": "Ties",
        "type": "integer",
        "jsonPath": ".status.votes.ties",
        "priority": 1,
        "description": "Ties",
    },
    {
        "name": "Winner",
        "type": "string",
        "jsonPath": ".status.winner",
        "description": "Winner of the concluded test",
    },
    {
        "name": "P-Value",
        "type": "number",
        "jsonPath": ".status.evidence.pValue",
        "description": "Always-valid p-value of the active test",
    },
    {
        "name": "Test",
        "type": "string",
        "jsonPath": ".status.test.id",
        "priority": 1,
        "description": "Active test id",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_DROP = {"title"}
_KEEP = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "enum",
    "default",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "additionalProperties",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
}


class CRDGenerationError(ValueError):
    """The models use something a structural CRD schema cannot express."""


def _resolve(node: Schema, defs: dict[str, Schema], path: str, stack: tuple[str, ...]) -> Schema:
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        if name in stack:
            raise CRDGenerationError(f"{path}: recursive model {name} cannot be a structural schema")
        target = _resolve(defs[name], defs, path, (*stack, name))
        # Field-level keys (description, default) win over the model's own docstring.
        return {**target, **{k: v for k, v in node.items() if k not in _DROP}}
    if "allOf" in node:
        parts = node.pop("allOf")
        if len(parts) != 1:
            raise CRDGenerationError(f"{path}: allOf with {len(parts)} members is not supported")
        return {**_resolve(parts[0], defs, path, stack), **{k: v for k, v in node.items() if k not in _DROP}}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise CRDGenerationError(f"{path}: a union of several types cannot be a structural schema")
        inner = _resolve(options[0], defs, path, stack)
        return {**inner, **{k: v for k, v in node.items() if k not in _DROP}}
    return node


def _structural(node: Schema, defs: dict[str, Schema], path: str, stack: tuple[str, ...], *, status: bool) -> Schema:
    node = _resolve(node, defs, path, stack)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node["minimum" if bound == "exclusiveMinimum" else "maximum"] = node.pop(bound)
            node[bound] = True
    if node.get("default", 0) is None or status:
        node.pop("default", None)
    unknown = set(node) - _KEEP - _DROP
    if unknown:
        raise CRDGenerationError(f"{path}: schema keys {sorted(unknown)} cannot be expressed in a CRD")
    for key in _DROP:
        node.pop(key, None)
    if "type" not in node:
        raise CRDGenerationError(f"{path}: every field needs a type in a structural schema")
    if node["type"] == "object" and "properties" in node:
        # extra="forbid" becomes additionalProperties: false, which a CRD forbids beside properties; the API
        # server prunes unknown fields and kubectl's strict field validation rejects them instead.
        node.pop("additionalProperties", None)
        required = set(node.get("required", []))
        props: Schema = {}
        for name, sub in node["properties"].items():
            child = _structural(sub, defs, f"{path}.{name}", stack, status=status)
            optional_object = child["type"] == "object" and name not in required and "default" not in sub
            if optional_object and not status and "properties" in child:
                # A default_factory field: default to the object its own field defaults make, so nested
                # defaults (and CEL rules over them) apply when the user omits the whole block.
                child["default"] = {k: v["default"] for k, v in child["properties"].items() if "default" in v}
            props[name] = child
        node["properties"] = props
    if node["type"] == "array":
        node["items"] = _structural(node["items"], defs, f"{path}[]", stack, status=status)
    if not node.get("description"):
        raise CRDGenerationError(f"{path}: missing description (write a docstring under the field)")
    return node


def model_schema(model: type[BaseModel], path: str, *, status: bool = False) -> Schema:
    """The structural OpenAPI v3 schema of one model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs, path, (), status=status)


def _condition_list_markers(status_schema: Schema) -> None:
    conditions = status_schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]


def build_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition as a dict."""
    spec_schema = model_schema(PromptExperimentSpec, "spec")
    status_schema = model_schema(PromptExperimentStatus, "status", status=True)
    _condition_list_markers(status_schema)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "canopy-operator",
                "app.kubernetes.io/part-of": "canopy-operator",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["canopy"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": copy.deepcopy(PRINTER_COLUMNS),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A PromptExperiment runs an A/B test of a challenger prompt against the "
                            "champion on a Canopy backend, decides with an always-valid sequential test and "
                            "promotes the winner.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "API version of the object."},
                                "kind": {"type": "string", "description": "Kind of the object."},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    """The CRD as deterministic YAML text."""
    header = "# Generated from canopy_operator.api by `make crds` (canopy-operator crds). Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100, allow_unicode=True)


def write_crds(directory: Path) -> Path:
    """Write the CRD into ``directory`` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CRD_FILE
    target.write_text(render_crd(), encoding="utf-8")
    return target
