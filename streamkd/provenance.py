"""SHA-256 digests of what a run was made from: cut manifests, feature archives, BPE model, settings.

A training summary keeps them under ``provenance`` (:func:`training_provenance`); a run
record copies them and adds the test sets it scored (:func:`scored_set_digests`).

Feature archives can be large (LibriSpeech's run to tens of GB), so a file's digest is
remembered by ``(path, size, mtime_ns)``: in this process, and for files of at least
:data:`SIDECAR_MIN_BYTES` in a sidecar ``.<name>.sha256.json`` beside the file, which later
jobs reuse while the file's size and modification time are unchanged.

A gzipped manifest is digested by its content: gzip's header stores the time it was
written, so the same cuts written twice would otherwise get two digests.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Tuple

from streamkd.utils import file_digest, source_commit, stream_digest, write_json

log = logging.getLogger(__name__)

SIDECAR_MIN_BYTES = 64 << 20
GZIP_MAGIC = b"\x1f\x8b"
_DIGESTS: Dict[Tuple[str, int, int], str] = {}


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256.json")


def content_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, or of its decompressed bytes if it is gzipped."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == GZIP_MAGIC
    if not gzipped:
        return file_digest(path)
    with gzip.open(path, "rb") as f:
        return stream_digest(f)


def cached_file_digest(path: Path) -> str:
    """:func:`content_digest`, reused while the file's size and mtime stay the same."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    big = stat.st_size >= SIDECAR_MIN_BYTES
    sidecar = _sidecar(path)
    stored: Any = None
    if big and sidecar.is_file():
        try:
            stored = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            stored = None
    # "of": sidecars written before gzipped files were digested by content hold the file's digest.
    if isinstance(stored, dict) and (stored.get("size"), stored.get("mtime_ns"), stored.get("of")) == (
        *key[1:],
        "content",
    ):
        digest = str(stored["sha256"])
    else:
        log.info("computing the SHA-256 of %s (%.1f MB)", path, stat.st_size / 1e6)
        digest = content_digest(path)
        if big:
            try:
                write_json(
                    sidecar, {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "of": "content", "sha256": digest}
                )
            except OSError as e:  # a read-only data folder: the digest is still right, only not kept
                log.warning("cannot keep the digest of %s in %s: %s", path, sidecar, e)
    _DIGESTS[key] = digest
    return digest


def _feature_files(cut) -> Iterator[Path]:
    """The files holding a cut's features (a MixedCut's tracks each have their own)."""
    for track in getattr(cut, "tracks", None) or ():
        yield from _feature_files(track.cut)
    features = getattr(cut, "features", None)
    if features is None or not features.storage_path:
        return
    storage = Path(features.storage_path)
    # One archive file (lilcom_chunky, hdf5) or a folder with one file per cut (lilcom_files).
    yield storage if not storage.is_dir() else storage / features.storage_key


def feature_archives(cuts_path: Path) -> list:
    """The unique feature files the cuts of a manifest read, sorted."""
    from lhotse import load_manifest_lazy

    return sorted({f for cut in load_manifest_lazy(cuts_path) for f in _feature_files(cut)}, key=str)


def combined_digest(digests: Iterable[str]) -> str:
    """One digest of several files' digests, independent of their order and paths."""
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def features_digest(cuts_path: Path) -> Optional[str]:
    """The combined digest of every feature archive the cuts reference; None if they have none."""
    archives = feature_archives(cuts_path)
    if not archives:
        return None
    missing = [str(p) for p in archives if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{cuts_path} names feature archive(s) that do not exist: {', '.join(missing[:3])}")
    return combined_digest(cached_file_digest(p) for p in archives)


def settings_digest(settings: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of a settings mapping."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def training_provenance(
    train_cuts: Path, dev_cuts: Path, bpe_model: Path, training_settings: Mapping[str, Any]
) -> Dict[str, Optional[str]]:
    """What a training summary's ``provenance`` holds.

    ``training_settings`` are the run's resolved training options (encoder, optimisation,
    head, KD, seed, ...): the workflow passes the config to ``streamkd train`` as options, not
    as a file, so their canonical JSON is digested (``training_settings_sha256``).
    """
    return {
        "train_cuts_sha256": cached_file_digest(train_cuts),
        "train_features_sha256": features_digest(train_cuts),
        "dev_cuts_sha256": cached_file_digest(dev_cuts),
        "dev_features_sha256": features_digest(dev_cuts),
        "bpe_model_sha256": cached_file_digest(bpe_model),
        "training_settings_sha256": settings_digest(training_settings),
        "source_commit": source_commit(),
    }


# The keys of a training summary's provenance (None in a record of an older run).
PROVENANCE_FIELDS = (
    "train_cuts_sha256",
    "train_features_sha256",
    "dev_cuts_sha256",
    "dev_features_sha256",
    "bpe_model_sha256",
    "training_settings_sha256",
    "source_commit",
)


def scored_set_digests(cuts: Mapping[str, Path]) -> Dict[str, Dict[str, Optional[str]]]:
    """``{"test_cuts_sha256": {test_set: digest}, "test_features_sha256": {...}}`` of scored test sets."""
    return {
        "test_cuts_sha256": {t: cached_file_digest(p) for t, p in cuts.items()},
        "test_features_sha256": {t: features_digest(p) for t, p in cuts.items()},
    }
