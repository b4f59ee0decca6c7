"""The real Snakemake pipeline, every stage, on the micro configs in a temporary directory."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import job_counts, requires_tts, run_snakemake
from streamkd.results.record import resolve_record_path
from streamkd.results.tables import latex_problems

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "workflow/configs/micro.yaml"
MICRO_TRANSDUCER = REPO / "workflow/configs/micro-transducer.yaml"


def word_errors(ref: str, hyp: str) -> int:
    """Levenshtein distance between word sequences, written out as the test's own reference."""
    r, h = ref.split(), hyp.split()
    row = list(range(len(h) + 1))
    for i, word in enumerate(r, start=1):
        previous, row[0] = row[0], i
        for j, other in enumerate(h, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != other))
    return row[-1]


def check_wer_against_hyps(record: dict, run_dir: Path, references: dict) -> None:
    """Each WER in a record is what its hypotheses give against the test set's transcripts.

    The micro models train for one epoch and still emit (almost) nothing, so their WER is
    close to 100%; above 100% would mean the searches insert words that no model this weak
    would emit, which is a broken decoder.
    """
    for method, wer in record["wer"]["test"].items():
        rows = [json.loads(line) for line in (run_dir / f"decode/test-{method}/hyps.jsonl").read_text().splitlines()]
        assert {row["id"]: row["ref"] for row in rows} == references, method
        errors = sum(word_errors(row["ref"], row["hyp"]) for row in rows)
        assert wer == pytest.approx(100 * errors / sum(len(ref.split()) for ref in references.values()), abs=1e-6)
        assert 0 <= wer <= 100, (method, wer)


def snakemake(directory: Path, *configfiles: Path) -> subprocess.CompletedProcess:
    return run_snakemake(directory, "--cores", "2", configfiles=configfiles)


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("micro")
    return directory, snakemake(directory, MICRO)


