"""Run records carry the KD fields, and the tables keep methods, layer sets and shifts apart."""

import json

import pandas as pd
import pytest
import torch

from streamkd.distill.config import KdConfig
from streamkd.provenance import PROVENANCE_FIELDS, combined_digest, content_digest
from streamkd.results.kd_settings import SETTING_FIELDS
from streamkd.results.load import RecordError, load_records
from streamkd.results.record import build_record, write_record
from streamkd.results.table_writer import aggregate
from streamkd.results.tables import LABEL_COLUMNS
from streamkd.training.run import kd_record_fields
from streamkd.utils import file_digest

from helpers import write_feature_cuts

TEACHER_SHA256 = "7e" * 32  # the one teacher every KD student here learnt from
KD = {"kd_loss": "l1_cos", "kd_weight": 1.0, "kd_layers": "3,6", "kd_teacher_layers": "3,6"}
RUNS = {
    # run: (summary fields, WER)
    "teacher": ({"role": "teacher", "method": "teacher", "seed": 42}, 5.0),
    "none-chunk4-seed1": ({"method": "none", "seed": 1}, 12.0),
    "none-chunk4-seed2": ({"method": "none", "seed": 2}, 14.0),
    "aux-chunk4-layers3_6-shift0-seed1": ({**KD, "method": "aux", "apc_shift": 0, "seed": 1}, 11.0),
    "aux-chunk4-layers3_6-shift0-seed2": ({**KD, "method": "aux", "apc_shift": 0, "seed": 2}, 13.0),
    "aux-chunk4-layers3_6-shift2-seed1": ({**KD, "method": "aux", "apc_shift": 2, "seed": 1}, 9.0),
    "aux-chunk4-layers3_6-shift2-seed2": ({**KD, "method": "aux", "apc_shift": 2, "seed": 2}, 10.0),
}


def write_run(tmp_path, run, fields, wer):
    run_dir = tmp_path / run
    run_dir.mkdir()
    student = fields["method"] != "teacher"
    summary = {
        "role": "student" if student else "teacher",
        "chunk_size": 4 if student else None,
        "config_hash": "x",
        "num_params": 1000,
        "num_params_training": 1500 if fields["method"] == "aux" else 1000,
        "train_seconds": 1.0,
        # A teacher names its own checkpoint; a KD student the teacher it learnt from.
        "checkpoint_sha256": TEACHER_SHA256 if not student else f"{run}-sha256",
        "teacher_sha256": TEACHER_SHA256 if fields["method"] != "none" else None,
        **fields,
    }
    (run_dir / "train_summary.json").write_text(json.dumps(summary))
    (run_dir / "wer.json").write_text(json.dumps({"wer": wer}))
    record = build_record(run, run_dir / "train_summary.json", {"test": run_dir / "wer.json"}, "ctc-1best")
    write_record(run_dir / "record.json", record)
    return record, run_dir / "record.json"


def test_records_carry_kd_fields_and_tables_group_by_method_layers_and_shift(tmp_path):
    records = {run: write_run(tmp_path, run, *spec) for run, spec in RUNS.items()}
    aux, _ = records["aux-chunk4-layers3_6-shift2-seed1"]
    assert {k: aux[k] for k in ("method", "kd_layers", "kd_teacher_layers", "apc_shift", "kd_loss", "kd_weight")} == {
        "method": "aux",
        "kd_layers": "3,6",
        "kd_teacher_layers": "3,6",
        "apc_shift": 2,
        "kd_loss": "l1_cos",
        "kd_weight": 1.0,
    }
    assert (aux["num_params_deployed"], aux["num_params_training"]) == (1000, 1500)
    none, _ = records["none-chunk4-seed1"]
    assert (none["kd_layers"], none["apc_shift"], none["kd_loss"]) == (None, None, None)

    summary = aggregate([path for _, path in records.values()], tmp_path / "tables")["wer"].summary
    rows = {
        (r.method, None if pd.isna(r.kd_layers) else r.kd_layers, None if pd.isna(r.apc_shift) else int(r.apc_shift)): r
        for r in summary.itertuples()
    }
    assert set(rows) == {("teacher", None, None), ("none", None, None), ("aux", "3,6", 0), ("aux", "3,6", 2)}
    assert rows[("aux", "3,6", 2)].wer_mean == pytest.approx(9.5)
    assert rows[("aux", "3,6", 0)].wer_mean == pytest.approx(12.0)
    assert rows[("aux", "3,6", 0)].wer_std == pytest.approx(2**0.5)
    assert rows[("none", None, None)].num_seeds == 2
    markdown = (tmp_path / "tables/wer.md").read_text()
    assert "| aux      | 3,6         | 0 " in markdown and "**9.50 ± 0.71**" in markdown
    assert "**26.9**" in markdown  # (13 - 9.5) / 13, the best relative reduction


