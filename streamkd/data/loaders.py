"""Lhotse samplers and datasets that feed training and decoding."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch
from lhotse import CutSet, load_manifest_lazy
from lhotse.dataset import DynamicBucketingSampler, K2SpeechRecognitionDataset, SimpleCutSampler, SpecAugment


@dataclass
class Batch:
    """One mini-batch in a model-friendly form, in the order of ``cut_ids``."""

    feats: torch.Tensor  # (B, T, F)
    feat_lens: torch.Tensor  # (B,)
    texts: List[str]
    cut_ids: List[str]

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.feats.to(device), self.feat_lens.to(device), self.texts, self.cut_ids)


def unpack_batch(batch: dict) -> Batch:
    """Convert a K2SpeechRecognitionDataset batch (one supervision per cut) into a Batch."""
    sup = batch["supervisions"]
    order = torch.as_tensor(sup["sequence_idx"]).argsort()
    feats = batch["inputs"]
    feat_lens = torch.as_tensor(sup["num_frames"])[order].to(torch.int64)
    texts = [sup["text"][i] for i in order.tolist()]
    cuts = [sup["cut"][i] for i in order.tolist()] if "cut" in sup else [c for c in batch.get("cuts", [])]
    return Batch(feats=feats, feat_lens=feat_lens, texts=texts, cut_ids=[c.id for c in cuts])


def load_cuts(path: Path, max_seconds: Optional[float] = None) -> CutSet:
    if not Path(path).is_file():
        raise FileNotFoundError(f"cut manifest not found: {path}")
    cuts = load_manifest_lazy(path)
    if max_seconds is not None:
        cuts = cuts.filter(lambda c: c.duration <= max_seconds)
    return cuts


def make_spec_augment() -> SpecAugment:
    """The SpecAugment settings of every training run, in the dataset or in an objective."""
    return SpecAugment(time_warp_factor=40, num_frame_masks=2, frames_mask_size=40)


def spec_augment_batch(transform: SpecAugment, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
    """Apply ``transform`` to a padded (B, T, F) batch as lhotse's dataset does: warping
    only within each utterance's valid frames (one supervision per cut, from frame 0)."""
    lens = feat_lens.detach().cpu().to(torch.int64)  # lhotse walks the segments in Python
    segments = torch.stack([torch.arange(lens.numel()), torch.zeros_like(lens), lens], dim=1)
    return transform(feats, supervision_segments=segments)


def train_dataloader(
    cuts: CutSet,
    max_duration: float,
    seed: int,
    spec_augment: bool,
    world_size: Optional[int] = None,
    rank: Optional[int] = None,
) -> torch.utils.data.DataLoader:
    """Duration-bucketed, shuffled batches; SpecAugment is applied on the fly."""
    transforms = [make_spec_augment()] if spec_augment else []
    dataset = K2SpeechRecognitionDataset(input_transforms=transforms, return_cuts=True)
    sampler = DynamicBucketingSampler(
        cuts,
        max_duration=max_duration,
        shuffle=True,
        num_buckets=10,
        seed=seed,
        drop_last=False,
        world_size=world_size,
        rank=rank,
    )
    # Workers would compete with the model for the few cores of a laptop; loading is cheap.
    return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)


def eval_dataloader(cuts: CutSet, max_duration: float) -> torch.utils.data.DataLoader:
    """Deterministic, unshuffled batches for validation and decoding."""
    dataset = K2SpeechRecognitionDataset(return_cuts=True)
    sampler = SimpleCutSampler(cuts, max_duration=max_duration, shuffle=False)
    return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)
