"""APC-style shifted pairing of frames: position t of one sequence with frame t + k of another."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from streamkd.model.masks import padding_mask


def shifted_pairs(source: Tensor, target: Tensor, lengths: Tensor, shift: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Align ``source[:, t]`` with ``target[:, t + shift]`` for every valid pair.

    source, target: (B, T, D) with the same valid ``lengths`` (B,). Returns
    ``(source[:, :T-k], target[:, k:], valid)`` where ``valid`` (B, T-k) is True exactly
    when ``t + k < lengths[b]``: the last k valid positions of each utterance have no
    target and padded frames are never paired. With ``shift >= T`` nothing is valid and
    the returned tensors are empty along time.
    """
    if shift < 0:
        raise ValueError(f"shift must be >= 0 frames, got {shift}")
    if source.shape[:2] != target.shape[:2]:
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} differ in batch or time")
    num_frames = source.size(1)
    kept = max(num_frames - shift, 0)
    valid = padding_mask(lengths - shift, kept) if kept else torch.zeros(source.size(0), 0, dtype=torch.bool)
    return source[:, :kept], target[:, shift : shift + kept], valid.to(source.device)
