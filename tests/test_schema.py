"""The schema is the one source of defaults: validation fills them, the code reads them."""

from __future__ import annotations

import dataclasses
import re

import jsonschema
import pytest
import yaml

from streamkd.cli import main as cli
from streamkd.config import ConfigError, load_config, validate_config
from streamkd.data.embedded import Voice
from streamkd.distill.config import AuxConfig, KdConfig
from streamkd.model.heads import HeadConfig
from streamkd.results.config import PlotConfig, ResultsConfig, SignificanceConfig, TableSpec
from streamkd.schema import config_default, fill_defaults, load_schema, subschema
from streamkd.training.config import OptimisationConfig

from helpers import REPO


def _defaults(node, path=""):
    """(path, subschema) of every node that states a default, through properties and definitions."""
    if isinstance(node, dict):
        if "default" in node:
            yield path, node
        for key, child in node.items():
            yield from _defaults(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _defaults(child, f"{path}/{i}")


def test_every_default_is_valid_for_its_own_key():
    schema = load_schema()
    found = list(_defaults(schema))
    assert len(found) > 50
    for path, node in found:
        sub = {**node, "definitions": schema["definitions"]}
        errors = list(jsonschema.Draft7Validator(sub).iter_errors(node["default"]))
        assert not errors, (path, node["default"], [e.message for e in errors])


def _minimal_config():
    """config.yaml without the optional keys whose defaults the schema states."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    del config["results"], config["kd"]["aux"], config["decoding"]["beam"], config["bpe"]["model_type"]
    del config["training"]["teacher_seed"], config["model"]["left_chunks"], config["model"]["head"]
    return config


def test_validation_fills_every_default_in_place():
    config = _minimal_config()
    returned = validate_config(config)
    assert returned is config
    assert config["kd"]["aux"] == {"type": "transformer", "attention": "full", "positional": "none"}
    assert config["decoding"]["beam"] == config_default("decoding.beam") == 4
    assert config["decoding"]["fast_beam"] == 4.0 and config["decoding"]["max_duration"] == 120.0
    assert config["bpe"]["model_type"] == "bpe" and config["training"]["teacher_seed"] == 0
    assert config["model"]["left_chunks"] == -1 and config["model"]["head"]["type"] == "ctc"
    assert config["training"]["student"]["accum_grad"] == 1 and config["training"]["student"]["num_buckets"] == 10
    # A default object is filled in turn; given values are kept.
    assert config["results"]["plots"] == {"dpi": 150}
    assert config["results"]["significance"] == {"confidence": 0.95, "num_resamples": 1000, "seed": 0}
    assert config["training"]["student"]["spec_augment"] is False  # config.yaml's, not the default (true)
    assert ResultsConfig.from_dict(config["results"]) == ResultsConfig()


def test_filling_defaults_twice_changes_nothing_and_leaves_branches_alone():
    config = validate_config(_minimal_config())
    again = fill_defaults(yaml.safe_load(yaml.safe_dump(config)))
    assert again == config
    # kd_layers entries are oneOf alternatives: nothing is filled inside them.
    assert config["grid"]["kd_layers"] == [[2, 4]]


def test_an_invalid_value_is_reported_before_any_default_is_filled():
    config = _minimal_config()
    config["decoding"]["beam"] = 0
    with pytest.raises(ConfigError, match="decoding.beam: 0 is less than the minimum of 1"):
        validate_config(config)
    assert "fast_beam" not in config["decoding"]


@pytest.mark.parametrize(
    "cls, prefix",
    [
        (OptimisationConfig, "training.student"),
        (KdConfig, "kd"),
        (AuxConfig, "kd.aux"),
        (HeadConfig, "model.head"),
        (SignificanceConfig, "results.significance"),
        (PlotConfig, "results.plots"),
        (ResultsConfig, "results"),
        (TableSpec, "definitions.results_table"),
    ],
)
def test_dataclass_defaults_are_the_schema_defaults(cls, prefix):
    checked = 0
    for field in dataclasses.fields(cls):
        if field.default is dataclasses.MISSING:
            continue
        try:
            expected = config_default(f"{prefix}.{field.name}")
        except KeyError:
            continue  # no schema default: a field the schema leaves optional (None) or does not have
        assert field.default == expected, (cls.__name__, field.name)
        checked += 1
    assert checked >= 1, cls


# Options of the CLI that the workflow fills from a config key.
CLI_DEFAULTS = {
    ("compute-fbank", "num_mel_bins"): "features.num_mel_bins",
    ("compute-fbank", "num_jobs"): "features.num_jobs",
    ("compute-fbank", "speed_perturb"): "features.speed_perturb",
    ("compute-fbank", "on_the_fly"): "features.on_the_fly",
    ("prepare-embedded", "num_jobs"): "corpus.num_jobs",
    ("train-bpe", "model_type"): "bpe.model_type",
    ("train-lm", "order"): "decoding.lm.order",
    ("compile-hlg", "order"): "decoding.lm.order",
    ("train", "left_chunks"): "model.left_chunks",
    ("train", "threads"): "training.threads",
    **{
        ("decode", key): f"decoding.{key}"
        for key in (
            "search_beam",
            "output_beam",
            "beam",
            "fast_beam",
            "max_states",
            "max_contexts",
            "max_symbols_per_frame",
            "max_duration",
        )
    },
}


def test_cli_defaults_are_the_schema_defaults():
    for (command, option), key in CLI_DEFAULTS.items():
        params = {p.name: p for p in cli.commands[command].params}
        assert params[option].default == config_default(key), (command, option)


def test_voice_names_follow_the_schema_pattern():
    pattern = re.compile(subschema("definitions.voice.name")["pattern"])
    config = load_config(REPO / "config.yaml")
    for name in ("us", "rp-f3", "a.b_c", "9x", ".hidden", "-dash", "white space", "", "é"):
        accepted_by_schema = bool(pattern.match(name))
        try:
            Voice(name, "espeak-ng", "en-us")
            accepted_by_code = True
        except ValueError:
            accepted_by_code = False
        assert accepted_by_schema == accepted_by_code, name
        bad = yaml.safe_load(yaml.safe_dump(config))
        bad["corpus"]["voices"][0]["name"] = name
        if accepted_by_schema:
            validate_config(bad)
        else:
            with pytest.raises(ConfigError, match="corpus.voices.0.name"):
                validate_config(bad)


def test_rule_files_read_no_defaults_of_their_own():
    """Defaults are filled at validation, so no rule passes a fallback to ``config...get``.

    (A one-argument ``.get`` reads a key that is optional without a default, e.g. decoding.lm.arpa.)
    """
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not re.search(r"config(\[[^]]+\])*\.get\([^,()]+,", line), f"{path.name}:{number}: {line.strip()}"
