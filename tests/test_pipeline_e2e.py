"""The real Snakemake pipeline, every stage, on the micro configs in a temporary directory."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from streamkd.model.checkpoint import model_digest
from streamkd.provenance import PROVENANCE_FIELDS, content_digest
from streamkd.results.record import resolve_record_path
from streamkd.results.tables import latex_problems
from streamkd.utils import file_digest, source_commit

from helpers import REPO, job_counts, requires_tts, run_snakemake

MICRO = REPO / "workflow/configs/micro.yaml"
MICRO_TRANSDUCER = REPO / "workflow/configs/micro-transducer.yaml"
MICRO_DYNAMIC = REPO / "workflow/configs/micro-dynamic.yaml"


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


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_reference_alignment(path: Path, num_utterances: int) -> dict:
    """Every reference token has a frame, in order, and its time is the end of that 40 ms frame."""
    rows = read_jsonl(path)
    assert len(rows) == num_utterances
    for row in rows:
        assert row["frames"] is not None and len(row["frames"]) == len(row["tokens"]) > 0
        assert all(a <= b for a, b in zip(row["frames"], row["frames"][1:]))
        assert row["times_ms"] == [(f + 1) * 40.0 for f in row["frames"]]
        assert " ".join(w["word"] for w in row["words"]) == row["ref"]
    return {row["id"]: row for row in rows}


def check_emission_delays(exp: Path, records: dict, teacher_methods: set, student_methods: set) -> None:
    """Each timed decode reproduces the decode's hypotheses and counts every reference token."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(exp.parent / "data/lang/bpe.model"))
    for run, record in records.items():
        methods = teacher_methods if run == "teacher" else student_methods
        assert set(record["delay"]["test"]) == methods
        for method in methods:
            head = "transducer" if method.startswith("rnnt") else "ctc"
            reference = check_reference_alignment(exp / f"teacher/align/test-{head}.jsonl", 8)
            decode = exp / run / "decode" / f"test-{method}"
            summary = json.loads((decode / "delay.json").read_text())
            assert summary["mode"] == ("offline" if run == "teacher" else "streaming")
            assert summary["num_utterances"] == 8 and summary["num_unaligned"] == 0
            # The embedded corpus's own word times are the reference, word for word.
            assert summary["reference"] in ("espeak-ng word events", "espeak-ng word events + flite segment durations")
            assert summary["num_reference"] == sum(len(r["ref"].split()) for r in reference.values())
            assert record["delay"]["test"][method]["mean_ms"] == summary["mean_ms"]
            assert record["emissions"]["test"][method] == f"decode/test-{method}/emissions.jsonl"
            hyps = {r["id"]: r["hyp"] for r in read_jsonl(decode / "hyps.jsonl")}
            for row in read_jsonl(decode / "emissions.jsonl"):
                assert sp.decode(row["tokens"]) == hyps[row["id"]]
                assert " ".join(w[0] for w in row["words"]) == hyps[row["id"]]
                assert len(row["emission_ms"]) == len(row["tokens"])
                assert all(a <= b for a, b in zip(row["emission_ms"], row["emission_ms"][1:]))
                if run == "teacher":  # offline: nothing before the utterance has ended
                    assert set(row["emission_ms"]) <= {row["duration_ms"]}


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
    assert header[0] == "Method" and header[-5:] == [
        "test @ 160 ms",
        "test @ 160 ms rel. %",
        "test @ 160 ms gap %",
        "test @ 160 ms delay ms",
        "Params (M)",
    ]
    # Emission delay: the teacher timed on its own offline decode, students on their chunk-by-chunk twin.
    assert set(zip(table["method"], table["delay_decoding"])) == {
        ("teacher", "ctc-1best"),
        ("none", "ctc-1best-streaming"),
        ("aux", "ctc-1best-streaming"),
    }
    assert {"delay_mean_ms", "delay_median_ms", "delay_p90_ms"} <= set(table.columns)
    assert "| teacher " in markdown and "| none " in markdown
    assert latex_problems((tmp_path / "results/tables/wer.tex").read_text()) == []
    assert "<table" in (tmp_path / "results/tables/wer.html").read_text()
    runs = pd.read_csv(tmp_path / "results/tables/runs.csv")
    assert set(runs["run"]) == {"teacher", "none-chunk4-seed1", "aux-chunk4-layers1_2-shift1-seed1"}
    for plot in ("wer_vs_chunk", "wer_vs_apc_shift", "loss_curves", "wer_vs_delay"):
        assert (tmp_path / f"results/plots/{plot}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"results/plots/{plot}.pdf").read_bytes()[:5] == b"%PDF-"
    # The table is printed when the workflow ends.
    assert "WER (%)" in result.stdout + result.stderr
    # The aux student read its targets from the teacher cache, built once for the grid.
    cache = json.loads((tmp_path / "exp/teacher/targets/layers1_2/summary.json").read_text())
    assert cache["fields"] == ["teacher_layer1", "teacher_layer2"] and cache["num_cuts"] > 0
    assert cache["cuts_sha256"] == content_digest(tmp_path / "data/fbank/cuts_train.checked.jsonl.gz")
    aux_log = (tmp_path / "exp/aux-chunk4-layers1_2-shift1-seed1/log/train.log").read_text()
    assert "from the teacher cache" in aux_log

    from lhotse import load_manifest

    references = {
        s.id: s.text for s in load_manifest(tmp_path / "data/corpus/manifests/embedded_supervisions_test.jsonl.gz")
    }
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
        assert record["source_commit"] == source_commit()  # the code that trained it
        # What it was made from, by content; the teacher is its own teacher.
        assert all(record["provenance"][key] for key in PROVENANCE_FIELDS), record["provenance"]
        assert record["provenance"]["test_cuts_sha256"] == {
            "test": content_digest(tmp_path / "data/fbank/cuts_test.checked.jsonl.gz")
        }
        # The file and the model it holds each have a digest; a teacher is named by its model's.
        assert record["checkpoint_sha256"] == file_digest(run_dir / "model.pt")
        assert record["model_sha256"] == model_digest(run_dir / "model.pt")
        teacher_digest = model_digest(tmp_path / "exp/teacher/model.pt")
        assert record["teacher_sha256"] == (None if run == "none-chunk4-seed1" else teacher_digest)
        assert isinstance(record["hardware"]["mkl_settings"], dict)
        methods = {"ctc-1best", "ctc-hlg"} | ({"ctc-1best-streaming"} if run != "teacher" else set())
        assert set(record["wer"]["test"]) == set(record["decoding"]["test"]) == set(record["errors"]["test"]) == methods
        for method in methods:
            assert isinstance(record["wer"]["test"][method], float)
            info = record["decoding"]["test"][method]
            assert info["rtf"] > 0 and info["streaming"] == method.endswith("-streaming")
            assert info["latency_ms"] == (None if run == "teacher" else 4 * 40 + 30)
        assert "epoch 1 done" in (run_dir / "log/train.log").read_text()
    check_emission_delays(tmp_path / "exp", records, {"ctc-1best"}, {"ctc-1best-streaming"})
    # The distilled student trains with two auxiliary branches but deploys the baseline's parameters.
    baseline, aux = records["none-chunk4-seed1"], records["aux-chunk4-layers1_2-shift1-seed1"]
    assert (baseline["method"], baseline["kd_layers"], baseline["apc_shift"]) == ("none", None, None)
    assert (aux["method"], aux["kd_layers"], aux["kd_teacher_layers"], aux["apc_shift"]) == ("aux", "1,2", "1,2", 1)
    kd = yaml.safe_load((REPO / "config.yaml").read_text())["kd"]  # micro.yaml keeps the default's KD settings
    assert (aux["kd_loss"], aux["kd_weight"]) == (kd["loss"], kd["weight"])
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
    for log in [
        "prepare_corpus",
        "compute_fbank_train",
        "check_data_test",
        "train_bpe",
        "compile_ctc_topo",
        "train_word_lm",
        "compile_hlg",
    ]:
        assert (tmp_path / "data/logs" / f"{log}.log").is_file()
    # The heavy rules leave a benchmark with their peak memory (what the resources are sized from).
    benchmarks = [
        tmp_path / "data/benchmarks/prepare_corpus.tsv",
        tmp_path / "data/benchmarks/compute_fbank_train.tsv",
        tmp_path / "exp/teacher/benchmark/train.tsv",
        tmp_path / "exp/aux-chunk4-layers1_2-shift1-seed1/benchmark/decode-test-ctc-hlg.tsv",
    ]
    for path in benchmarks:
        peak = pd.read_csv(path, sep="\t")["max_rss"].iloc[0]
        assert 10 < peak < 4000, (path, peak)  # MiB: a real process, far below the micro resources' scale
    # The run recommends an offline command for its HTML report; it works as printed.
    printed = re.search(r"for a one-page HTML report of them run: (streamkd report .+)", result.stdout + result.stderr)
    assert printed is not None, result.stdout[-2000:]
    recommended = [sys.executable, "-m", "streamkd.cli", *shlex.split(printed.group(1))[1:]]
    done = subprocess.run(recommended, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "results/report.html").read_text()
    assert "WER (%) on test with ctc-1best decoding" in page and "data:image/png;base64" in page
    # Snakemake's own report holds the tables and plots with their captions (built here without
    # downloading Snakemake's JavaScript, see snakemake_report_offline.py; the run does not
    # recommend it, since Snakemake 7 needs the network for it).
    report = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests/snakemake_report_offline.py"),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(REPO / "workflow/configs/micro.yaml"),
            "--report",
            str(tmp_path / "report.html"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.returncode == 0, report.stdout[-4000:] + report.stderr[-4000:]
    html = (tmp_path / "report.html").read_text()
    for name in ("wer_vs_chunk.png", "loss_curves.pdf", "wer.html", "wer.tex", "runs.csv"):
        assert name in html
    assert "WER (%) against chunk size" in html  # a caption
    assert "Knowledge distillation from a full-context Conformer" in html  # streamkd/report/workflow.rst


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

    references = {
        s.id: s.text for s in load_manifest(tmp_path / "data/corpus/manifests/embedded_supervisions_test.jsonl.gz")
    }
    check_wer_against_hyps(student, tmp_path / "exp-transducer/none-chunk4-seed1", references)
    assert student["head"] == "transducer+ctc"
    assert set(student["wer"]["test"]) == {
        "rnnt-greedy",
        "rnnt-modified-beam",
        "rnnt-fast-beam",
        "rnnt-greedy-streaming",
        "rnnt-modified-beam-streaming",
        "ctc-1best",
    }
    # True streaming reproduces the simulated (masked) student exactly.
    decode = tmp_path / "exp-transducer/none-chunk4-seed1/decode"
    for search in ("rnnt-greedy", "rnnt-modified-beam"):
        simulated = (decode / f"test-{search}/hyps.jsonl").read_text()
        assert (decode / f"test-{search}-streaming/hyps.jsonl").read_text() == simulated
    assert "rnnt_pruned=" in (tmp_path / "exp-transducer/teacher/log/train.log").read_text()
    # Emission delays of every token-level search, against the teacher's CTC and transducer alignments.
    records = {
        run: json.loads((tmp_path / "exp-transducer" / run / "record.json").read_text())
        for run in ("teacher", "none-chunk4-seed1")
    }
    check_emission_delays(
        tmp_path / "exp-transducer",
        records,
        {"rnnt-greedy", "rnnt-modified-beam", "rnnt-fast-beam", "ctc-1best"},
        {"rnnt-greedy-streaming", "rnnt-modified-beam-streaming"},
    )
    # KD works with the transducer head too: the aux student trains on RNN-T + CTC + KD.
    aux_log = (tmp_path / "exp-transducer/aux-chunk4-layers1_2-shift1-seed1/log/train.log").read_text()
    assert "rnnt_pruned=" in aux_log and "kd=" in aux_log
    # ... and token KD distils the collapsed transducer distribution.
    token = json.loads((tmp_path / "exp-transducer/token-chunk4-seed1/record.json").read_text())
    assert token["method"] == "token" and token["head"] == "transducer+ctc"
    assert token["num_params_deployed"] == student["num_params_deployed"]
    token_log = (tmp_path / "exp-transducer/token-chunk4-seed1/log/train.log").read_text()
    assert "rnnt_pruned=" in token_log and "kd=" in token_log


@requires_tts
@pytest.mark.slow
def test_micro_dynamic_chunk_students_decode_at_every_chunk_size(micro_run):
    """One dynamic-chunk checkpoint per student, decoded (simulated and streaming) and timed at
    chunk sizes 2 and 4; the table shows each student as one row across both chunk columns."""
    tmp_path, first = micro_run
    assert first.returncode == 0, "the CTC micro run failed; see the test above"
    (tmp_path / "exp-dynamic").mkdir()
    (tmp_path / "exp-dynamic/teacher").symlink_to("../exp/teacher")  # the teacher and its cache, shared
    result = snakemake(tmp_path, MICRO, MICRO_DYNAMIC)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    planned = job_counts(result.stderr.split("Job stats:", 1)[1].split("\n\n", 1)[0])
    assert (planned["train_teacher"], planned["cache_teacher"], planned["train_student"]) == (0, 0, 2), planned

    exp = tmp_path / "exp-dynamic"
    keys = {f"{m}@chunk{c}" for m in ("ctc-1best", "ctc-1best-streaming") for c in (2, 4)}
    records = {}
    for run in ("none-chunkdynamic-seed1", "aux-chunkdynamic-layers1_2-shift1-seed1"):
        record = records[run] = json.loads((exp / run / "record.json").read_text())
        assert record["chunk_size"] == "dynamic"
        assert record["dynamic_chunk"] == {
            "chunk_sizes": [2, 4, 8],
            "probabilities": [0.25, 0.5, 0.25],
            "left_chunks": [2, -1],
            "left_chunk_probabilities": [0.5, 0.5],
        }
        assert set(record["wer"]["test"]) == set(record["decoding"]["test"]) == keys
        for key, info in record["decoding"]["test"].items():
            chunk = int(key.rsplit("@chunk", 1)[1])
            assert info["chunk_size"] == chunk and info["latency_ms"] == chunk * 40 + 30
        assert set(record["delay"]["test"]) == {"ctc-1best-streaming@chunk2", "ctc-1best-streaming@chunk4"}
        for chunk in (2, 4):
            decode = exp / run / "decode"
            # Chunk-by-chunk streaming gives the masked whole-utterance forward's hypotheses at each size.
            simulated = (decode / f"test-ctc-1best@chunk{chunk}/hyps.jsonl").read_text()
            assert (decode / f"test-ctc-1best-streaming@chunk{chunk}/hyps.jsonl").read_text() == simulated
            delay = json.loads((decode / f"test-ctc-1best-streaming@chunk{chunk}/delay.json").read_text())
            assert delay["mode"] == "streaming" and delay["num_utterances"] == 8
        train_log = (exp / run / "log/train.log").read_text()
        assert "dynamic-chunk student: chunk sizes 2 (p=0.25), 4 (p=0.5), 8 (p=0.25)" in train_log
    aux_log = (exp / "aux-chunkdynamic-layers1_2-shift1-seed1/log/train.log").read_text()
    assert "from the teacher cache" in aux_log and "APC shift 1" in aux_log

    table = pd.read_csv(tmp_path / "results-dynamic/tables/wer.csv")
    students = table[table["method"] != "teacher"]
    assert set(students["method"]) == {"none", "aux"}
    assert students.groupby("method")["model"].nunique().eq(1).all()  # one row per student
    assert sorted(students.groupby("method")["chunk_size"].apply(sorted).iloc[0]) == [2, 4]
    assert set(students["delay_decoding"]) == {"ctc-1best-streaming@chunk2", "ctc-1best-streaming@chunk4"}
    markdown = (tmp_path / "results-dynamic/tables/wer.md").read_text()
    assert "test @ 80 ms" in markdown and "test @ 160 ms" in markdown
    assert "| dynamic " in markdown
