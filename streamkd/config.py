"""Experiment configuration: loading, schema validation and the checks a schema cannot express.

The schema lives with the workflow (``workflow/schemas/config.schema.yaml``) because Snakemake
validates against it at start-up; the package uses the same file so that a config that the
workflow accepts is exactly one the library accepts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or impossible."""


def load_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _where(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate_config(config: Mapping[str, Any], source: str = "config") -> None:
    """Raise ConfigError naming the offending key or value, or return quietly."""
    validator = jsonschema.Draft7Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{source}: {_where(e.absolute_path)}: {e.message}" for e in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    check_semantics(config, source)


def check_semantics(config: Mapping[str, Any], source: str = "config") -> None:
    """Checks that involve several values at once."""
    for role in ("teacher", "student"):
        enc = config["model"][role]
        if enc["d_model"] % enc["num_heads"]:
            raise ConfigError(
                f"{source}: model.{role}: d_model={enc['d_model']} is not divisible by "
                f"num_heads={enc['num_heads']}"
            )
    for name in ("speed_range", "pitch_range", "snr_db_range"):
        lo_hi = config["corpus"].get(name)
        if lo_hi is not None and lo_hi[0] > lo_hi[1]:
            raise ConfigError(f"{source}: corpus.{name}: lower bound {lo_hi[0]} exceeds upper bound {lo_hi[1]}")
    check_corpus_and_scale(config, source)


def check_corpus_and_scale(config: Mapping[str, Any], source: str = "config") -> None:
    """Test sets must exist in the chosen corpus; CPU processes exclude GPUs."""
    from streamkd.data.corpora import corpus_spec

    spec = corpus_spec(config["corpus"]["name"])
    unknown = [t for t in config["decoding"]["test_sets"] if t not in spec.test_sets]
    if unknown:
        raise ConfigError(
            f"{source}: decoding.test_sets: {', '.join(unknown)} not in corpus {spec.name!r}, "
            f"whose test sets are {', '.join(spec.test_sets)}"
        )
    training = config["training"]
    if training.get("gpus", 0) > 0 and training.get("cpu_processes", 1) > 1:
        raise ConfigError(
            f"{source}: training.cpu_processes={training['cpu_processes']} applies only to CPU training "
            f"(training.gpus is {training['gpus']}: one process per GPU)"
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
