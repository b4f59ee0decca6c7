import copy

import pytest
import yaml

from streamkd.config import ConfigError, config_hash, load_config, validate_config
from streamkd.decode.methods import parse_method

from helpers import REPO, job_counts, run_snakemake


@pytest.fixture
def config():
    return load_config(REPO / "config.yaml")


def merged(base, *overrides):
    """Snakemake's way of applying --configfile overrides: nested mappings merge key by key."""
    out = copy.deepcopy(base)
    for override in overrides:
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out


def test_default_and_micro_configs_are_valid(config):
    micro = yaml.safe_load((REPO / "workflow/configs/micro.yaml").read_text())
    transducer = yaml.safe_load((REPO / "workflow/configs/micro-transducer.yaml").read_text())
    validate_config(merged(config, micro))
    validate_config(merged(config, micro, transducer))


def test_decoding_methods_must_fit_the_head(config):
    config["decoding"]["methods"] = ["ctc-1best", "rnnt-greedy-streaming"]
    with pytest.raises(ConfigError, match="decoding.methods: 'rnnt-greedy-streaming' needs a transducer head"):
        validate_config(config)
    config["model"]["head"] = {"type": "transducer+ctc"}
    validate_config(config)
    config["model"]["head"] = {"type": "transducer", "prune_rang": 4}
    with pytest.raises(ConfigError, match="'prune_rang' was unexpected"):
        validate_config(config)


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("training", "teacher", "num_epoch"), 3, "'num_epoch' was unexpected"),
        (("model", "student", "d_model"), "wide", "'wide' is not of type 'integer'"),
        (("grid", "chunk_sizes"), [0], "0 is less than the minimum of 1"),
        (("corpus", "name"), "timit", "'timit' is not one of"),
        (("colour",), "blue", "'colour' was unexpected"),
        (("results", "tables", "wer", "method"), ["aux"], "'method' was unexpected"),
        (("results", "significance", "confidence"), 1.5, "1.5 is greater than or equal to the maximum of 1"),
        (("results", "baseline"), "teacher", "should not be valid"),
    ],
)
def test_bad_values_are_rejected_by_name(config, path, value, message):
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert message in str(err.value)


def test_heads_must_divide_width(config):
    config["model"]["teacher"]["num_heads"] = 5
    with pytest.raises(ConfigError, match="not divisible by num_heads=5"):
        validate_config(config)


def test_a_conformer_branch_with_any_kernel_is_valid_at_every_shift(config):
    # Its convolution is causal (it cannot copy a shifted target), so an even kernel fits too.
    config["grid"]["methods"] = ["none", "aux"]
    config["grid"]["apc_shifts"] = [0, 2, 4]
    for kernel in (4, 15):
        config["kd"]["aux"] = {"type": "conformer", "attention": "full", "positional": "none", "conv_kernel": kernel}
        validate_config(config)