@requires_tts
@pytest.mark.slow
def test_micro_pipeline_produces_a_numeric_wer_table(micro_run):
    tmp_path, result = micro_run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    table = pd.read_csv(tmp_path / "results/tables/wer.csv")
    assert set(table["method"]) == {"teacher", "none", "aux"}
    aux_row = table[table["method"] == "aux"].iloc[0]
    assert (aux_row["kd_layers"], aux_row["apc_shift"]) == ("1,2", 1)
    assert table["wer_mean"].between(0, 100).all()
    assert (table["test_set"] == "test").all()
    markdown = (tmp_path / "results/tables/wer.md").read_text()
    assert markdown.startswith("WER (%) on test with ctc-1best decoding")
    header = [h.strip() for h in markdown.splitlines()[2].strip("|").split("|")]
    assert header[0] == "Method" and header[-3:] == ["test @ 160 ms", "test @ 160 ms rel. %", "Params (M)"]
    assert "| teacher " in markdown and "| none " in markdown
    assert latex_problems((tmp_path / "results/tables/wer.tex").read_text()) == []
    assert "<table" in (tmp_path / "results/tables/wer.html").read_text()
    runs = pd.read_csv(tmp_path / "results/tables/runs.csv")
    assert set(runs["run"]) == {"teacher", "none-chunk4-seed1", "aux-chunk4-layers1_2-shift1-seed1"}
    for plot in ("wer_vs_chunk", "wer_vs_apc_shift", "loss_curves"):
        assert (tmp_path / f"results/plots/{plot}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"results/plots/{plot}.pdf").read_bytes()[:5] == b"%PDF-"
    # The table is printed when the workflow ends.
    assert "WER (%)" in result.stdout + result.stderr

    from lhotse import load_manifest

    references = {s.id: s.text for s in load_manifest(tmp_path / "data/corpus/manifests/embedded_supervisions_test.jsonl.gz")}
    records = {}
    for run in ("teacher", "none-chunk4-seed1", "aux-chunk4-layers1_2-shift1-seed1"):
        run_dir = tmp_path / "exp" / run
        record = records[run] = json.loads((run_dir / "record.json").read_text())
        check_wer_against_hyps(record, run_dir, references)
        assert record["seed"] == (42 if run == "teacher" else 1)
        assert record["num_params"] > 0
        assert isinstance(record["wer"]["test"]["ctc-1best"], float)
        errors = (run_dir / "decode/test-ctc-1best/errors.jsonl").read_text().splitlines()
        assert len(errors) == 8
        # The record names its per-utterance errors and training summary relative to itself.
        assert record["errors"]["test"]["ctc-1best"] == "decode/test-ctc-1best/errors.jsonl"
        assert resolve_record_path(run_dir / "record.json", record["train_summary"]).is_file()
        assert record["head"] == "ctc"
        methods = {"ctc-1best", "ctc-hlg"} | ({"ctc-1best-streaming"} if run != "teacher" else set())
        assert set(record["wer"]["test"]) == set(record["decoding"]["test"]) == set(record["errors"]["test"]) == methods
        for method in methods:
            assert isinstance(record["wer"]["test"][method], float)
            info = record["decoding"]["test"][method]
            assert info["rtf"] > 0 and info["streaming"] == method.endswith("-streaming")
            assert info["latency_ms"] == (None if run == "teacher" else 4 * 40 + 30)
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
    # The data check passed every split whole, and the records say how many utterances were scored.
    for split, size in (("train", 48), ("dev", 8), ("test", 8)):
        check = json.loads((tmp_path / f"data/fbank/check_{split}.json").read_text())
        assert (check["kind"], check["num_checked"], check["num_kept"]) == (split, size, size)
    for record in records.values():
        assert set(record["scored_utterances"]["test"].values()) == {8}
        assert record["excluded_utterances"] == {"test": 0}
    assert "Scored utterances: test: 8 utterances scored (0 excluded by the data check)." in markdown
    # Every rule leaves a log where the workflow says it does.
    for log in ["prepare_corpus", "compute_fbank_train", "check_data_test", "train_bpe", "compile_ctc_topo", "train_word_lm", "compile_hlg"]:
        assert (tmp_path / "data/logs" / f"{log}.log").is_file()
    # The self-contained HTML report holds the tables and plots with their captions
    # (built without downloading Snakemake's JavaScript: see snakemake_report_offline.py).
    report = subprocess.run(
        [sys.executable, str(REPO / "tests/snakemake_report_offline.py"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(REPO / "workflow/configs/micro.yaml"), "--report", str(tmp_path / "report.html")],
        capture_output=True, text=True, timeout=600,
    )
    assert report.returncode == 0, report.stdout[-4000:] + report.stderr[-4000:]
    html = (tmp_path / "report.html").read_text()
    for name in ("wer_vs_chunk.png", "loss_curves.pdf", "wer.html", "wer.tex", "runs.csv"):
        assert name in html
    assert "WER (%) against chunk size" in html  # a caption
    assert "Knowledge distillation from a full-context Conformer" in html  # workflow/report/workflow.rst


@requires_tts
@pytest.mark.slow
def test_micro_transducer_pipeline_decodes_with_every_search(micro_run):
    tmp_path, first = micro_run
    assert first.returncode == 0, "the CTC micro run failed; see the test above"
    result = snakemake(tmp_path, MICRO, MICRO_TRANSDUCER)  # reuses data/ of the CTC run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # The jobs Snakemake plans: none of the data stages (they belong to the CTC run's data/).
    planned = job_counts(result.stderr.split("Job stats:", 1)[1].split("\n\n", 1)[0])
    assert planned["train_teacher"] == 1, planned
    for rule in ("prepare_corpus", "compute_fbank", "check_data", "train_bpe", "compile_ctc_topo"):
        assert planned[rule] == 0, (rule, planned)

    table = pd.read_csv(tmp_path / "results-transducer/tables/wer.csv")
    assert table["wer_mean"].between(0, 100).all()
    student = json.loads((tmp_path / "exp-transducer/none-chunk4-seed1/record.json").read_text())
    from lhotse import load_manifest

    references = {s.id: s.text for s in load_manifest(tmp_path / "data/corpus/manifests/embedded_supervisions_test.jsonl.gz")}
    check_wer_against_hyps(student, tmp_path / "exp-transducer/none-chunk4-seed1", references)
    assert student["head"] == "transducer+ctc"
    assert set(student["wer"]["test"]) == {
        "rnnt-greedy", "rnnt-modified-beam", "rnnt-fast-beam", "rnnt-greedy-streaming",
        "rnnt-modified-beam-streaming", "ctc-1best",
    }
    # True streaming reproduces the simulated (masked) student exactly.
    decode = tmp_path / "exp-transducer/none-chunk4-seed1/decode"
    for search in ("rnnt-greedy", "rnnt-modified-beam"):
        simulated = (decode / f"test-{search}/hyps.jsonl").read_text()
        assert (decode / f"test-{search}-streaming/hyps.jsonl").read_text() == simulated
    assert "rnnt_pruned=" in (tmp_path / "exp-transducer/teacher/log/train.log").read_text()
    # KD works with the transducer head too: the aux student trains on RNN-T + CTC + KD.
    aux_log = (tmp_path / "exp-transducer/aux-chunk4-layers1_2-shift1-seed1/log/train.log").read_text()
    assert "rnnt_pruned=" in aux_log and "kd=" in aux_log
    # ... and token KD distils the collapsed transducer distribution.
    token = json.loads((tmp_path / "exp-transducer/token-chunk4-seed1/record.json").read_text())
    assert token["method"] == "token" and token["head"] == "transducer+ctc"
    assert token["num_params_deployed"] == student["num_params_deployed"]
    token_log = (tmp_path / "exp-transducer/token-chunk4-seed1/log/train.log").read_text()
    assert "rnnt_pruned=" in token_log and "kd=" in token_log

