"""Bring your own corpus (corpus.name: manifests): lhotse manifests under split names of the
user's choosing, checked at start-up and when prepared, and the whole pipeline on them, with
checkpoint averaging and the progress view on the same run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet, load_manifest

from streamkd.config import ConfigError, validate_config
from streamkd.data.corpora import pipeline_splits
from streamkd.data.manifests import CorpusManifestError, prepare_manifests_corpus

from fakes import SAMPLING_RATE, render, sentence, write_tone_corpus
from helpers import REPO, job_counts, run_snakemake


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    """A tone corpus under its own split names; one split as cuts instead of a manifest pair."""
    root = tmp_path_factory.mktemp("tones")
    write_tone_corpus(root, {"tones-a": 24, "tones-b": 24, "tones-valid": 8, "tones-eval": 8, "tones-extra": 6})
    cuts = CutSet.from_manifests(
        recordings=load_manifest(root / "recordings_tones-extra.jsonl.gz"),
        supervisions=load_manifest(root / "supervisions_tones-extra.jsonl.gz"),
    )
    cuts.to_file(root / "cuts_tones-extra.jsonl.gz")
    return root


def corpus_section(root: Path, **extra) -> dict:
    def pair(split):
        return {
            "recordings": str(root / f"recordings_{split}.jsonl.gz"),
            "supervisions": str(root / f"supervisions_{split}.jsonl.gz"),
        }

    return {
        "name": "manifests",
        "splits": {
            "tones-a": pair("tones-a"),
            "tones-b": pair("tones-b"),
            "tones-valid": pair("tones-valid"),
            "tones-eval": pair("tones-eval"),
            "tones-extra": {"cuts": str(root / "cuts_tones-extra.jsonl.gz")},
        },
        "train": ["tones-a", "tones-b"],
        "dev": ["tones-valid"],
        **extra,
    }


def experiment_config(root: Path, **corpus_extra) -> dict:
    """The micro config on the tone corpus: teacher and baseline student, three epochs each."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    micro = yaml.safe_load((REPO / "workflow/configs/micro.yaml").read_text())
    for key, value in micro.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    config["corpus"] = corpus_section(root, **corpus_extra)
    config["bpe"] = {"vocab_size": 40}
    for role in ("teacher", "student"):
        config["training"][role] = {**config["training"][role], "num_epochs": 3, "warmup_steps": 10}
    config["grid"] = {**config["grid"], "methods": ["none"]}
    config["decoding"] = {"test_sets": ["tones-eval", "tones-extra"], "methods": ["ctc-1best"]}
    return config


# -- start-up checks ----------------------------------------------------------------------------


def test_declared_splits_become_the_pipeline_splits(tones):
    config = experiment_config(tones)
    validate_config(config)
    # Training splits are combined into train and are no test sets; the dev split can be one.
    assert pipeline_splits(config["corpus"]) == ("train", "dev", "tones-valid", "tones-eval", "tones-extra")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["corpus"].update(train=["tones-a", "tones-c"]), "corpus.train: split 'tones-c' is not declared"),
        (
            lambda c: c["corpus"]["splits"]["tones-b"].update(recordings="missing/recs.jsonl.gz"),
            "corpus.splits.tones-b.recordings: file not found: missing/recs.jsonl.gz",
        ),
        (
            lambda c: c["decoding"].update(test_sets=["tones-a"]),
            "decoding.test_sets: tones-a not in corpus 'manifests'",
        ),
        (lambda c: c["corpus"].pop("dev"), "'dev' is a required property"),
        (lambda c: c["corpus"]["splits"]["tones-eval"].pop("supervisions"), "corpus.splits.tones-eval"),
    ],
)
def test_start_up_names_the_missing_split_or_file(tones, change, message):
    config = experiment_config(tones)
    change(config)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert message in str(err.value)


# -- preparing: what is refused and what is resampled ---------------------------------------------


def test_prepare_combines_training_splits_and_reads_cuts(tones, tmp_path):
    written = prepare_manifests_corpus(corpus_section(tones), tmp_path)
    assert set(written) == {"train", "dev", "tones-valid", "tones-eval", "tones-extra"}
    train = load_manifest(written["train"][1])
    assert len(train) == 48 and {s.id.split("-0")[0] for s in train} == {"tones-a", "tones-b"}
    extra = load_manifest(written["tones-extra"][1])
    assert sorted(s.text for s in extra) == sorted(sentence(f"tones-extra-{i:04d}") for i in range(6))
    assert len(load_manifest(written["tones-extra"][0])) == 6


