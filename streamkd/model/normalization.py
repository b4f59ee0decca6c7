"""Global mean and variance normalisation of the input features (global CMVN).

Statistics come from the training set and live in the model's buffers, so decoding and
streaming use exactly what training saw. Unlike per-utterance normalisation, it needs no
future frames and is therefore safe for streaming.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn


class GlobalCmvn(nn.Module):
    def __init__(self, feat_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(feat_dim))
        self.register_buffer("inv_std", torch.ones(feat_dim))

    def forward(self, feats: Tensor) -> Tensor:
        return (feats - self.mean) * self.inv_std

    @torch.no_grad()
    def fit(self, feature_matrices: Iterable[Tensor], floor: float = 1e-5) -> None:
        """Set the statistics from (T, feat_dim) matrices (e.g. a sample of training cuts)."""
        total = torch.zeros_like(self.mean, dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        frames = 0
        for m in feature_matrices:
            m = torch.as_tensor(m, dtype=torch.float64)
            total += m.sum(0)
            total_sq += (m * m).sum(0)
            frames += m.size(0)
        if frames == 0:
            raise ValueError("cannot estimate feature statistics from zero frames")
        mean = total / frames
        var = (total_sq / frames - mean * mean).clamp(min=floor)
        self.mean.copy_(mean.to(self.mean.dtype))
        self.inv_std.copy_(var.rsqrt().to(self.inv_std.dtype))