# -- settings beyond method, layers and shift -------------------------------------------------


def kd_summary(method, seed, left_chunks=-1, **kd):
    """Training-summary fields of a KD run, with the ``kd`` dict that training writes."""
    layers = {} if method == "token" else {"student_layers": (3, 6)}
    shift = {"apc_shift": 2} if method == "aux" else {}
    config = KdConfig(method=method, **layers, **shift, **kd)
    fields = kd_record_fields(config, [(3, 3), (6, 6)] if layers else [])
    return {**fields, "seed": seed, "left_chunks": left_chunks}


# field: (method, the base run's settings, the variant's, the variant's record value, what its row label shows)
VARIANTS = {
    "left_chunks": ("aux", {}, {"left_chunks": 2}, 2, "left chunks 2"),
    "aux_type": ("aux", {}, {"aux": {"type": "conformer"}}, "conformer", "branch conformer"),
    "aux_attention": ("aux", {}, {"aux": {"attention": "causal"}}, "causal", "attention causal"),
    "aux_positional": ("aux", {}, {"aux": {"positional": "relative"}}, "relative", "positions relative"),
    "aux_ff_dim": ("aux", {"aux": {"ff_dim": 32}}, {"aux": {"ff_dim": 64}}, 64, "branch ff 64"),
    "aux_num_heads": ("aux", {}, {"aux": {"num_heads": 4}}, 4, "branch heads 4"),
    "aux_conv_kernel": (
        "aux",
        {"aux": {"type": "conformer", "conv_kernel": 3}},
        {"aux": {"type": "conformer", "conv_kernel": 7}},
        7,
        "branch kernel 7",
    ),
    "kd_teacher_input": ("layer", {}, {"teacher_input": "augmented"}, "augmented", "teacher input augmented"),
    "kd_temperature": ("token", {}, {"temperature": 2.0}, 2.0, "temperature 2"),
    "kd_token_delay": ("token", {}, {"token_delay": 2}, 2, "delay 2"),
}


@pytest.mark.parametrize("field", sorted(VARIANTS))
def test_runs_differing_in_one_kd_setting_are_separate_rows_labelled_by_it(tmp_path, field):
    method, base, variant, recorded, shown = VARIANTS[field]
    paths = []
    # Seed 1 exists for both systems (no duplicate), seeds 1 and 2 average within each.
    for name, settings, wers in (("base", base, (10.0, 12.0)), ("variant", variant, (7.0, 8.0))):
        for seed, wer in zip((1, 2), wers):
            record, path = write_run(tmp_path, f"{name}-seed{seed}", kd_summary(method, seed, **settings), wer)
            paths.append(path)
    assert record[field] == recorded

    summary = aggregate(paths, tmp_path / "tables")["wer"].summary
    assert len(summary) == 2, summary[["model", "num_seeds"]]
    by_wer = {r.wer_mean: r for r in summary.itertuples()}
    assert set(by_wer) == {11.0, 7.5} and {r.num_seeds for r in by_wer.values()} == {2}
    assert shown in by_wer[7.5].model and shown not in by_wer[11.0].model
    assert by_wer[7.5].model.startswith(f"{method} (")
    header = (tmp_path / "tables/wer.md").read_text().splitlines()[2]
    assert dict(LABEL_COLUMNS)[field] in header  # the table shows the column that tells them apart


