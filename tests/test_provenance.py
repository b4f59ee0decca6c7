"""Digests of what a run was made from change with each input, and large files' digests are reused."""

import gzip
import json
import os
import time

import pytest
import torch

from streamkd import provenance
from streamkd.provenance import (
    PROVENANCE_FIELDS,
    cached_file_digest,
    content_digest,
    feature_archives,
    features_digest,
    training_provenance,
)
from streamkd.utils import file_digest

from helpers import write_feature_cuts

SETTINGS = {"role": "student", "encoder": {"d_model": 32}, "seed": 1}


@pytest.fixture
def inputs(tmp_path):
    torch.manual_seed(0)
    train = write_feature_cuts(tmp_path / "train", [torch.randn(n, 4) for n in (30, 40, 50)], ["A", "B", "C"])
    dev = write_feature_cuts(tmp_path / "dev", [torch.randn(20, 4)], ["D"], name="dev")
    bpe = tmp_path / "bpe.model"
    bpe.write_bytes(b"a tokenizer")
    return train, dev, bpe


def test_every_field_is_a_digest_and_changes_with_its_input(inputs, tmp_path):
    train, dev, bpe = inputs
    before = training_provenance(train, dev, bpe, SETTINGS)
    assert set(before) == set(PROVENANCE_FIELDS)
    assert before["train_cuts_sha256"] == content_digest(train) and before["bpe_model_sha256"] == file_digest(bpe)
    assert all(len(before[k]) == 64 for k in PROVENANCE_FIELDS if k != "source_commit")
    assert before["train_features_sha256"] != before["dev_features_sha256"]

    bpe.write_bytes(b"another tokenizer")
    after = training_provenance(train, dev, bpe, {**SETTINGS, "seed": 2})
    changed = {k for k in PROVENANCE_FIELDS if after[k] != before[k]}
    assert changed == {"bpe_model_sha256", "training_settings_sha256"}

    # Other features under the same cut ids: the archive's digest changes (the manifest may not).
    write_feature_cuts(tmp_path / "train", [torch.randn(n, 4) + 5 for n in (30, 40, 50)], ["A", "B", "C"])
    assert features_digest(train) != before["train_features_sha256"]


def test_a_manifest_of_fewer_cuts_has_another_digest_but_the_same_features(inputs, tmp_path):
    from lhotse import CutSet

    train, _, _ = inputs
    subset = tmp_path / "subset.jsonl.gz"
    CutSet.from_file(train).subset(first=2).to_file(subset)
    assert cached_file_digest(subset) != cached_file_digest(train)
    assert feature_archives(subset) == feature_archives(train) == [tmp_path / "train" / "cuts_feats.lca"]
    assert features_digest(subset) == features_digest(train)


def test_the_same_cuts_written_again_later_have_the_same_digest(inputs, tmp_path, monkeypatch):
    """gzip stores the time a file was written; a manifest's digest is of what it holds."""
    from lhotse import CutSet

    train, _, _ = inputs
    again = tmp_path / "again.jsonl.gz"
    cuts = CutSet.from_file(train)
    cuts.to_file(again)
    raw = {p: p.read_bytes() for p in (train, again)}
    # Rewritten a second later: the compressed bytes differ, the content does not.
    later = tmp_path / "later.jsonl.gz"
    written_at = time.time()
    monkeypatch.setattr(gzip.time, "time", lambda: written_at + 86400)
    cuts.to_file(later)
    monkeypatch.undo()
    assert later.read_bytes() != raw[again]
    assert content_digest(later) == content_digest(again) == content_digest(train)
    assert cached_file_digest(later) == cached_file_digest(train)
    # ...and a manifest that holds other cuts still has another digest.
    cuts.subset(first=2).to_file(later)
    assert content_digest(later) != content_digest(train)


def test_missing_feature_archive_is_named(inputs):
    train, _, _ = inputs
    (train.parent / "cuts_feats.lca").unlink()
    with pytest.raises(FileNotFoundError, match="cuts_feats.lca"):
        features_digest(train)


def test_a_large_files_digest_is_kept_beside_it_until_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "SIDECAR_MIN_BYTES", 0)
    archive = tmp_path / "feats.lca"
    archive.write_bytes(b"x" * 1000)
    digest = cached_file_digest(archive)
    sidecar = tmp_path / ".feats.lca.sha256.json"
    assert json.loads(sidecar.read_text())["sha256"] == digest == file_digest(archive)

    # A new process (no in-process memory) trusts the sidecar while size and mtime match...
    monkeypatch.setattr(provenance, "_DIGESTS", {})
    stored = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**stored, "sha256": "f" * 64}))
    assert cached_file_digest(archive) == "f" * 64
    # ...and hashes again once the file is rewritten.
    monkeypatch.setattr(provenance, "_DIGESTS", {})
    archive.write_bytes(b"y" * 1000)
    os.utime(archive, ns=(stored["mtime_ns"] + 10**9, stored["mtime_ns"] + 10**9))
    assert cached_file_digest(archive) == file_digest(archive) != digest
    assert json.loads(sidecar.read_text())["sha256"] == file_digest(archive)


def test_small_files_leave_no_sidecar(tmp_path):
    path = tmp_path / "cuts.jsonl.gz"
    path.write_bytes(b"small")
    assert cached_file_digest(path) == file_digest(path)
    assert [p.name for p in tmp_path.iterdir()] == ["cuts.jsonl.gz"]


def test_the_same_transcripts_give_the_same_bpe_model_file(tmp_path):
    """A retrained BPE model keeps its digest: no temporary file name is stored in it."""
    from streamkd.data.tokenizer import Tokenizer, train_bpe

    texts = ["THE CAT SAT ON THE MAT", "A DOG RAN IN THE PARK", "THE SUN IS OUT TODAY"] * 20
    first, second = tmp_path / "a" / "bpe.model", tmp_path / "b" / "bpe.model"
    train_bpe(texts, first, vocab_size=30)
    train_bpe(texts, second, vocab_size=30)
    assert first.read_bytes() == second.read_bytes()
    assert str(tmp_path).encode() not in first.read_bytes()
    assert Tokenizer(first).vocab_size == 30
    train_bpe(texts[:30] + ["QUITE DIFFERENT WORDS HERE"], second, vocab_size=30)
    assert file_digest(second) != file_digest(first)


def test_the_same_weights_saved_twice_are_one_model(tmp_path):
    """A teacher is named by its config and weights, not by its file's bytes (timings, names)."""
    from streamkd.model.asr import build_asr_model
    from streamkd.model.checkpoint import model_digest, save_model

    torch.manual_seed(0)
    model = build_asr_model({"d_model": 16, "num_layers": 1, "num_heads": 2, "ff_dim": 32}, vocab_size=10)
    save_model(tmp_path / "a.pt", model, meta={"train_seconds": 1.0})
    save_model(tmp_path / "b.pt", model, meta={"train_seconds": 2.0})
    assert file_digest(tmp_path / "a.pt") != file_digest(tmp_path / "b.pt")
    assert model_digest(tmp_path / "a.pt") == model_digest(tmp_path / "b.pt")
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-6
    save_model(tmp_path / "c.pt", model, meta={"train_seconds": 1.0})
    assert model_digest(tmp_path / "c.pt") != model_digest(tmp_path / "a.pt")
