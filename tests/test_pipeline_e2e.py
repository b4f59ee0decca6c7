"""The real Snakemake pipeline, every stage, on the micro configs in a temporary directory."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import requires_tts

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "workflow/configs/micro.yaml"
MICRO_TRANSDUCER = REPO / "workflow/configs/micro-transducer.yaml"


def snakemake(directory: Path, *configfiles: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(directory), "--configfile", *map(str, configfiles)],
        capture_output=True, text=True,
    )


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
    assert set(table["model"]) == {"teacher", "none"}
    assert table["wer_mean"].between(0, 1000).all()
    assert (table["test_set"] == "test").all()
    assert set(table["decoding"]) == {"ctc-1best", "ctc-hlg", "ctc-1best-streaming"}
    markdown = (tmp_path / "results/tables/wer.md").read_text()
    assert "teacher" in markdown and "test ctc-1best @ 160 ms" in markdown
    assert "test ctc-hlg @ 160 ms" in markdown and "test ctc-1best-streaming @ 160 ms" in markdown
    # The table is printed when the workflow ends.
    assert "WER (%)" in result.stdout + result.stderr

    for run in ("teacher", "none-chunk4-seed1"):
        run_dir = tmp_path / "exp" / run
        record = json.loads((run_dir / "record.json").read_text())
        assert record["seed"] == (42 if run == "teacher" else 1)
        assert record["num_params"] > 0 and record["head"] == "ctc"
        methods = {"ctc-1best", "ctc-hlg"} | ({"ctc-1best-streaming"} if run != "teacher" else set())
        assert set(record["wer"]["test"]) == set(record["decoding"]["test"]) == methods
        for method in methods:
            assert isinstance(record["wer"]["test"][method], float)
            info = record["decoding"]["test"][method]
            assert info["rtf"] > 0 and info["streaming"] == method.endswith("-streaming")
            assert info["latency_ms"] == (None if run == "teacher" else 4 * 40 + 30)
            errors = (run_dir / f"decode/test-{method}/errors.jsonl").read_text().splitlines()
            assert len(errors) == 8
        assert "epoch 1 done" in (run_dir / "log/train.log").read_text()
    # Every rule leaves a log where the workflow says it does.
    for log in ["prepare_corpus", "compute_fbank_train", "train_bpe", "compile_ctc_topo", "train_word_lm", "compile_hlg"]:
        assert (tmp_path / "data/logs" / f"{log}.log").is_file()


@requires_tts
@pytest.mark.slow
def test_micro_transducer_pipeline_decodes_with_every_search(micro_run):
    tmp_path, first = micro_run
    assert first.returncode == 0, "the CTC micro run failed; see the test above"
    result = snakemake(tmp_path, MICRO, MICRO_TRANSDUCER)  # reuses data/ of the CTC run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "prepare_corpus" not in result.stdout + result.stderr.split("Job stats")[0]

    table = pd.read_csv(tmp_path / "results-transducer/tables/wer.csv")
    assert table["wer_mean"].between(0, 1000).all()
    student = json.loads((tmp_path / "exp-transducer/none-chunk4-seed1/record.json").read_text())
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
