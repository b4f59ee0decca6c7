"""The distillation grid: expansion, run names, start-up checks and Snakemake's job counts."""

import re

import pytest
import yaml

from streamkd.config import ConfigError, load_config, validate_config
from streamkd.distill.grid import GridCell, expand_grid

from helpers import REPO, job_counts, run_snakemake

# 2 chunk sizes x 2 seeds: none 4, token 4; layer: 2 layer sets -> 8;
# aux: 2 layer sets x 3 shifts -> 24. 40 students in all.
BIG_GRID = {
    "chunk_sizes": [2, 4],
    "seeds": [1, 2],
    "methods": ["none", "token", "layer", "aux"],
    "kd_layers": [[1], [2, 4]],
    "apc_shifts": [0, 1, 3],
}


@pytest.fixture
def config():
    """The default config with the model depths and grid these tests are written against."""
    config = load_config(REPO / "config.yaml")
    for role in ("teacher", "student"):
        config["model"][role].update(d_model=144, num_layers=6, num_heads=4)
    config["grid"].update(methods=["none", "token", "layer", "aux"], kd_layers=[[3, 6]], apc_shifts=[0, 2])
    return config


def test_grid_cells_and_names():
    cells = expand_grid(BIG_GRID)
    names = [c.run_name for c in cells]
    assert len(names) == len(set(names)) == 40
    by_method = {m: sum(c.method == m for c in cells) for m in BIG_GRID["methods"]}
    assert by_method == {"none": 4, "token": 4, "layer": 8, "aux": 24}
    assert "none-chunk2-seed1" in names and "token-chunk4-seed2" in names
    assert "layer-chunk4-layers2_4-seed1" in names
    assert "aux-chunk2-layers2_4-shift3-seed2" in names
    for name in names:
        assert re.fullmatch(r"[a-z]+(-[a-z]+[0-9_]+)+", name), name
    assert all(c.apc_shift is None for c in cells if c.method != "aux")


def test_shifted_layer_ablation_and_explicit_teacher_layers():
    grid = dict(BIG_GRID, shifted_methods=["layer", "aux"], kd_layers=[{"student": [2, 4], "teacher": [1, 6]}])
    cells = expand_grid(grid)
    layer = [c for c in cells if c.method == "layer"]
    assert len(layer) == 2 * 1 * 3 * 2
    assert layer[0].run_name == "layer-chunk2-layers2_4-teacher1_6-shift0-seed1"
    assert layer[0].train_args() == [
        "--method",
        "layer",
        "--chunk-size",
        "2",
        "--seed",
        "1",
        "--kd-layers",
        "2,4",
        "--kd-teacher-layers",
        "1,6",
        "--apc-shift",
        "0",
    ]
    assert GridCell("none", 4, 1).train_args() == ["--method", "none", "--chunk-size", "4", "--seed", "1"]


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("grid", "apc_shifts", [2, -1], "grid.apc_shifts.1: -1 is less than the minimum of 0"),
        ("grid", "chunk_sizes", [4, 0], "grid.chunk_sizes.1: 0 is less than the minimum of 1"),
        ("grid", "methods", ["none", "distil"], "grid.methods.1: 'distil' is not one of"),
        (
            "grid",
            "kd_layers",
            [[3, 7]],
            "grid.kd_layers[0]: student layer 7 is out of range: model.student has 6 layers",
        ),
        ("grid", "kd_layers", [[0, 3]], "grid.kd_layers.0: [0, 3] is not valid"),
        (
            "grid",
            "kd_layers",
            [{"student": [3], "teacher": [9]}],
            "teacher layer 9 is out of range: model.teacher has 6",
        ),
        ("grid", "kd_layers", [[6, 3]], "student layers [6, 3] must be in increasing order"),
        ("grid", "kd_layers", [[3, 6], {"student": [3, 6], "teacher": [3, 6]}], "both distil the layer pairs"),
        ("grid", "kd_layers", [], "methods ['layer', 'aux'] need at least one layer set"),
        ("grid", "shifted_methods", ["token"], "grid.shifted_methods.0: 'token' is not one of"),
        ("kd", "loss", "l3", "kd.loss: 'l3' is not one of"),
        ("kd", "aux", {"positional": "absolute"}, "kd.aux.positional: 'absolute' is not one of"),
        ("kd", "aux", {"num_heads": 5}, "kd.aux.num_heads=5 must divide model.student.d_model=144"),
    ],
)
def test_bad_grid_and_kd_values_fail_naming_the_value(config, section, key, value, message):
    config[section][key] = value
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert message in str(err.value)


def _dry_run_counts(tmp_path, *configfiles):
    result = run_snakemake(tmp_path, "-n", "--quiet", configfiles=configfiles)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return job_counts(result.stdout)


