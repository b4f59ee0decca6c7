"""Failures of the command line: one `error: ...` line naming the file, field or value, a
non-zero exit status, and a traceback only when --debug or STREAMKD_DEBUG asks for one."""

import json
import os

import pytest
import torch

from streamkd.model import build_asr_model
from streamkd.model.checkpoint import save_model

from helpers import error_line, train_tiny_bpe, write_feature_cuts
from helpers import streamkd_cli as streamkd

TEXTS = ["THE CAT SAT", "A DOG", "ON THE MAT THE CAT", "DOG"]
TINY_ENCODER = dict(
    d_model=16, num_layers=1, num_heads=2, ff_dim=32, conv_kernel=3, dropout=0.0, subsampling_channels=4
)
OPTIMISATION = dict(num_epochs=1, max_duration=5, peak_lr=0.001, warmup_steps=1, log_interval=1, spec_augment=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    bpe = train_tiny_bpe(d, TEXTS * 10, vocab_size=24)
    from streamkd.data.tokenizer import Tokenizer

    vocab = Tokenizer(bpe).vocab_size
    torch.manual_seed(0)
    # The second cut is 3 frames (30 ms): too short for the front-end's 7.
    cuts = write_feature_cuts(d, [torch.randn(n, 80) for n in (83, 3, 61)], TEXTS[:3])
    model = build_asr_model(dict(TINY_ENCODER, feat_dim=80), vocab, {"type": "ctc"})
    save_model(d / "model.pt", model, meta={"role": "teacher"})
    return d, bpe, cuts


def decode_args(d, bpe, cuts, checkpoint):
    return (
        "decode",
        "--checkpoint",
        checkpoint,
        "--cuts",
        cuts,
        "--bpe-model",
        bpe,
        "--method",
        "ctc-greedy",
        "--hyps",
        d / "hyps.jsonl",
    )


def test_decoding_a_cut_too_short_for_the_front_end_names_it(files):
    d, bpe, cuts = files
    line = error_line(streamkd(*decode_args(d, bpe, cuts, d / "model.pt")))
    assert f"{cuts}: 1 cut(s) shorter than the front-end's 7 input frames: cuts-001" in line
    assert not (d / "hyps.jsonl").exists()


def test_a_file_that_is_not_a_checkpoint_is_named_without_a_traceback(files):
    d, bpe, cuts = files
    bogus = d / "not-a-checkpoint.pt"
    bogus.write_text("hello\n")
    result = streamkd(*decode_args(d, bpe, cuts, bogus))
    assert str(bogus) in error_line(result)
    # The traceback is there for whoever asks.
    debug = streamkd("--debug", *decode_args(d, bpe, cuts, bogus))
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    env = {**os.environ, "STREAMKD_DEBUG": "1"}
    assert "Traceback" in streamkd(*decode_args(d, bpe, cuts, bogus), env=env).stderr


def test_a_malformed_hypothesis_file_is_named_with_its_line(tmp_path):
    hyps = tmp_path / "hyps.jsonl"
    hyps.write_text(json.dumps({"id": "a", "ref": "X", "hyp": "X"}) + "\n{not json\n")
    line = error_line(
        streamkd("score", "--hyps", hyps, "--summary", tmp_path / "wer.json", "--errors", tmp_path / "e.jsonl")
    )
    assert f"{hyps}:2: not a hypothesis record" in line
    assert not (tmp_path / "wer.json").exists()


def train_args(out_dir, bpe, cuts, encoder, optimisation, *extra):
    return (
        "train",
        "--role",
        "teacher",
        "--train-cuts",
        cuts,
        "--dev-cuts",
        cuts,
        "--bpe-model",
        bpe,
        "--out-dir",
        out_dir,
        "--encoder",
        json.dumps(encoder),
        "--optimisation",
        json.dumps(optimisation),
        "--seed",
        1,
        *extra,
    )


@pytest.mark.parametrize(
    "option, encoder, optimisation, expected",
    [
        (
            "--optimisation",
            TINY_ENCODER,
            {"num_epochs": 1},
            ["'max_duration' is a required property", "'peak_lr'", "'warmup_steps'"],
        ),
        ("--optimisation", TINY_ENCODER, {**OPTIMISATION, "learning_rate": 1}, ["'learning_rate' was unexpected"]),
        (
            "--optimisation",
            TINY_ENCODER,
            {**OPTIMISATION, "num_epochs": 0},
            ["num_epochs: 0 is less than the minimum of 1"],
        ),
        ("--encoder", {**TINY_ENCODER, "depth": 3}, OPTIMISATION, ["'depth' was unexpected"]),
        (
            "--encoder",
            {k: v for k, v in TINY_ENCODER.items() if k != "d_model"},
            OPTIMISATION,
            ["'d_model' is a required property"],
        ),
    ],
)
def test_json_options_name_missing_unknown_and_bad_keys(files, option, encoder, optimisation, expected):
    d, bpe, cuts = files
    line = error_line(streamkd(*train_args(d / "exp", bpe, cuts, encoder, optimisation)))
    assert f"error: Invalid value for {option}: " in line
    for words in expected:
        assert words in line
    assert not (d / "exp").exists()


def test_json_head_and_kd_options_are_checked_against_the_schema(files):
    d, bpe, cuts = files
    head = error_line(
        streamkd(*train_args(d / "exp", bpe, cuts, TINY_ENCODER, OPTIMISATION, "--head", '{"type": "rnn"}'))
    )
    assert "Invalid value for --head: " in head and "type: 'rnn' is not one of" in head
    kd = error_line(streamkd(*train_args(d / "exp", bpe, cuts, TINY_ENCODER, OPTIMISATION, "--kd", '{"los": "l1"}')))
    assert "Invalid value for --kd: " in kd and "'los' was unexpected" in kd


def test_training_on_fewer_cuts_than_sampler_buckets(files):
    """Three cuts (one of them too short, as an unchecked manifest may hold) and ten buckets."""
    d, bpe, cuts = files
    out = d / "exp-small"
    result = streamkd(*train_args(out, bpe, cuts, TINY_ENCODER, OPTIMISATION))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 training cuts: 3 duration buckets instead of 10" in result.stderr
    assert (out / "model.pt").is_file()


def test_optimisation_settings_from_python_name_missing_keys_too():
    from streamkd.training.config import OptimisationConfig

    with pytest.raises(ValueError, match="missing optimisation option\\(s\\): max_duration, peak_lr, warmup_steps"):
        OptimisationConfig.from_dict({"num_epochs": 1})


# -- error paths of the deploy, decode, graph, training and analysis commands -----------------


@pytest.fixture(scope="module")
def student(files):
    """A streaming (causal, chunked) student of the module's BPE, as the export needs."""
    d, bpe, _ = files
    from streamkd.data.tokenizer import Tokenizer

    torch.manual_seed(1)
    model = build_asr_model(
        dict(TINY_ENCODER, feat_dim=80, causal=True, chunk_size=2), Tokenizer(bpe).vocab_size, {"type": "ctc"}
    )
    path = d / "student.pt"
    save_model(path, model, meta={"role": "student", "method": "none"})
    return path


def test_exporting_a_full_context_model_is_refused(files, tmp_path):
    d, bpe, _ = files
    line = error_line(
        streamkd("export", "--checkpoint", d / "model.pt", "--bpe-model", bpe, "--out-dir", tmp_path / "x")
    )
    assert "only a causal, chunked student can be exported for streaming" in line
    assert not (tmp_path / "x").exists()


def test_exporting_with_an_impossible_left_context_names_it(files, student, tmp_path):
    _, bpe, _ = files
    args = ("export", "--checkpoint", student, "--bpe-model", bpe, "--out-dir", tmp_path / "x", "--left-chunks", "-2")
    assert "left_chunks must be >= -1 (-1 = unlimited), got -2" in error_line(streamkd(*args, "--no-torchscript"))


def test_transcribing_with_a_missing_model_folder_names_it(tmp_path):
    wav = tmp_path / "a.wav"
    import numpy as np
    import soundfile as sf

    sf.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    missing = tmp_path / "no-such-model"
    line = error_line(streamkd("transcribe", "--model-dir", missing, wav))
    assert str(missing) in line


def test_transcribing_onnx_without_a_model_folder_is_refused(files, student, tmp_path):
    _, bpe, _ = files
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"")
    line = error_line(
        streamkd("transcribe", "--checkpoint", student, "--bpe-model", bpe, "--method", "ctc-greedy", "--onnx", wav)
    )
    assert "--onnx needs --model-dir" in line


