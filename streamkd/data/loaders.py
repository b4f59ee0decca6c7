"""Lhotse samplers and datasets that feed training and decoding.

Cut manifests either carry precomputed features (lilcom archives written by
``streamkd compute-fbank``) or only audio (``features.on_the_fly``); the datasets here read
the former and compute the same 80-dim log-mel fbank from the latter, so training and
decoding code never needs to know which one it got.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from lhotse import CutSet, Fbank, FbankConfig, load_manifest_lazy
from lhotse.dataset import DynamicBucketingSampler, K2SpeechRecognitionDataset, SimpleCutSampler, SpecAugment
from lhotse.dataset.input_strategies import BatchIO, OnTheFlyFeatures, PrecomputedFeatures

from streamkd.data.cached_targets import WithTeacherTargets

NUM_MEL_BINS = 80

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """One mini-batch in a model-friendly form, in the order of ``cut_ids``."""

    feats: torch.Tensor  # (B, T, F)
    feat_lens: torch.Tensor  # (B,)
    texts: List[str]
    cut_ids: List[str]
    # Cached teacher targets ({field: (B, T', D)} and "lengths"), when training from a teacher cache.
    teacher: Optional[Dict[str, torch.Tensor]] = None

    def to(self, device: torch.device) -> "Batch":
        teacher = None if self.teacher is None else {k: v.to(device) for k, v in self.teacher.items()}
        return Batch(self.feats.to(device), self.feat_lens.to(device), self.texts, self.cut_ids, teacher)


def unpack_batch(batch: dict) -> Batch:
    """Convert a K2SpeechRecognitionDataset batch (one supervision per cut) into a Batch."""
    sup = batch["supervisions"]
    order = torch.as_tensor(sup["sequence_idx"]).argsort()
    feats = batch["inputs"]
    feat_lens = torch.as_tensor(sup["num_frames"])[order].to(torch.int64)
    texts = [sup["text"][i] for i in order.tolist()]
    cuts = [sup["cut"][i] for i in order.tolist()] if "cut" in sup else [c for c in batch.get("cuts", [])]
    teacher = batch.get("teacher")
    if teacher is not None:
        # Collated in the supervisions' order; put them in the order of the features.
        teacher = {name: values[order] for name, values in teacher.items()}
    return Batch(feats=feats, feat_lens=feat_lens, texts=texts, cut_ids=[c.id for c in cuts], teacher=teacher)


def load_cuts(path: Path, max_seconds: Optional[float] = None) -> CutSet:
    if not Path(path).is_file():
        raise FileNotFoundError(f"cut manifest not found: {path}")
    cuts = load_manifest_lazy(path)
    if max_seconds is not None:
        cuts = cuts.filter(NotLongerThan(max_seconds))
    return cuts


@dataclass(frozen=True)
class NotLongerThan:
    """Cut filter; a class rather than a lambda, so the lazy cut set can be pickled."""

    max_seconds: float

    def __call__(self, cut) -> bool:
        return cut.duration <= self.max_seconds


def has_precomputed_features(cuts: CutSet) -> bool:
    """Whether the manifest's cuts carry stored features (judged by its first cut)."""
    first = next(iter(cuts), None)
    if first is None:
        raise ValueError("the cut manifest is empty")
    return first.has_features


def input_strategy(cuts: CutSet) -> BatchIO:
    """Read stored features, or compute the same fbank from the audio on the fly."""
    if has_precomputed_features(cuts):
        return PrecomputedFeatures()
    return OnTheFlyFeatures(Fbank(FbankConfig(num_mel_bins=NUM_MEL_BINS)))


def cut_features(cut) -> np.ndarray:
    """One cut's (T, F) fbank: the stored features, or the same fbank computed from the audio."""
    if cut.has_features:
        return cut.load_features()
    return cut.compute_features(Fbank(FbankConfig(num_mel_bins=NUM_MEL_BINS)))


