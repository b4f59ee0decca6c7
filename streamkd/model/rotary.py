"""Rotary position embeddings (RoPE) for relative positions in self-attention.

Each pair of channels of a query or key vector is rotated by an angle proportional to
the frame's absolute index. The dot product of a rotated query at position ``i`` with a
rotated key at position ``j`` then depends only on ``i - j``. Because the rotation is
applied to keys once, at their own absolute position, rotated keys can be cached and
reused by later streaming chunks unchanged.
"""

from typing import Tuple

import torch
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """Applies RoPE to tensors shaped (B, H, T, head_dim) given (T,) or per-stream (B, T) positions."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        self.head_dim = head_dim
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        # Not persistent: it is derived from head_dim, so checkpoints need not carry it.
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _cos_sin(self, positions: Tensor) -> Tuple[Tensor, Tensor]:
        angles = positions.to(torch.float32).unsqueeze(-1) * self.inv_freq  # (T, D/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T, D)
        return angles.cos(), angles.sin()

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        cos, sin = self._cos_sin(positions)
        if positions.dim() == 2:  # streams at different offsets (an exported runtime's batch)
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        # Rotate in float32 so half-precision training keeps positions distinguishable.
        xf = x.float()
        half = self.head_dim // 2
        rotated_half = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
        return (xf * cos + rotated_half * sin).to(x.dtype)


__all__ = ["RotaryEmbedding"]
