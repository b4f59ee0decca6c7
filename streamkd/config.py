"""Experiment configuration: loading, schema validation and the checks a schema cannot express.

The schema ships with the package (``streamkd/schemas/config.schema.yaml``, see
:mod:`streamkd.schema`); the workflow validates through :func:`validate_config` too, so a
config that the workflow accepts is exactly one the library accepts, with the same defaults.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, MutableMapping

import jsonschema
import yaml

from streamkd.distill.config import LAYER_METHODS
from streamkd.distill.grid import decode_chunk_sizes, fixed_chunk_sizes, layer_sets
from streamkd.distill.mapping import layer_pairs
from streamkd.dynamic_chunk import DYNAMIC, DynamicChunk
from streamkd.schema import fill_defaults, load_schema

__all__ = ["ConfigError", "load_schema", "validate_config", "load_config", "config_hash"]


class ConfigError(ValueError):
    """A configuration value is missing, unknown or impossible."""


def _where(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _message(error: jsonschema.ValidationError) -> str:
    """The error, plus the most specific reason when it comes from a oneOf/anyOf choice."""
    if not error.context:
        return error.message
    cause = jsonschema.exceptions.best_match(error.context)
    return f"{error.message} ({_where(cause.relative_path) or 'value'}: {cause.message})"


def validate_config(config: MutableMapping[str, Any], source: str = "config") -> MutableMapping[str, Any]:
    """Fill the schema's defaults into ``config`` (in place) and check it.

    Raises ConfigError naming the offending key or value; returns the filled ``config``.
    """
    validator = jsonschema.Draft7Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{source}: {_where(e.absolute_path)}: {_message(e)}" for e in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    fill_defaults(config)
    check_semantics(config, source)
    return config


def check_semantics(config: Mapping[str, Any], source: str = "config") -> None:
    """Checks that involve several values at once."""
    for role in ("teacher", "student"):
        enc = config["model"][role]
        if enc["d_model"] % enc["num_heads"]:
            raise ConfigError(
                f"{source}: model.{role}: d_model={enc['d_model']} is not divisible by num_heads={enc['num_heads']}"
            )
    check_decoding_methods(config, source)
    for name in ("speed_range", "pitch_range", "snr_db_range"):
        lo_hi = config["corpus"].get(name)
        if lo_hi is not None and lo_hi[0] > lo_hi[1]:
            raise ConfigError(f"{source}: corpus.{name}: lower bound {lo_hi[0]} exceeds upper bound {lo_hi[1]}")
    check_corpus_and_scale(config, source)
    check_average_last(config, source)
    check_distillation(config, source)
    check_dynamic_chunk(config, source)
    check_results(config, source)


def check_corpus_and_scale(config: Mapping[str, Any], source: str = "config") -> None:
    """Test sets must exist in the chosen corpus; CPU processes exclude GPUs."""
    from streamkd.data.corpora import MANIFESTS, spec_from_config
    from streamkd.data.manifests import CorpusManifestError, check_manifest_files

    if config["corpus"]["name"] == MANIFESTS:
        try:
            check_manifest_files(config["corpus"], source)
        except CorpusManifestError as e:
            raise ConfigError(str(e)) from e
    spec = spec_from_config(config["corpus"])
    unknown = [t for t in config["decoding"]["test_sets"] if t not in spec.test_sets]
    if unknown:
        raise ConfigError(
            f"{source}: decoding.test_sets: {', '.join(unknown)} not in corpus {spec.name!r}, "
            f"whose test sets are {', '.join(spec.test_sets)}"
        )
    training = config["training"]
    if training["gpus"] > 0 and training["cpu_processes"] > 1:
        raise ConfigError(
            f"{source}: training.cpu_processes={training['cpu_processes']} applies only to CPU training "
            f"(training.gpus is {training['gpus']}: one process per GPU)"
        )


def check_average_last(config: Mapping[str, Any], source: str = "config") -> None:
    """Averaging the last N epochs needs N epochs of every model that is decoded."""
    last = config["decoding"].get("average_last", 1)
    for role in ("teacher", "student"):
        epochs = config["training"][role]["num_epochs"]
        if last > epochs:
            raise ConfigError(
                f"{source}: decoding.average_last={last} exceeds training.{role}.num_epochs={epochs}: "
                "there are not that many epoch checkpoints to average"
            )


def check_distillation(config: Mapping[str, Any], source: str = "config") -> None:
    """The grid's KD values against the model depths, so a bad cell fails before any training."""
    grid, student, teacher = config["grid"], config["model"]["student"], config["model"]["teacher"]
    layer_methods = [m for m in grid["methods"] if m in LAYER_METHODS]
    if layer_methods and not grid["kd_layers"]:
        raise ConfigError(f"{source}: grid.kd_layers: methods {layer_methods} need at least one layer set")
    for i, entry in enumerate(grid["kd_layers"]):
        where = f"{source}: grid.kd_layers[{i}]"
        students = entry["student"] if isinstance(entry, Mapping) else entry
        if list(students) != sorted(students):
            raise ConfigError(f"{where}: student layers {list(students)} must be in increasing order")
        for layer in students:
            if layer > student["num_layers"]:
                raise ConfigError(
                    f"{where}: student layer {layer} is out of range: model.student has {student['num_layers']} layers"
                )
        if isinstance(entry, Mapping):
            if len(entry["teacher"]) != len(students):
                raise ConfigError(
                    f"{where}: {len(students)} student layers {list(students)} but "
                    f"{len(entry['teacher'])} teacher layers {list(entry['teacher'])}"
                )
            for layer in entry["teacher"]:
                if layer > teacher["num_layers"]:
                    raise ConfigError(
                        f"{where}: teacher layer {layer} is out of range: model.teacher has {teacher['num_layers']} layers"
                    )
    kd = config["kd"]
    weight = kd["weight"]
    if isinstance(weight, Mapping) and not grid.get("kd_weights"):
        missing = [m for m in grid["methods"] if m != "none" and m not in weight]
        if missing:
            raise ConfigError(f"{source}: kd.weight has no weight for method(s) {', '.join(missing)} of grid.methods")
    if kd["teacher_targets"] == "cache" and kd["teacher_input"] != "clean":
        raise ConfigError(
            f"{source}: kd.teacher_targets=cache needs kd.teacher_input=clean, got {kd['teacher_input']!r}: "
            "the teacher's augmented input changes every step, so cached targets would be stale "
            "(use kd.teacher_targets: live)"
        )
    aux = kd["aux"]
    if "aux" in grid["methods"]:
        # The branch's sizes default to the student's (no fixed default in the schema).
        heads = aux.get("num_heads", student["num_heads"])
        if student["d_model"] % heads or (student["d_model"] // heads) % 2:
            raise ConfigError(
                f"{source}: kd.aux.num_heads={heads} must divide model.student.d_model={student['d_model']} "
                "into an even head size"
            )
    seen: dict = {}
    for i, (students, teachers) in enumerate(layer_sets(grid)):
        pairs = tuple(layer_pairs(students, student["num_layers"], teacher["num_layers"], teachers))
        if pairs in seen:
            raise ConfigError(
                f"{source}: grid.kd_layers[{seen[pairs]}] and grid.kd_layers[{i}] both distil the layer pairs "
                f"{list(pairs)} (student, teacher): the runs would repeat each other"
            )
        seen[pairs] = i


def check_dynamic_chunk(config: Mapping[str, Any], source: str = "config") -> None:
    """A dynamic-chunk student needs its distribution, and chunk sizes to be decoded at."""
    grid, decoding = config["grid"], config["decoding"]
    dynamic = DYNAMIC in grid["chunk_sizes"]
    if not dynamic:
        for key, where in (
            (grid.get("dynamic_chunk"), "grid.dynamic_chunk"),
            (decoding.get("chunk_sizes"), "decoding.chunk_sizes"),
        ):
            if key is not None:
                raise ConfigError(
                    f"{source}: {where} applies to dynamic-chunk students only, but grid.chunk_sizes "
                    f"{list(grid['chunk_sizes'])} has no {DYNAMIC!r}"
                )
        return
    if grid.get("dynamic_chunk") is None:
        raise ConfigError(
            f"{source}: grid.chunk_sizes lists {DYNAMIC!r} but grid.dynamic_chunk is not set "
            "(e.g. {chunk_sizes: [1, 4, 16], probabilities: [0.25, 0.5, 0.25]})"
        )
    try:
        DynamicChunk.from_dict(grid["dynamic_chunk"])
    except ValueError as e:
        raise ConfigError(f"{source}: grid.{e}") from e
    if not decode_chunk_sizes(config):
        raise ConfigError(
            f"{source}: a dynamic-chunk student is decoded at decoding.chunk_sizes, else at the grid's integer "
            f"chunk sizes, and there are none (grid.chunk_sizes: {list(grid['chunk_sizes'])}): set decoding.chunk_sizes"
        )


def check_results(config: Mapping[str, Any], source: str = "config") -> None:
    """A results table may only ask for test sets that are decoded and chunk sizes that are trained."""
    from streamkd.results.config import ResultsConfig, ResultsConfigError

    try:
        results = ResultsConfig.from_dict(config["results"])
    except ResultsConfigError as e:
        raise ConfigError(f"{source}: {e}") from e
    test_sets = set(config["decoding"]["test_sets"])
    chunk_sizes = set(fixed_chunk_sizes(config["grid"]))
    if DYNAMIC in config["grid"]["chunk_sizes"]:
        chunk_sizes |= set(decode_chunk_sizes(config))
    for name, spec in results.tables.items():
        for test_set in spec.test_sets or ():
            if test_sets and test_set not in test_sets:
                raise ConfigError(
                    f"{source}: results.tables.{name}.test_sets: {test_set!r} is not decoded "
                    f"(decoding.test_sets: {sorted(test_sets)})"
                )
        for chunk in spec.chunk_sizes or ():
            if chunk_sizes and chunk not in chunk_sizes:
                raise ConfigError(
                    f"{source}: results.tables.{name}.chunk_sizes: {chunk} is not trained "
                    f"(nor decoded by a dynamic-chunk student; chunk sizes: {sorted(chunk_sizes)})"
                )
    for test_set in results.plots.test_sets or ():
        if test_sets and test_set not in test_sets:
            raise ConfigError(
                f"{source}: results.plots.test_sets: {test_set!r} is not decoded (decoding.test_sets: {sorted(test_sets)})"
            )


def check_decoding_methods(config: Mapping[str, Any], source: str = "config") -> None:
    """Every decoding method must fit the head the models are trained with."""
    from streamkd.decode.methods import parse_method

    head = config["model"]["head"]["type"]
    has = {"ctc": head in ("ctc", "transducer+ctc"), "transducer": head in ("transducer", "transducer+ctc")}
    for name in config["decoding"]["methods"]:
        method = parse_method(name)
        if not has[method.head]:
            raise ConfigError(
                f"{source}: decoding.methods: {name!r} needs a {method.head} head, but model.head.type is {head!r}"
            )


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    validate_config(config, source=str(path))
    return config


def config_hash(*parts: Mapping[str, Any]) -> str:
    """Short stable hash of the settings that define a run (key order does not matter)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
