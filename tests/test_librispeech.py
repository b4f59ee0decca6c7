"""The LibriSpeech path: lhotse's real prepare_librispeech over a tiny fake corpus in the
real layout, the corpus rule variant, speed perturbation, on-the-fly features, generalised
test sets, and the whole pipeline to a WER table."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from lhotse import load_manifest

from streamkd.data.corpora import CORPORA, LIBRISPEECH_TESTS, corpus_spec
from streamkd.data.librispeech import prepare_librispeech_corpus

from fakes import make_fake_librispeech
from helpers import REPO, job_counts, run_snakemake

LS100_PARTS = ("train-clean-100",) + LIBRISPEECH_TESTS


@pytest.fixture(scope="module")
def fake_ls100(tmp_path_factory) -> Path:
    """Folder holding LibriSpeech/ with the parts librispeech-100 needs (2 speakers x 2
    chapters x 2 utterances per part, 3 per chapter in train)."""
    root = tmp_path_factory.mktemp("corpora")
    make_fake_librispeech(root, ["train-clean-100"], utterances=3)
    make_fake_librispeech(root, LIBRISPEECH_TESTS, speakers=(40, 41))
    return root


def transcripts(corpus: Path, part: str) -> dict:
    lines = [line for t in sorted((corpus / part).rglob("*.trans.txt")) for line in t.read_text().splitlines()]
    return dict(line.split(" ", 1) for line in lines)


def test_prepare_librispeech_writes_every_pipeline_split(fake_ls100, tmp_path):
    written = prepare_librispeech_corpus(fake_ls100, "librispeech-100", tmp_path, num_jobs=2)
    assert set(written) == {"train", "dev"} | set(LIBRISPEECH_TESTS)
    corpus = fake_ls100 / "LibriSpeech"
    for split, (rec_path, sup_path) in written.items():
        assert rec_path.name == f"librispeech-100_recordings_{split}.jsonl.gz"
        recordings, supervisions = load_manifest(rec_path), load_manifest(sup_path)
        parts = corpus_spec("librispeech-100").parts_of(split)
        expected = {k: v for part in parts for k, v in transcripts(corpus, part).items()}
        assert {s.id: s.text for s in supervisions} == expected
        assert set(recordings.ids) == set(expected)
        assert all(r.sampling_rate == 16000 and r.duration > 0.5 for r in recordings)
    # dev combines dev-clean and dev-other; train is train-clean-100 alone.
    assert len(load_manifest(written["dev"][1])) == 16
    assert len(load_manifest(written["train"][1])) == 12
    # lhotse's own per-part manifests are kept for the next run.
    assert (tmp_path / "librispeech-parts" / "librispeech_supervisions_test-other.jsonl.gz").is_file()


def test_the_corpus_dir_may_be_librispeech_itself(fake_ls100, tmp_path):
    written = prepare_librispeech_corpus(fake_ls100 / "LibriSpeech", "librispeech-100", tmp_path)
    assert len(load_manifest(written["test-clean"][1])) == 8


def test_cached_part_manifests_of_another_corpus_copy_are_not_reused(fake_ls100, tmp_path):
    other = tmp_path / "other"
    make_fake_librispeech(other, LS100_PARTS, speakers=(77,), chapters=(1,), utterances=1)
    out = tmp_path / "manifests"
    prepare_librispeech_corpus(fake_ls100, "librispeech-100", out)
    written = prepare_librispeech_corpus(other, "librispeech-100", out)
    assert [s.id for s in load_manifest(written["train"][1])] == ["77-1-0000"]


def test_missing_parts_are_named_with_the_way_to_get_them(tmp_path):
    make_fake_librispeech(tmp_path, ["train-clean-100", "dev-clean"])
    with pytest.raises(FileNotFoundError, match="dev-other, test-clean, test-other") as err:
        prepare_librispeech_corpus(tmp_path, "librispeech-100", tmp_path / "out")
    assert "download_librispeech" in str(err.value)


def test_mini_librispeech_validates_and_tests_on_dev_clean_2(tmp_path):
    make_fake_librispeech(tmp_path, ["train-clean-5", "dev-clean-2"])
    written = prepare_librispeech_corpus(tmp_path, "mini-librispeech", tmp_path / "out")
    assert set(written) == {"train", "dev", "dev-clean-2"}
    assert [s.id for s in load_manifest(written["dev"][1])] == [s.id for s in load_manifest(written["dev-clean-2"][1])]


def test_every_librispeech_corpus_names_its_parts():
    assert corpus_spec("librispeech-960").train_parts == ("train-clean-100", "train-clean-360", "train-other-500")
    for name, spec in CORPORA.items():
        assert spec.splits[:2] == ("train", "dev")
        assert set(spec.download_parts) >= set(spec.all_parts) or name == "embedded"


# -- through the workflow ----------------------------------------------------------------------


def write_config(tmp_path: Path, corpus_dir: Path, features: dict, **extra) -> Path:
    """The micro config with a LibriSpeech corpus (as a user's config file would be)."""
    config = yaml.safe_load((REPO / "workflow/configs/micro.yaml").read_text())
    config["corpus"] = {"name": "librispeech-100", "dir": str(corpus_dir), "num_jobs": 2}
    config["features"] = {"num_jobs": 1, **features}
    config["bpe"] = {"vocab_size": 40}
    # The baseline student and one decoding method: this exercises the corpus, not the KD grid.
    config["grid"] = {**config["grid"], "methods": ["none"]}
    config["decoding"] = {"test_sets": list(LIBRISPEECH_TESTS), "methods": ["ctc-1best"]}
    # A 40-piece BPE model of 16 training sentences misses letters of some held-out words: the
    # data check excludes those utterances (and reports them) instead of failing on them.
    config["data_check"] = {"max_excluded_fraction": 0.25, "allow_test_exclusion": True}
    config.update(extra)
    path = tmp_path / "librispeech-test.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(tmp_path: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    return run_snakemake(tmp_path, "--cores", "2", *args, configfiles=[config])


@pytest.mark.k2
def test_librispeech_dry_run_has_a_job_per_split_and_test_set(fake_ls100, tmp_path):
    result = snakemake(tmp_path, write_config(tmp_path, fake_ls100, {}), "-n", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["prepare_librispeech"] == 1
    assert "prepare_corpus" not in counts and "download_librispeech" not in counts  # download is opt-in
    assert counts["compute_fbank"] == 2 + 4  # train, dev and the four test sets
    assert counts["decode"] == counts["score"] == 2 * 4


@pytest.mark.slow
def test_micro_pipeline_on_fake_librispeech_with_speed_perturbation_and_on_the_fly_features(fake_ls100, tmp_path):
    config = write_config(tmp_path, fake_ls100, {"speed_perturb": True, "on_the_fly": True})
    result = snakemake(tmp_path, config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    train = load_manifest(tmp_path / "data/fbank/cuts_train.jsonl.gz")
    assert len(train) == 3 * 12 and not any(c.has_features for c in train)
    assert sorted({c.id.rsplit("_sp", 1)[1] for c in train if "_sp" in c.id}) == ["0.9", "1.1"]
    test = load_manifest(tmp_path / "data/fbank/cuts_test-other.jsonl.gz")
    assert len(test) == 8 and not any("_sp" in c.id for c in test)  # only train is perturbed

    table = pd.read_csv(tmp_path / "results/tables/wer.csv")
    assert set(table["test_set"]) == set(LIBRISPEECH_TESTS)
    assert set(table["method"]) == {"teacher", "none"}
    assert table["wer_mean"].between(0, 1000).all()
    record = json.loads((tmp_path / "exp/teacher/record.json").read_text())
    assert set(record["wer"]) == set(LIBRISPEECH_TESTS)