def _write_pair(root: Path, name: str, rate: int, texts) -> dict:
    recordings, supervisions = [], []
    for i, text in enumerate(texts):
        utt = f"{name}-{i}"
        audio = render(text or "ALPHA", utt)[:: SAMPLING_RATE // rate]
        wav = root / f"{utt}.wav"
        sf.write(wav, audio, rate, subtype="PCM_16")
        rec = Recording.from_file(wav, recording_id=utt)
        recordings.append(rec)
        supervisions.append(SupervisionSegment(id=utt, recording_id=utt, start=0.0, duration=rec.duration, text=text))
    RecordingSet.from_recordings(recordings).to_file(root / f"{name}_rec.jsonl.gz")
    SupervisionSet.from_segments(supervisions).to_file(root / f"{name}_sup.jsonl.gz")
    return {"recordings": str(root / f"{name}_rec.jsonl.gz"), "supervisions": str(root / f"{name}_sup.jsonl.gz")}


def _own(splits: dict, **extra) -> dict:
    names = list(splits)
    return {"name": "manifests", "splits": splits, "train": names[:1], "dev": names[-1:], **extra}


def test_recordings_at_8_khz_are_resampled_or_refused(tmp_path):
    splits = {"narrow": _write_pair(tmp_path, "narrow", 8000, ["ALPHA BRAVO", "CHARLIE"])}
    with pytest.raises(CorpusManifestError, match=r"corpus.splits.narrow .*16000 Hz, found 2 at 8000 Hz"):
        prepare_manifests_corpus(_own(splits, resample=False), tmp_path / "refused")
    written = prepare_manifests_corpus(_own(splits), tmp_path / "resampled")
    recordings = load_manifest(written["train"][0])
    assert {r.sampling_rate for r in recordings} == {16000}
    audio = recordings[0].load_audio()
    assert audio.shape[1] == pytest.approx(recordings[0].duration * 16000, abs=2)


def test_a_split_without_supervisions_or_text_is_refused(tmp_path):
    good = _write_pair(tmp_path, "good", 16000, ["ALPHA"])
    empty = {**good, "supervisions": str(tmp_path / "empty_sup.jsonl.gz")}
    SupervisionSet.from_segments([]).to_file(empty["supervisions"])
    with pytest.raises(CorpusManifestError, match=r"corpus.splits.empty \(.*empty_sup.jsonl.gz\): no supervisions"):
        prepare_manifests_corpus(_own({"good": good, "empty": empty}), tmp_path / "out")
    silent = _write_pair(tmp_path, "silent", 16000, ["ALPHA", " "])
    with pytest.raises(CorpusManifestError, match=r"corpus.splits.silent .*1 supervision\(s\) without text: silent-1"):
        prepare_manifests_corpus(_own({"good": good, "silent": silent}), tmp_path / "out")


def test_a_manifest_of_the_wrong_kind_is_named(tmp_path):
    good = _write_pair(tmp_path, "good", 16000, ["ALPHA"])
    swapped = {"recordings": good["supervisions"], "supervisions": good["recordings"]}
    with pytest.raises(
        CorpusManifestError,
        match=r"corpus.splits.swapped.recordings: .* holds a SupervisionSet, expected a RecordingSet",
    ):
        prepare_manifests_corpus(_own({"swapped": swapped, "good": good}), tmp_path / "out")


# -- through the workflow -----------------------------------------------------------------------


def write_config(directory: Path, config: dict) -> Path:
    path = directory / "own-corpus.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.k2
def test_dry_run_prepares_once_and_decodes_each_declared_test_split(tones, tmp_path):
    config = experiment_config(tones)
    config["decoding"]["average_last"] = 2
    result = run_snakemake(tmp_path, "--cores", "1", "-n", "--quiet", configfiles=[write_config(tmp_path, config)])
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["prepare_manifests"] == 1 and "prepare_corpus" not in counts
    assert counts["compute_fbank"] == 2 + 2  # train, dev, tones-eval, tones-extra
    assert counts["average_checkpoints"] == 2  # teacher and student
    assert counts["decode"] == counts["score"] == 2 * 2


def _snakemake(directory: Path, *configs: Path, extra=()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "2",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(directory),
            "--configfile",
            *map(str, configs),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=1500,
    )


def _wers(directory: Path) -> dict:
    runs = pd.read_csv(directory / "tables/runs.csv")
    return {(r.run, r.test_set, r.decoded_model): r.wer for r in runs.itertuples()}


@pytest.mark.slow
def test_pipeline_on_own_manifests_with_averaged_checkpoints_and_progress(tones, tmp_path):
    config_path = write_config(tmp_path, experiment_config(tones))
    final = _snakemake(tmp_path, config_path)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    exp = tmp_path / "exp"
    train = load_manifest(tmp_path / "data/fbank/cuts_train.jsonl.gz")
    assert len(train) == 48
    for run in ("teacher", "none-chunk4-seed1"):
        assert sorted(p.name for p in (exp / run / "checkpoints").glob("epoch-*.pt")) == [
            f"epoch-{e}.pt" for e in (1, 2, 3)
        ]
        # TensorBoard: one point per step of the loss and its ASR part, one per epoch of the dev losses.
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        board = EventAccumulator(str(exp / run / "tensorboard"))
        board.Reload()
        steps = [json.loads(line) for line in (exp / run / "train_steps.jsonl").read_text().splitlines()]
        assert [e.step for e in board.Scalars("train/loss")] == [s["step"] for s in steps]
        assert [e.value for e in board.Scalars("train/asr")] == pytest.approx([s["asr"] for s in steps], rel=1e-5)
        history = json.loads((exp / run / "train_summary.json").read_text())["history"]
        assert [e.value for e in board.Scalars("epoch/dev_asr_loss")] == pytest.approx(
            [h["dev_asr_loss"] for h in history], rel=1e-5
        )
        assert {"train/lr", "epoch/dev_loss", "epoch/train_loss"} <= set(board.Tags()["scalars"])
    record = json.loads((exp / "none-chunk4-seed1/record.json").read_text())
    assert record["decoded_model"] == "final" and set(record["wer"]) == {"tones-eval", "tones-extra"}

    progress = subprocess.run(
        [sys.executable, "-m", "streamkd.cli", "progress", str(exp), "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert progress.returncode == 0, progress.stderr
    lines = progress.stdout.splitlines()
    assert lines[1].split()[:3] == ["teacher", "finished", "3/3"]
    assert lines[2].split()[:3] == ["none-chunk4-seed1", "finished", "3/3"]
    print("\n" + progress.stdout)

    # Decode the same runs again with the average of the last two epochs' weights.
    overlay = tmp_path / "average-last-2.yaml"
    overlay.write_text(
        (REPO / "workflow/configs/average-last-3.yaml").read_text().replace("average_last: 3", "average_last: 2")
    )
    averaged = _snakemake(tmp_path, config_path, overlay, extra=("--config", "results_dir=results-avg2"))
    assert averaged.returncode == 0, averaged.stdout[-3000:] + averaged.stderr[-3000:]
    assert "train_teacher" not in averaged.stdout + averaged.stderr  # training is not repeated
    for run in ("teacher", "none-chunk4-seed1"):
        model = torch.load(exp / run / "model-avg-last-2.pt", map_location="cpu", weights_only=False)
        assert model["meta"]["averaged_epochs"] == [2, 3]
        assert (exp / run / "decode-avg-last-2/tones-eval-ctc-1best/wer.json").is_file()
        assert (exp / run / "decode/tones-eval-ctc-1best/wer.json").is_file()  # the final model's stay
    record = json.loads((exp / "none-chunk4-seed1/record.json").read_text())
    assert record["decoded_model"] == "avg-last-2"
    table = (tmp_path / "results-avg2/tables/wer.md").read_text()
    header = [h.strip() for h in table.splitlines()[2].strip("|").split("|")]
    assert header[:2] == ["Method", "Decoded model"]
    rows = [[c.strip() for c in line.strip("|").split("|")][:2] for line in table.splitlines()[4:6]]
    assert rows == [["teacher", "avg-last-2"], ["none", "avg-last-2"]]
    before, after = _wers(tmp_path / "results"), _wers(tmp_path / "results-avg2")
    for (run, test_set, _), wer in sorted(before.items()):
        print(f"{run:20s} {test_set:12s} WER final {wer:6.2f}  avg-last-2 {after[(run, test_set, 'avg-last-2')]:6.2f}")
    assert all(np.isfinite(v) for v in list(before.values()) + list(after.values()))