def make_spec_augment(time_warp: bool = True) -> SpecAugment:
    """The SpecAugment settings of every training run, in the dataset or in an objective.

    KD objectives turn time warping off: a warped student frame t no longer lines up with
    the clean teacher's frame t (displacements of tens of frames, several APC shifts),
    while frequency and time masks keep every frame where it was.
    """
    return SpecAugment(time_warp_factor=40 if time_warp else None, num_frame_masks=2, frames_mask_size=40)


def spec_augment_batch(transform: SpecAugment, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
    """Apply ``transform`` to a padded (B, T, F) batch as lhotse's dataset does: warping
    only within each utterance's valid frames (one supervision per cut, from frame 0)."""
    lens = feat_lens.detach().cpu().to(torch.int64)  # lhotse walks the segments in Python
    segments = torch.stack([torch.arange(lens.numel()), torch.zeros_like(lens), lens], dim=1)
    return transform(feats, supervision_segments=segments)


def buckets_for(cuts: CutSet, num_buckets: int) -> int:
    """lhotse refuses more duration buckets than cuts: a small training set gets fewer buckets."""
    try:
        num_cuts = len(cuts)
    except TypeError:  # a lazy manifest: lhotse checks it
        return num_buckets
    if num_cuts < num_buckets:
        log.warning("%d training cuts: %d duration buckets instead of %d", num_cuts, max(num_cuts, 1), num_buckets)
    return max(min(num_buckets, num_cuts), 1)


def train_sampler(
    cuts: CutSet,
    max_duration: float,
    seed: int,
    num_buckets: int = 10,
    world_size: Optional[int] = None,
    rank: Optional[int] = None,
) -> DynamicBucketingSampler:
    """The training batches' sampler: duration buckets, shuffled per epoch (cut metadata only)."""
    return DynamicBucketingSampler(
        cuts,
        max_duration=max_duration,
        shuffle=True,
        num_buckets=buckets_for(cuts, num_buckets),
        seed=seed,
        drop_last=False,
        world_size=world_size if world_size is not None else 1,
        rank=rank if rank is not None else 0,
    )


def train_dataloader(
    cuts: CutSet,
    max_duration: float,
    seed: int,
    spec_augment: bool,
    world_size: Optional[int] = None,
    rank: Optional[int] = None,
    num_buckets: int = 10,
    teacher_fields: Sequence[str] = (),
) -> torch.utils.data.DataLoader:
    """Duration-bucketed, shuffled batches; SpecAugment is applied on the fly.

    ``world_size``/``rank`` select one of ``world_size`` interleaved batch streams (lhotse
    draws ``world_size`` batches from the same bucket and hands out the ``rank``-th), so
    the streams of all ranks together are the same for any split of ranks over processes.
    ``teacher_fields`` (cuts from a teacher cache) adds the cached targets to every batch.
    """
    transforms = [make_spec_augment()] if spec_augment else []
    dataset = K2SpeechRecognitionDataset(
        input_transforms=transforms, return_cuts=True, input_strategy=input_strategy(cuts)
    )
    if teacher_fields:
        dataset = WithTeacherTargets(dataset, teacher_fields)
    sampler = train_sampler(cuts, max_duration, seed, num_buckets, world_size, rank)
    # Workers would compete with the model for the few cores of a laptop; loading is cheap.
    # Without workers nothing is prefetched, so the sampler's state_dict() describes exactly
    # the batches the trainer has consumed, which exact mid-epoch resumption relies on.
    return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)


def eval_dataloader(
    cuts: CutSet, max_duration: float, teacher_fields: Sequence[str] = ()
) -> torch.utils.data.DataLoader:
    """Deterministic, unshuffled batches for validation and decoding (``teacher_fields``: as for training)."""
    dataset = K2SpeechRecognitionDataset(return_cuts=True, input_strategy=input_strategy(cuts))
    if teacher_fields:
        dataset = WithTeacherTargets(dataset, teacher_fields)
    # Explicitly one stream: lhotse would otherwise shard by the process group's rank.
    sampler = SimpleCutSampler(cuts, max_duration=max_duration, shuffle=False, world_size=1, rank=0)
    return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)