def test_results_tables_may_only_ask_for_decoded_test_sets_and_trained_chunks(config):
    config["results"]["tables"]["ablation"] = {"test_sets": ["dev"]}
    with pytest.raises(ConfigError, match="results.tables.ablation.test_sets: 'dev' is not decoded"):
        validate_config(config)
    config["results"]["tables"]["ablation"] = {"chunk_sizes": [99]}
    with pytest.raises(ConfigError, match="results.tables.ablation.chunk_sizes: 99 is not trained"):
        validate_config(config)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_config(tmp_path / "nowhere.yaml")


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_snakemake_refuses_unknown_key_at_startup(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  techer: {}\n")
    result = run_snakemake(tmp_path, "-n", configfiles=[bad])
    assert result.returncode != 0
    assert "'techer' was unexpected" in result.stdout + result.stderr


@pytest.mark.k2
def test_snakemake_dry_run_lists_the_whole_dag(tmp_path):
    counts = job_counts(run_snakemake(tmp_path, "-n", "--quiet", check=True).stdout)
    config = load_config(REPO / "config.yaml")
    grid = config["grid"]
    # none and token once per chunk size and seed, layer per layer set, aux per layer set and shift.
    per_chunk_and_seed = {
        "none": 1,
        "token": 1,
        "layer": len(grid["kd_layers"]),
        "aux": len(grid["kd_layers"]) * len(grid["apc_shifts"]),
    }
    students = sum(per_chunk_and_seed[m] for m in grid["methods"]) * len(grid["chunk_sizes"]) * len(grid["seeds"])
    assert students == 2  # the default: the streaming baseline and the aux student (the grid is embedded-grid.yaml)
    models = 1 + students
    tests = len(config["decoding"]["test_sets"])
    methods = config["decoding"].get("methods", ["ctc-1best"])
    streaming = sum(m.endswith("-streaming") for m in methods)
    decodes = tests * (models * len(methods) - streaming)  # the teacher cannot stream
    assert counts["prepare_corpus"] == 1
    assert counts["compute_fbank"] == 3
    assert counts["train_teacher"] == 1
    assert counts["train_student"] == students
    assert counts["decode"] == decodes
    assert counts["score"] == decodes
    assert counts.get("compile_hlg", 0) == int(any(m.startswith("ctc-hlg") for m in methods))
    assert counts["record"] == models
    # Emission delay: token-level methods, the students' chunk-by-chunk ones and the teacher's offline ones,
    # against one reference alignment per test set and head.
    token_level = [parse_method(m) for m in methods if parse_method(m).search != "hlg"]
    timed = sum(not m.streaming for m in token_level) + students * sum(m.streaming for m in token_level)
    assert counts["emission_delay"] == tests * timed > 0
    assert counts["align_reference"] == tests * len({m.head for m in token_level})
    assert counts["aggregate"] == 1
    assert counts["plots"] == 1


def deep_merge(base: dict, update: dict) -> dict:
    """How Snakemake merges --configfile over config.yaml (dicts recursively, the rest replaced)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        merged[key] = (
            deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


@pytest.mark.parametrize("name", ["librispeech-100.yaml", "librispeech-960.yaml", "mini-librispeech.yaml"])
def test_librispeech_configs_are_valid(config, name):
    merged = deep_merge(config, yaml.safe_load((REPO / "workflow/configs" / name).read_text()))
    validate_config(merged, source=name)
    assert merged["corpus"]["name"] in name
    for role in ("teacher", "student"):  # nothing of the small default model leaks through
        assert merged["model"][role]["subsampling_channels"] == merged["model"][role]["d_model"]


def test_test_sets_must_belong_to_the_corpus(config):
    config["decoding"]["test_sets"] = ["test", "test-clean"]
    with pytest.raises(ConfigError, match="test-clean not in corpus 'embedded'"):
        validate_config(config)


def test_librispeech_needs_the_corpus_dir_and_ignores_embedded_keys(config):
    config["corpus"]["name"] = "librispeech-100"
    config["decoding"]["test_sets"] = ["test-clean"]
    with pytest.raises(ConfigError, match="corpus: 'dir' is a required property"):
        validate_config(config)
    config["corpus"]["dir"] = "/data/librispeech"
    validate_config(config)  # the embedded corpus's keys, merged from config.yaml, are allowed


def test_cpu_processes_exclude_gpus(config):
    config["training"].update(gpus=2, cpu_processes=2)
    with pytest.raises(ConfigError, match="cpu_processes=2 applies only to CPU training"):
        validate_config(config)


@pytest.mark.k2
def test_librispeech_960_grid_dry_run(tmp_path):
    """Every job of the LibriSpeech 960 h experiment, without the corpus being present."""
    result = run_snakemake(tmp_path, "-n", "--quiet", configfiles=[REPO / "workflow/configs/librispeech-960.yaml"])
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    config = deep_merge(
        load_config(REPO / "config.yaml"), yaml.safe_load((REPO / "workflow/configs/librispeech-960.yaml").read_text())
    )
    assert config["grid"]["methods"] == ["none", "aux"]  # baseline and aux student per chunk size and seed
    students = 2 * len(config["grid"]["chunk_sizes"]) * len(config["grid"]["seeds"])
    assert "cache_teacher" not in counts  # kd.teacher_targets: live at this scale
    tests = len(config["decoding"]["test_sets"])
    methods = config["decoding"].get("methods", ["ctc-1best"])
    streaming = sum(m.endswith("-streaming") for m in methods)
    assert counts["prepare_librispeech"] == 1
    assert counts["compute_fbank"] == 2 + tests
    assert counts["train_student"] == students
    # Every model with every method, except that the teacher cannot stream.
    assert counts["decode"] == counts["score"] == tests * ((1 + students) * len(methods) - streaming)
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_the_documented_results_example_is_a_valid_config(config):
    page = (REPO / "docs/tables.md").read_text()
    block = page.split("**What the tables show**", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    config["results"] = yaml.safe_load(block)["results"]
    config["grid"]["chunk_sizes"] = [4, 8]
    validate_config(config)


@pytest.mark.parametrize(
    "setting, message",
    [
        (
            "data_check:\n  max_excluded_fraction: 1.5\n",
            "data_check.max_excluded_fraction: 1.5 is greater than the maximum of 1",
        ),
        ("data_check:\n  allow_test_exclusions: true\n", "'allow_test_exclusions' was unexpected"),
    ],
)
def test_snakemake_refuses_bad_data_check_settings(tmp_path, setting, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(setting)
    result = run_snakemake(tmp_path, "-n", configfiles=[bad])
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


@pytest.mark.k2
def test_the_data_check_sits_between_features_and_training_and_decoding(tmp_path):
    settings = tmp_path / "check.yaml"
    settings.write_text(
        "data_check:\n  max_excluded_fraction: 0.1\n  allow_test_exclusion: true\ndecoding:\n  test_sets: [dev, test]\n"
    )
    commands = run_snakemake(tmp_path, "-n", "-p", configfiles=[settings], check=True).stdout
    assert job_counts(commands)["check_data"] == 3
    check = {
        line.split("--split ")[1].split()[0]: line
        for line in commands.splitlines()
        if line.startswith("streamkd check-data")
    }
    assert set(check) == {"train", "dev", "test"}
    # dev is decoded here, so it is checked as a test set; only training splits drop long utterances.
    assert "--kind train " in check["train"] and "--kind test " in check["dev"] and "--kind test " in check["test"]
    assert all("--max-excluded-fraction 0.1 " in line and "--allow-test-exclusion" in line for line in check.values())
    # Training may run under a launcher (torchrun, thread settings): look for the command in the line.
    trains = [line for line in commands.splitlines() if "streamkd train " in line]
    decodes = [line for line in commands.splitlines() if "streamkd decode " in line]
    assert trains and all("--train-cuts data/fbank/cuts_train.checked.jsonl.gz" in line for line in trains)
    assert all("--dev-cuts data/fbank/cuts_dev.checked.jsonl.gz" in line for line in trains)
    assert decodes and all(".checked.jsonl.gz" in line for line in decodes)
    records = [line for line in commands.splitlines() if "streamkd record " in line]
    assert records and all("--data-check test=data/fbank/check_test.json" in line for line in records)
