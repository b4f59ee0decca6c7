"""Run records carry the KD fields, and the tables keep methods, layer sets and shifts apart."""

import json

import pandas as pd
import pytest

from streamkd.results.aggregate import aggregate
from streamkd.results.record import build_record, write_record

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
        "role": "student" if student else "teacher", "chunk_size": 4 if student else None, "config_hash": "x",
        "num_params": 1000, "num_params_training": 1500 if fields["method"] == "aux" else 1000,
        "train_seconds": 1.0, **fields,
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
        "method": "aux", "kd_layers": "3,6", "kd_teacher_layers": "3,6", "apc_shift": 2,
        "kd_loss": "l1_cos", "kd_weight": 1.0,
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
    assert rows[("aux", "3,6", 0)].wer_std == pytest.approx(2 ** 0.5)
    assert rows[("none", None, None)].num_seeds == 2
    markdown = (tmp_path / "tables/wer.md").read_text()
    assert "| aux      | 3,6         | 0 " in markdown and "**9.50 ± 0.71**" in markdown
    assert "**26.9**" in markdown  # (13 - 9.5) / 13, the best relative reduction