def _decodes_per_test_set(runs: int) -> int:
    """Decoding jobs for ``runs`` models (one the teacher) with config.yaml's decoding methods."""
    methods = yaml.safe_load((REPO / "config.yaml").read_text())["decoding"].get("methods", ["ctc-1best"])
    streaming = sum(m.endswith("-streaming") for m in methods)
    return runs * len(methods) - streaming  # the full-context teacher cannot stream


@pytest.mark.k2
def test_snakemake_schedules_one_training_and_decoding_job_per_cell(tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump({"grid": BIG_GRID}))
    counts = _dry_run_counts(tmp_path, grid_file)
    assert counts["train_teacher"] == 1
    assert counts["train_student"] == 40
    assert counts["record"] == 41
    assert counts["decode"] == counts["score"] == _decodes_per_test_set(41)


@pytest.mark.k2
def test_evidence_grid_configs_schedule_every_cell(tmp_path):
    # embedded-grid.yaml: 2 chunk sizes x (none, token, layer, aux shift 0) x 5 seeds.
    counts = _dry_run_counts(tmp_path, REPO / "workflow/configs/embedded-grid.yaml")
    assert counts["train_teacher"] == 1
    assert counts["train_student"] == 40 and counts["decode"] == _decodes_per_test_set(41)
    # With the APC-shift sweep at 40 ms: none and aux shifts 0, 1, 2, 4, 3 seeds each.
    counts = _dry_run_counts(
        tmp_path, REPO / "workflow/configs/embedded-grid.yaml", REPO / "workflow/configs/embedded-grid-shifts.yaml"
    )
    assert counts["train_student"] == 15 and counts["decode"] == _decodes_per_test_set(16)


@pytest.mark.k2
def test_the_kd_weight_sweep_schedules_one_student_per_weight_and_braces_in_a_caption_are_text(tmp_path):
    # kd-weights.yaml: none plus token, layer and aux at weights 1, 3 and 10; its caption
    # holds "{1, 3, 10}", which Snakemake must not read as a wildcard.
    counts = _dry_run_counts(tmp_path, REPO / "workflow/configs/kd-weights.yaml")
    assert counts["train_student"] == 10 and counts["aggregate"] == 1


def test_bad_grid_stops_snakemake_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"grid": dict(BIG_GRID, kd_layers=[[1, 9]])}))
    result = run_snakemake(tmp_path, "-n", configfiles=[bad])
    assert result.returncode != 0
    assert "student layer 9 is out of range" in result.stdout + result.stderr
    assert "train_student" not in result.stdout


def test_kd_weights_are_a_grid_dimension_of_kd_cells_only():
    from streamkd.distill.grid import kd_weight

    cells = expand_grid(
        {
            "chunk_sizes": [4],
            "seeds": [1],
            "methods": ["none", "token", "aux"],
            "kd_layers": [[2, 4]],
            "apc_shifts": [0],
            "kd_weights": [0.3, 1, 3],
        }
    )
    names = [c.run_name for c in cells]
    assert names == [
        "none-chunk4-seed1",
        "token-chunk4-kdw0_3-seed1",
        "token-chunk4-kdw1-seed1",
        "token-chunk4-kdw3-seed1",
        "aux-chunk4-layers2_4-shift0-kdw0_3-seed1",
        "aux-chunk4-layers2_4-shift0-kdw1-seed1",
        "aux-chunk4-layers2_4-shift0-kdw3-seed1",
    ]
    assert [kd_weight(c, {"weight": 5.0}) for c in cells[1:4]] == [0.3, 1, 3]


def test_kd_weight_per_method():
    from streamkd.distill.grid import kd_weight

    token, aux = expand_grid(
        {"chunk_sizes": [4], "seeds": [1], "methods": ["token", "aux"], "kd_layers": [[2]], "apc_shifts": [1]}
    )
    kd = {"weight": {"token": 0.3, "aux": 3.0}}
    assert (kd_weight(token, kd), kd_weight(aux, kd)) == (0.3, 3.0)
    assert kd_weight(aux, {"weight": 2.0}) == 2.0 and kd_weight(aux, {}) == 1.0
    with pytest.raises(ValueError, match="no entry for method 'aux'"):
        kd_weight(aux, {"weight": {"token": 1.0}})


def test_a_per_method_kd_weight_must_cover_the_grids_kd_methods(repo):
    config = yaml.safe_load((repo / "config.yaml").read_text())
    config["grid"]["methods"] = ["none", "token", "layer"]
    config["kd"]["weight"] = {"token": 1.0}
    with pytest.raises(ConfigError, match="kd.weight has no weight for method.s. layer"):
        validate_config(config)
    config["kd"]["weight"] = {"token": 1.0, "layer": 3.0}
    validate_config(config)
