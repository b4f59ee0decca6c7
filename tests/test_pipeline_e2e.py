"""The real Snakemake pipeline, every stage, on the micro config in a temporary directory."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import requires_tts
from streamkd.results.record import resolve_record_path
from streamkd.results.tables import latex_problems

REPO = Path(__file__).resolve().parents[1]


@requires_tts
@pytest.mark.slow
def test_micro_pipeline_produces_a_numeric_wer_table(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "--configfile", str(REPO / "workflow/configs/micro.yaml")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    table = pd.read_csv(tmp_path / "results/tables/wer.csv")
    assert set(table["model"]) == {"teacher", "none", "aux"}
    aux_row = table[table["model"] == "aux"].iloc[0]
    assert (aux_row["kd_layers"], aux_row["apc_shift"]) == ("1,2", 1)
    assert table["wer_mean"].between(0, 1000).all()
    assert (table["test_set"] == "test").all()
    markdown = (tmp_path / "results/tables/wer.md").read_text()
    assert markdown.startswith("WER (%) on test with ctc-1best decoding")
    header = [h.strip() for h in markdown.splitlines()[2].strip("|").split("|")]
    assert header[0] == "Method" and header[-3:] == ["test @ 160 ms", "test @ 160 ms rel. %", "Params (M)"]
    assert "| teacher " in markdown and "| none " in markdown
    assert latex_problems((tmp_path / "results/tables/wer.tex").read_text()) == []
    assert "<table" in (tmp_path / "results/tables/wer.html").read_text()
    runs = pd.read_csv(tmp_path / "results/tables/runs.csv")
    assert set(runs["run"]) == {"teacher", "none-chunk4-seed1"}
    for plot in ("wer_vs_chunk", "wer_vs_apc_shift", "loss_curves"):
        assert (tmp_path / f"results/plots/{plot}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"results/plots/{plot}.pdf").read_bytes()[:5] == b"%PDF-"
    # The table is printed when the workflow ends.
    assert "WER (%)" in result.stdout + result.stderr

    records = {}
    for run in ("teacher", "none-chunk4-seed1", "aux-chunk4-layers1_2-shift1-seed1"):
        run_dir = tmp_path / "exp" / run
        record = records[run] = json.loads((run_dir / "record.json").read_text())
        assert record["seed"] == (42 if run == "teacher" else 1)
        assert record["num_params"] > 0
        assert isinstance(record["wer"]["test"]["ctc-1best"], float)
        errors = (run_dir / "decode/test-ctc-1best/errors.jsonl").read_text().splitlines()
        assert len(errors) == 8
        # The record names its per-utterance errors and training summary relative to itself.
        assert record["errors"]["test"]["ctc-1best"] == "decode/test-ctc-1best/errors.jsonl"
        assert resolve_record_path(run_dir / "record.json", record["train_summary"]).is_file()
        assert "epoch 1 done" in (run_dir / "log/train.log").read_text()
    # The distilled student trains with two auxiliary branches but deploys the baseline's parameters.
    baseline, aux = records["none-chunk4-seed1"], records["aux-chunk4-layers1_2-shift1-seed1"]
    assert (baseline["method"], baseline["kd_layers"], baseline["apc_shift"]) == ("none", None, None)
    assert (aux["method"], aux["kd_layers"], aux["kd_teacher_layers"], aux["apc_shift"]) == ("aux", "1,2", "1,2", 1)
    assert (aux["kd_loss"], aux["kd_weight"]) == ("l1_cos", 1.0)
    assert aux["num_params_deployed"] == aux["num_params"] == baseline["num_params_deployed"]
    assert aux["num_params_training"] > aux["num_params_deployed"]
    assert baseline["num_params_training"] == baseline["num_params_deployed"]
    assert records["teacher"]["method"] == "teacher"
    aux_log = (tmp_path / "exp/aux-chunk4-layers1_2-shift1-seed1/log/train.log").read_text()
    assert "KD layer pairs (student -> teacher): [(1, 1), (2, 2)], APC shift 1" in aux_log
    assert re.search(r"kd=\d+\.\d+", aux_log)
    # Every rule leaves a log where the workflow says it does.
    for log in ["prepare_corpus", "compute_fbank_train", "train_bpe", "compile_ctc_topo"]:
        assert (tmp_path / "data/logs" / f"{log}.log").is_file()

    # The self-contained HTML report holds the tables and plots with their captions
    # (built without downloading Snakemake's JavaScript: see snakemake_report_offline.py).
    report = subprocess.run(
        [sys.executable, str(REPO / "tests/snakemake_report_offline.py"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(REPO / "workflow/configs/micro.yaml"), "--report", str(tmp_path / "report.html")],
        capture_output=True, text=True,
    )
    assert report.returncode == 0, report.stdout[-4000:] + report.stderr[-4000:]
    html = (tmp_path / "report.html").read_text()
    for name in ("wer_vs_chunk.png", "loss_curves.pdf", "wer.html", "wer.tex", "runs.csv"):
        assert name in html
    assert "WER (%) against chunk size" in html  # a caption
    assert "Knowledge distillation from a full-context Conformer" in html  # workflow/report/workflow.rst