def test_transcribing_a_folder_without_audio_names_it(files, student, tmp_path):
    _, bpe, _ = files
    empty = tmp_path / "empty"
    empty.mkdir()
    line = error_line(
        streamkd("transcribe", "--checkpoint", student, "--bpe-model", bpe, "--method", "ctc-greedy", empty)
    )
    assert f"no audio files in {empty}" in line


def test_decoding_with_another_bpe_vocabulary_than_the_model_is_refused(files, tmp_path):
    d, _, cuts = files
    other_bpe = train_tiny_bpe(tmp_path, ["SOME OTHER WORDS ENTIRELY", "AND MORE OF THEM"] * 10, vocab_size=30)
    line = error_line(streamkd(*decode_args(d, other_bpe, cuts, d / "model.pt")))
    assert str(d / "model.pt") in line and "vocab" in line.lower()


@pytest.mark.k2
def test_decoding_without_the_graph_a_method_needs_names_the_option(files):
    d, bpe, cuts = files
    args = list(decode_args(d, bpe, cuts, d / "model.pt"))
    args[args.index("ctc-greedy")] = "ctc-1best"
    assert "decoding method 'ctc-1best' needs --graph (ctc_topo)" in error_line(streamkd(*args))


@pytest.mark.k2
def test_decoding_with_a_graph_of_another_bpe_model_is_refused(files, tmp_path):
    d, bpe, cuts = files
    other_bpe = train_tiny_bpe(tmp_path, ["SOME OTHER WORDS ENTIRELY", "AND MORE OF THEM"] * 10, vocab_size=30)
    graph = tmp_path / "ctc_topo.pt"
    assert streamkd("compile-ctc-topo", "--bpe-model", other_bpe, "--out", graph).returncode == 0
    args = list(decode_args(d, bpe, cuts, d / "model.pt"))
    args[args.index("ctc-greedy")] = "ctc-1best"
    line = error_line(streamkd(*args, "--graph", graph))
    assert f"{graph}: the CTC topology covers tokens up to 29" in line and "a different BPE model?" in line


