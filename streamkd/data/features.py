"""80-dimensional log-mel filterbank features, computed and stored by lhotse (lilcom)."""

from __future__ import annotations

import logging
from pathlib import Path

from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter, load_manifest
from lhotse.qa import validate_recordings_and_supervisions

from streamkd.utils import atomic_path

log = logging.getLogger(__name__)


def compute_fbank(
    recordings_path: Path,
    supervisions_path: Path,
    cuts_path: Path,
    storage_dir: Path,
    num_mel_bins: int = 80,
    num_jobs: int = 1,
) -> CutSet:
    """Turn a recording/supervision manifest pair into a CutSet with precomputed features."""
    recordings = load_manifest(recordings_path)
    supervisions = load_manifest(supervisions_path)
    validate_recordings_and_supervisions(recordings, supervisions)
    cuts = (
        CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
        .trim_to_supervisions(keep_overlapping=False)
        .to_eager()
    )
    storage_dir.mkdir(parents=True, exist_ok=True)
    # The storage name carries the cut-manifest name so that splits never share an archive.
    storage_path = storage_dir / cuts_path.name.split(".")[0]
    log.info("computing %d-bin fbank for %d cuts -> %s", num_mel_bins, len(cuts), storage_path)
    cuts = cuts.compute_and_store_features(
        extractor=Fbank(FbankConfig(num_mel_bins=num_mel_bins)),
        storage_path=storage_path,
        num_jobs=num_jobs,
        storage_type=LilcomChunkyWriter,
    )
    with atomic_path(cuts_path) as tmp:
        cuts.to_file(tmp)
    return cuts
