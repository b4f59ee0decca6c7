"""80-dimensional log-mel filterbank features, computed and stored by lhotse (lilcom).

With ``on_the_fly`` the cut manifest is written without features and the data loaders
compute the same fbank from the audio while training and decoding (no feature storage, at
the cost of CPU time in every epoch). With ``speed_perturb`` every cut gets two copies with
the speed changed by 0.9 and 1.1 (lhotse's resampling-based perturbation, as in Kaldi and
icefall recipes), so the set is three times as large; the workflow applies it to train only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter, load_manifest
from lhotse.qa import validate_recordings_and_supervisions

from streamkd.data.embedded import recording_problem
from streamkd.utils import atomic_path

log = logging.getLogger(__name__)

SPEED_PERTURB_FACTORS = (0.9, 1.1)


def compute_fbank(
    recordings_path: Path,
    supervisions_path: Path,
    cuts_path: Path,
    storage_dir: Path,
    num_mel_bins: int = 80,
    num_jobs: int = 1,
    speed_perturb: bool = False,
    on_the_fly: bool = False,
) -> CutSet:
    """Turn a recording/supervision manifest pair into a CutSet with precomputed features
    (or, with ``on_the_fly``, one that the loaders compute features for)."""
    recordings = load_manifest(recordings_path)
    supervisions = load_manifest(supervisions_path)
    validate_recordings_and_supervisions(recordings, supervisions)
    cuts = (
        CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
        .trim_to_supervisions(keep_overlapping=False)
        .to_eager()
    )
    if speed_perturb:
        original = cuts
        for factor in SPEED_PERTURB_FACTORS:
            cuts = cuts + original.perturb_speed(factor)
        cuts = cuts.to_eager()
        log.info("speed perturbation %s: %d -> %d cuts", SPEED_PERTURB_FACTORS, len(original), len(cuts))
    recording_of = {c.id: c.recording_id for c in cuts}
    if on_the_fly:
        log.info("%d cuts without stored features (fbank is computed on the fly) -> %s", len(cuts), cuts_path)
        with atomic_path(cuts_path) as tmp:
            cuts.to_file(tmp)
        return cuts
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
    report_dropped_cuts(recording_of, cuts, recordings)
    with atomic_path(cuts_path) as tmp:
        cuts.to_file(tmp)
    return cuts


def report_dropped_cuts(recording_of: dict, cuts: CutSet, recordings) -> list:
    """Name every cut lhotse skipped (it only logs a warning when audio cannot be read).

    ``recording_of`` maps the ids of the cuts sent to feature extraction to their recordings.
    The loss is not an error here: ``streamkd check-data`` compares the cuts with the
    supervisions and applies the split's policy (exclude and report, or fail).
    """
    present = {c.id for c in cuts}
    dropped = [cut_id for cut_id in recording_of if cut_id not in present]
    if dropped:
        log.warning("%d of %d cuts have no features (their audio could not be read):", len(dropped), len(recording_of))
    for cut_id in dropped:
        recording_id = recording_of[cut_id]
        problem = recording_problem(recordings[recording_id]) if recording_id in recordings else ""
        log.warning("  %s: recording %s: %s", cut_id, recording_id, problem or "no features computed")
    return dropped
