"""The configuration schema: the one place that states every configurable default.

The schema ships inside the package (``streamkd/schemas/config.schema.yaml``), so an installed
streamkd validates exactly like the checkout the workflow runs from. Its ``default:`` values
are filled into a config at validation (:func:`fill_defaults`); the typed dataclasses, click
options and rule files read them through :func:`config_default` instead of restating them.
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping, MutableMapping

import yaml

SCHEMA_RESOURCE = "schemas/config.schema.yaml"


@lru_cache(maxsize=None)
def _schema_text() -> str:
    return resources.files("streamkd").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")


def load_schema() -> dict:
    """A fresh copy of the configuration schema (callers may modify it)."""
    return yaml.safe_load(_schema_text())


@lru_cache(maxsize=None)
def _cached_schema() -> dict:
    return load_schema()


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local ``$ref`` (``#/definitions/name``) to the subschema it names."""
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"config schema: only local references are supported, got {ref!r}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def subschema(key: str) -> Mapping[str, Any]:
    """The schema of a dotted config key, e.g. ``training.student.weight_decay``.

    ``definitions.<name>.<key>`` names a key of a shared definition instead (e.g. the options
    of every results table, ``definitions.results_table.std``).
    """
    root = _cached_schema()
    parts = key.split(".")
    node: Mapping[str, Any] = root
    if parts[0] == "definitions" and len(parts) > 1:
        node, parts = root["definitions"][parts[1]], parts[2:]
    for part in parts:
        properties = _resolve(node, root).get("properties", {})
        if part not in properties:
            raise KeyError(f"config schema has no key {key!r} (no {part!r})")
        node = properties[part]
    # A default beside a $ref belongs to the referring key, not to the shared definition.
    return {**_resolve(node, root), **({"default": node["default"]} if "default" in node else {})}


def config_default(key: str) -> Any:
    """The schema's default of a dotted config key; KeyError if the schema states none."""
    node = subschema(key)
    if "default" not in node:
        raise KeyError(f"config schema states no default for {key!r}")
    return copy.deepcopy(node["default"])


def pattern(key: str) -> "re.Pattern[str]":
    """The compiled ``pattern`` of a string-valued config key (shared with the code that checks it)."""
    return re.compile(subschema(key)["pattern"])


def fill_defaults(
    config: MutableMapping[str, Any], schema: Mapping[str, Any] | None = None
) -> MutableMapping[str, Any]:
    """Add every missing key that has a ``default`` in the schema, in place; returns ``config``.

    Only plain ``properties`` are followed (through ``$ref``), never ``oneOf``/``anyOf``
    branches or array items, so what is filled does not depend on which alternative matches.
    A default object is filled in turn, so ``results: {}`` gains ``results.plots.dpi``.
    """
    root = _cached_schema() if schema is None else schema
    _fill(config, root, root)
    return config


def _fill(instance: MutableMapping[str, Any], node: Mapping[str, Any], root: Mapping[str, Any]) -> None:
    for key, child in _resolve(node, root).get("properties", {}).items():
        default = child.get("default", _resolve(child, root).get("default"))
        if key not in instance and default is not None:
            instance[key] = copy.deepcopy(default)
        if isinstance(instance.get(key), MutableMapping):
            _fill(instance[key], child, root)
