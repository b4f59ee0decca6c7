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
