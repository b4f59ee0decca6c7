"""Bad data and bad calls through the real command line: counted, named, never silent.

The corpora here are built in the test from synthesised WAVs (tones in noise), turned into
features by ``streamkd compute-fbank`` and checked by ``streamkd check-data``.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet, load_manifest

from streamkd.data.check import CheckPolicy, check_cuts, frames_needed
from streamkd.data.tokenizer import Tokenizer
from streamkd.model.subsampling import input_frames_needed

from helpers import error_line, train_tiny_bpe, write_feature_cuts
from helpers import streamkd_cli as streamkd

SAMPLE_RATE = 16000
GOOD_TEXTS = ["THE CAT SAT ON THE MAT", "A DOG RAN HOME", "HELLO WORLD", "THE MAT IS RED", "A RED CAT"]


def write_wav(path: Path, seconds: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    samples = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    sf.write(str(path), samples.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")


def make_split(directory: Path, split: str, utterances):
    """Recording and supervision manifests over (id, seconds, text) utterances."""
    wav_dir = directory / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    recordings, supervisions = [], []
    for i, (utt_id, seconds, text) in enumerate(utterances):
        path = wav_dir / f"{utt_id}.wav"
        write_wav(path, seconds, i)
        recording = Recording.from_file(path, recording_id=utt_id)
        recordings.append(recording)
        supervisions.append(SupervisionSegment(utt_id, utt_id, 0.0, recording.duration, text=text))
    paths = directory / f"recordings_{split}.jsonl.gz", directory / f"supervisions_{split}.jsonl.gz"
    RecordingSet.from_recordings(recordings).to_file(paths[0])
    SupervisionSet.from_segments(supervisions).to_file(paths[1])
    return paths


def compute_fbank(directory: Path, split: str, recordings: Path, supervisions: Path):
    cuts = directory / f"cuts_{split}.jsonl.gz"
    result = streamkd(
        "compute-fbank",
        "--recordings",
        recordings,
        "--supervisions",
        supervisions,
        "--cuts",
        cuts,
        "--storage-dir",
        directory / "fbank",
    )
    return cuts, result


def check_data(directory: Path, split: str, kind: str, cuts: Path, bpe: Path, *extra):
    out = directory / f"cuts_{split}.checked.jsonl.gz"
    report = directory / f"check_{split}.json"
    result = streamkd(
        "check-data",
        "--cuts",
        cuts,
        "--bpe-model",
        bpe,
        "--split",
        split,
        "--kind",
        kind,
        "--out-cuts",
        out,
        "--report",
        report,
        *extra,
    )
    return out, report, result


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    return train_tiny_bpe(tmp_path_factory.mktemp("bpe"), GOOD_TEXTS * 20, vocab_size=30)


def test_lost_test_audio_is_named_by_compute_fbank_and_fails_the_check(tmp_path, bpe):
    utterances = [(f"ok-{i}", 1.0, text) for i, text in enumerate(GOOD_TEXTS[:3])]
    utterances += [("truncated", 1.0, GOOD_TEXTS[3]), ("deleted", 1.0, GOOD_TEXTS[4])]
    recordings, supervisions = make_split(tmp_path, "test", utterances)
    # The audio changes after the manifests were written.
    write_wav(tmp_path / "wav/truncated.wav", 0.4, 3)
    (tmp_path / "wav/deleted.wav").unlink()

    cuts, result = compute_fbank(tmp_path, "test", recordings, supervisions)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(c.id for c in load_manifest(cuts)) == ["ok-0", "ok-1", "ok-2"]
    assert "2 of 5 cuts have no features" in result.stderr
    assert "deleted: recording deleted: file not found" in result.stderr
    assert "truncated: recording truncated: file holds 6400 samples" in result.stderr

    args = ("--supervisions", supervisions, "--recordings", recordings)
    out, report, result = check_data(tmp_path, "test", "test", cuts, bpe, *args)
    line = error_line(result)
    assert "test set 2 bad utterance(s) in test" in line
    assert "deleted (unreadable_audio: recording deleted: file not found)" in line
    assert "truncated (unreadable_audio" in line and "allow_test_exclusion" in line
    assert not out.exists()
    assert json.loads(report.read_text())["excluded_by_reason"] == {"unreadable_audio": 2}

    out, report, result = check_data(tmp_path, "test", "test", cuts, bpe, *args, "--allow-test-exclusion")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(c.id for c in load_manifest(out)) == ["ok-0", "ok-1", "ok-2"]
    summary = json.loads(report.read_text())
    assert (summary["num_checked"], summary["num_kept"], summary["num_excluded"]) == (5, 3, 2)
    assert sorted(e["id"] for e in summary["excluded"]) == ["deleted", "truncated"]
    assert "data check test (test): 3 of 5 utterances kept, 2 excluded (40.00%; unreadable_audio=2)" in result.stderr


# Each bad training utterance and the reason it must be excluded for.
BAD_TRAINING = {
    "blip": (0.03, "HELLO", "too_short_for_frontend"),  # 3 input frames: no encoder frame
    "silent-text": (1.0, "", "empty_transcript"),
    "punctuation": (1.0, "... !", "empty_transcript"),
    "alien": (1.0, "HELLO ЖУК", "unknown_characters"),
    "rushed": (0.25, "THE CAT SAT ON THE MAT A DOG RAN HOME", "too_short_for_transcript"),
    "endless": (3.0, "A RED CAT", "too_long"),
}


@pytest.fixture(scope="module")
def training_split(tmp_path_factory):
    directory = tmp_path_factory.mktemp("train")
    good = [(f"good-{i}", 1.0 + 0.1 * i, GOOD_TEXTS[i % len(GOOD_TEXTS)]) for i in range(14)]
    bad = [(utt_id, seconds, text) for utt_id, (seconds, text, _) in BAD_TRAINING.items()]
    recordings, supervisions = make_split(directory, "train", good + bad)
    cuts, result = compute_fbank(directory, "train", recordings, supervisions)
    assert result.returncode == 0, result.stderr[-3000:]
    return directory, cuts, supervisions


def test_training_check_excludes_each_bad_utterance_for_its_reason(training_split, bpe):
    directory, cuts, supervisions = training_split
    out, report, result = check_data(
        directory,
        "train",
        "train",
        cuts,
        bpe,
        "--supervisions",
        supervisions,
        "--max-utterance-seconds",
        2.5,
        "--max-excluded-fraction",
        0.5,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(report.read_text())
    assert {e["id"]: e["reason"] for e in summary["excluded"]} == {k: v[2] for k, v in BAD_TRAINING.items()}
    assert (summary["num_checked"], summary["num_kept"]) == (20, 14)
    assert sorted(c.id for c in load_manifest(out)) == sorted(f"good-{i}" for i in range(14))
    assert "data check train (train): 14 of 20 utterances kept, 6 excluded (30.00%;" in result.stderr


def test_training_check_fails_when_too_large_a_share_is_excluded(training_split, bpe):
    directory, cuts, _ = training_split
    out, report, result = check_data(directory, "strict", "train", cuts, bpe, "--max-utterance-seconds", 2.5)
    line = error_line(result)
    assert "30.00% of strict excluded, more than data_check.max_excluded_fraction=0.02" in line
    assert "blip (too_short_for_frontend" in line and str(report) in line
    assert not out.exists()


def test_test_sets_keep_long_utterances(training_split, bpe):
    """Decoding has no length limit: only training drops utterances for being long."""
    directory, cuts, _ = training_split
    _, report, result = check_data(
        directory, "long", "test", cuts, bpe, "--max-utterance-seconds", 2.5, "--allow-test-exclusion"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reasons = {e["id"]: e["reason"] for e in json.loads(report.read_text())["excluded"]}
    assert "endless" not in reasons and reasons["blip"] == "too_short_for_frontend"


@pytest.mark.parametrize("head", ["ctc", "transducer", "transducer+ctc"])
def test_transcript_length_bound_is_exact(tmp_path, bpe, head):
    """The shortest input the loss accepts is kept; one input frame less is excluded."""
    tokenizer = Tokenizer(bpe)
    text = "THE CAT SAT ON THE MAT"
    tokens = tokenizer.encode([text])[0]
    needed = frames_needed(tokens, head)
    repeats = sum(a == b for a, b in zip(tokens, tokens[1:]))
    assert needed == (len(tokens) + repeats if "ctc" in head else len(tokens))
    shortest = input_frames_needed(needed)
    cuts = write_feature_cuts(tmp_path, [torch.zeros(shortest, 80), torch.zeros(shortest - 1, 80)], [text, text])
    report = check_cuts(load_manifest(cuts), tokenizer, CheckPolicy(kind="train", head=head), "train")
    assert report.kept == ["cuts-000"]
    assert [(e.cut_id, e.reason) for e in report.excluded] == [("cuts-001", "too_short_for_transcript")]


def test_repeated_tokens_need_a_frame_between_them_under_ctc():
    assert frames_needed([5, 5, 5, 7], "ctc") == 6
    assert frames_needed([5, 5, 5, 7], "transducer") == 4
    assert frames_needed([5, 6, 5], "transducer+ctc") == 3