@pytest.mark.k2
@pytest.mark.parametrize(
    "arpa_text, message",
    [
        ("just some text\n", "is not an ARPA file (no \\data\\ section)"),
        ("\\data\\\nngram 1=1\n\n\\1-grams:\nlonely\n\n\\end\\\n", ":5: malformed unigram line 'lonely'"),
        ("\\data\\\nngram 1=0\n\n\\1-grams:\n\n\\end\\\n", "the ARPA file has no unigrams"),
    ],
    ids=["not-arpa", "malformed-unigram", "no-unigrams"],
)
def test_a_bad_arpa_file_is_named_with_what_is_wrong(files, tmp_path, arpa_text, message):
    _, bpe, _ = files
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(arpa_text)
    line = error_line(streamkd("compile-hlg", "--bpe-model", bpe, "--arpa", arpa, "--out", tmp_path / "HLG.pt"))
    assert str(arpa) in line and message in line
    assert not (tmp_path / "HLG.pt").exists()


def test_training_on_a_set_left_empty_by_the_length_filter_names_the_file(files, tmp_path):
    d, bpe, cuts = files
    opt = dict(OPTIMISATION, max_utterance_seconds=0.01)  # every cut is longer: none is left
    line = error_line(streamkd(*train_args(tmp_path / "run", bpe, cuts, TINY_ENCODER, opt)))
    assert f"{cuts}: no training cut left at most 0.01 s long (training.max_utterance_seconds)" in line
    assert not (tmp_path / "run" / "model.pt").exists()


def test_analysing_branches_of_a_run_without_them_is_refused(files, tmp_path):
    d, _, cuts = files
    run = tmp_path / "none-chunk2-seed1"
    run.mkdir()
    save_model(run / "model.pt", build_asr_model(dict(TINY_ENCODER, feat_dim=80), 24, {"type": "ctc"}))
    (run / "train_summary.json").write_text(json.dumps({"method": "none", "role": "student"}))
    line = error_line(
        streamkd(
            "analyse-aux", "--run-dir", run, "--teacher", d / "model.pt", "--cuts", cuts, "--out", tmp_path / "a.json"
        )
    )
    assert f"{run} is a 'none' run: only aux and layer runs have branches" in line


def test_archiving_a_record_whose_files_are_missing_names_them(tmp_path):
    from results_factory import utterance_errors, write_run

    exp = tmp_path / "exp"
    record = write_run(exp, "none-chunk4-seed1", errors={"test": utterance_errors(3)})
    errors_file = next((exp / "none-chunk4-seed1").rglob("errors.jsonl"))
    errors_file.unlink()
    line = error_line(streamkd("archive-records", "--exp-dir", exp, "--out-dir", tmp_path / "archive"))
    assert str(record) in line and "does not exist" in line