def test_a_setting_the_method_does_not_use_does_not_split_rows(tmp_path):
    # A transformer branch has no convolution, and aux KD has no temperature.
    paths = [
        write_run(
            tmp_path, f"aux-seed{seed}", kd_summary("aux", seed, aux={"conv_kernel": kernel}, temperature=t), 9.0 + seed
        )[1]
        for seed, kernel, t in ((1, 3, 1.0), (2, 7, 4.0))
    ]
    (row,) = aggregate(paths, tmp_path / "tables")["wer"].summary.itertuples()
    assert (row.model, row.num_seeds, row.wer_mean) == ("aux (layers 3,6; shift 2)", 2, 10.5)


def test_records_without_the_settings_load_with_the_defaults(tmp_path):
    # seed 1: a record from before the flat fields (and the kd dict) existed; seed 2: a new one.
    old, old_path = write_run(tmp_path, "aux-seed1", kd_summary("aux", 1), 9.0)
    for field in ("kd", "left_chunks", *SETTING_FIELDS):
        old.pop(field)
    write_record(old_path, old)
    new, new_path = write_run(tmp_path, "aux-seed2", kd_summary("aux", 2), 10.0)
    assert (new["aux_type"], new["aux_attention"], new["left_chunks"], new["kd_temperature"]) == (
        "transformer",
        "full",
        -1,
        None,
    )
    runs = load_records([old_path, new_path]).runs
    assert runs["model"].nunique() == 1 and list(runs["aux_positional"]) == ["none", "none"]
    assert list(runs["left_chunks"]) == [-1, -1]

    # An explicit non-default in an old record's kd dict still counts.
    old["kd"] = {**new["kd"], "aux": {**new["kd"]["aux"], "attention": "causal"}}
    write_record(old_path, old)
    runs = load_records([old_path, new_path]).runs
    assert sorted(runs["aux_attention"]) == ["causal", "full"] and runs["model"].nunique() == 2


def test_bad_setting_values_are_named(tmp_path):
    record, path = write_run(tmp_path, "token-seed1", kd_summary("token", 1), 9.0)
    write_record(path, {**record, "kd_token_delay": "two", "left_chunks": 1.5})
    with pytest.raises(RecordError, match="kd_token_delay is 'two'") as e:
        load_records([path])
    assert "left_chunks is 1.5" in str(e.value)


def test_a_record_carries_the_runs_provenance_and_the_digests_of_its_test_sets(tmp_path):
    provenance = {key: f"{key}-value" for key in PROVENANCE_FIELDS}
    test = write_feature_cuts(tmp_path / "test", [torch.randn(20, 4)], ["A"], name="test")
    run_dir = tmp_path / "run"
    _, path = write_run(tmp_path, "run", {"method": "token", "seed": 1, "provenance": provenance}, 9.0)
    record = build_record(
        "run", path.parent / "train_summary.json", {"test": run_dir / "wer.json"}, "ctc-1best", test_cuts={"test": test}
    )
    assert record["provenance"] == {
        **provenance,
        "test_cuts_sha256": {"test": content_digest(test)},
        "test_features_sha256": {"test": combined_digest([file_digest(tmp_path / "test/test_feats.lca")])},
    }
    assert record["teacher_sha256"] == TEACHER_SHA256 and record["checkpoint_sha256"] == "run-sha256"
    with pytest.raises(ValueError, match="without a WER: dev"):
        build_record(
            "run", run_dir / "train_summary.json", {"test": run_dir / "wer.json"}, "x", test_cuts={"dev": test}
        )


def test_the_teachers_record_names_its_own_checkpoint_as_its_teacher(tmp_path):
    record, _ = write_run(tmp_path, "teacher", {"method": "teacher", "seed": 42, "teacher_sha256": None}, 5.0)
    assert record["teacher_sha256"] == record["checkpoint_sha256"] == TEACHER_SHA256


def test_a_summary_from_before_provenance_gives_a_record_with_null_fields(tmp_path):
    record, path = write_run(tmp_path, "none-seed1", {"method": "none", "seed": 1, "source_commit": "abc"}, 9.0)
    assert record["provenance"] == {
        **{key: None for key in PROVENANCE_FIELDS},
        "source_commit": "abc",
        "test_cuts_sha256": {},
        "test_features_sha256": {},
    }
    assert len(load_records([path]).runs) == 1
