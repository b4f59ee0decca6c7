"""Bring your own corpus: prepared lhotse manifests, one pair (or one cut set) per split.

``corpus.name: manifests`` trains on manifests that lhotse's recipes (``lhotse prepare
<recipe>``) or the user's own scripts wrote. The config declares each split of the corpus and
which of them make up the pipeline's ``train`` and ``dev`` splits; every declared split that
is not trained on can be a test set (``decoding.test_sets``)::

    corpus:
      name: manifests
      splits:
        yes-train: {recordings: data/yesno/yesno_recordings_train.jsonl.gz,
                    supervisions: data/yesno/yesno_supervisions_train.jsonl.gz}
        yes-test: {cuts: data/yesno/cuts_test.jsonl.gz}
      train: [yes-train]
      dev: [yes-test]
      resample: true          # recordings at another rate than 16 kHz; false refuses them

At start-up (:func:`check_manifest_files`, called by the config validation) a missing or
undeclared split and a missing file are errors. :func:`prepare_manifests_corpus` (the
``prepare_manifests`` rule) reads every manifest and refuses, naming split and file, a
manifest of the wrong kind, a split without supervisions, supervisions without text or
without their recording, and, with ``resample: false``, recordings not at 16 kHz; with
``resample: true`` (the default) those recordings are resampled to 16 kHz by lhotse as the
audio is read. It writes one recording and one supervision manifest per pipeline split,
named like the other corpora's (``manifests_recordings_<split>.jsonl.gz``).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

from streamkd.utils import atomic_path

log = logging.getLogger(__name__)

NAME = "manifests"
SAMPLING_RATE = 16000  # what the fbank front-end and every model here expect
KINDS = ("recordings", "supervisions", "cuts")


class CorpusManifestError(ValueError):
    """A declared manifest corpus is incomplete or holds something the pipeline cannot use."""


def _files(entry: Mapping[str, Any]) -> Dict[str, str]:
    return {kind: entry[kind] for kind in KINDS if kind in entry}


def check_manifest_files(corpus: Mapping[str, Any], source: str = "config") -> None:
    """The cheap start-up checks: train/dev name declared splits, every declared file exists."""
    splits = corpus.get("splits") or {}
    for role in ("train", "dev"):
        for name in corpus.get(role) or ():
            if name not in splits:
                raise CorpusManifestError(
                    f"{source}: corpus.{role}: split {name!r} is not declared under corpus.splits "
                    f"(declared: {', '.join(splits) or 'none'})"
                )
    for name, entry in splits.items():
        for kind, path in _files(entry).items():
            if not Path(path).is_file():
                raise CorpusManifestError(f"{source}: corpus.splits.{name}.{kind}: file not found: {path}")


def _load(path: str, expected: type, where: str):
    from lhotse import load_manifest

    try:
        manifest = load_manifest(path)
    except Exception as e:  # lhotse raises several types for unreadable or foreign files
        raise CorpusManifestError(f"{where}: cannot read {path} as a lhotse manifest: {e}") from e
    if not isinstance(manifest, expected) and not len(manifest):
        manifest = load_manifest(path, manifest_cls=expected)  # an empty file has no kind of its own
    if not isinstance(manifest, expected):
        raise CorpusManifestError(f"{where}: {path} holds a {type(manifest).__name__}, expected a {expected.__name__}")
    return manifest


def load_split(name: str, entry: Mapping[str, Any]):
    """(RecordingSet, SupervisionSet) of one declared split, from a pair or from cuts."""
    from lhotse import CutSet, RecordingSet, SupervisionSet

    where = f"corpus.splits.{name}"
    if "cuts" in entry:
        cuts = _load(entry["cuts"], CutSet, f"{where}.cuts")
        recordings, supervisions, _ = cuts.decompose()
        if recordings is None:
            raise CorpusManifestError(f"{where}.cuts: the cuts in {entry['cuts']} have no recordings (audio)")
        return recordings, supervisions or SupervisionSet.from_segments([]), entry["cuts"]
    recordings = _load(entry["recordings"], RecordingSet, f"{where}.recordings")
    supervisions = _load(entry["supervisions"], SupervisionSet, f"{where}.supervisions")
    return recordings, supervisions, entry["supervisions"]


def _examples(ids: List[str]) -> str:
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def check_split(name: str, recordings, supervisions, source: str, resample: bool):
    """Refuse what the pipeline cannot train or score on; returns the recordings (resampled if asked)."""
    where = f"corpus.splits.{name} ({source})"
    if not len(supervisions):
        raise CorpusManifestError(f"{where}: no supervisions: nothing to train on or score")
    no_text = [s.id for s in supervisions if not (s.text or "").strip()]
    if no_text:
        raise CorpusManifestError(f"{where}: {len(no_text)} supervision(s) without text: {_examples(no_text)}")
    recording_ids = set(recordings.ids)
    orphans = [s.id for s in supervisions if s.recording_id not in recording_ids]
    if orphans:
        raise CorpusManifestError(
            f"{where}: {len(orphans)} supervision(s) name a recording the split does not have: {_examples(orphans)}"
        )
    rates = Counter(r.sampling_rate for r in recordings)
    other = {rate: n for rate, n in rates.items() if rate != SAMPLING_RATE}
    if other:
        described = ", ".join(f"{n} at {rate} Hz" for rate, n in sorted(other.items()))
        if not resample:
            raise CorpusManifestError(
                f"{where}: recordings must be at {SAMPLING_RATE} Hz, found {described} "
                "(set corpus.resample: true to resample them)"
            )
        log.info("%s: resampling %s to %d Hz", where, described, SAMPLING_RATE)
        recordings = recordings.resample(SAMPLING_RATE)
    return recordings


def prepare_manifests_corpus(corpus: Mapping[str, Any], out_dir: Path) -> Dict[str, Tuple[Path, Path]]:
    """Check every declared split and write the pipeline splits' manifests; returns their paths."""
    from lhotse import RecordingSet, SupervisionSet

    from streamkd.data.corpora import spec_from_config

    check_manifest_files(corpus, source="corpus")
    spec = spec_from_config(corpus)
    resample = corpus.get("resample", True)
    loaded = {}
    for part in spec.all_parts:
        recordings, supervisions, source = load_split(part, corpus["splits"][part])
        loaded[part] = (check_split(part, recordings, supervisions, source, resample), supervisions)
    out_dir = Path(out_dir)
    written = {}
    for split in spec.splits:
        parts = spec.parts_of(split)
        recordings = RecordingSet.from_recordings(r for p in parts for r in loaded[p][0])
        supervisions = SupervisionSet.from_segments(s for p in parts for s in loaded[p][1])
        written[split] = write_split(out_dir, NAME, split, parts, recordings, supervisions)
    return written


def write_split(out_dir: Path, corpus_name: str, split: str, parts, recordings, supervisions) -> Tuple[Path, Path]:
    """Write one pipeline split's recording and supervision manifests atomically; returns their paths."""
    paths = (
        out_dir / f"{corpus_name}_recordings_{split}.jsonl.gz",
        out_dir / f"{corpus_name}_supervisions_{split}.jsonl.gz",
    )
    for manifest, path in zip((recordings, supervisions), paths):
        with atomic_path(path) as tmp:
            manifest.to_file(tmp)
    hours = sum(s.duration for s in supervisions) / 3600
    log.info("%s: %d utterances, %.2f h from %s", split, len(supervisions), hours, ", ".join(parts))
    return paths
