"""Multi-head self-attention with optional rotary relative positions.

The computation is split into projection (:meth:`MultiHeadSelfAttention.project`),
the masked attention itself (:func:`masked_attention`) and the output projection, so
that a streaming caller can concatenate cached keys/values between the first two steps.
"""

import math
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rotary import RotaryEmbedding

POSITIONAL_CHOICES = ("relative", "none")


class AttentionCache(NamedTuple):
    """Keys and values of earlier streaming chunks, positions already applied."""

    keys: Tensor  # (B, H, T_cached, head_dim)
    values: Tensor  # (B, H, T_cached, head_dim)
    valid: Tensor  # (B, T_cached) bool: False for padding of streams that have ended


def masked_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Optional[Tensor] = None,
    dropout_p: float = 0.0,
    training: bool = False,
) -> Tensor:
    """Scaled dot-product attention with a boolean allowed-mask.

    q: (B, H, Tq, D); k, v: (B, H, Tk, D); mask broadcastable to (B, H, Tq, Tk), True
    where attention is allowed. A query row with no allowed key returns zeros; it never
    produces NaN, in the forward or the backward pass.
    """
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    if mask is None:
        weights = scores.softmax(dim=-1)
    else:
        empty_rows = ~mask.any(dim=-1, keepdim=True)
        # Open empty rows up before the softmax (all -inf would give NaN and NaN
        # gradients), then zero their weights afterwards.
        scores = scores.masked_fill(~(mask | empty_rows), float("-inf"))
        weights = scores.softmax(dim=-1).masked_fill(empty_rows, 0.0)
    weights = F.dropout(weights, p=dropout_p, training=training)
    return torch.matmul(weights, v)


class MultiHeadSelfAttention(nn.Module):
    """Self-attention over (B, T, d_model) inputs.

    ``positional="relative"`` rotates queries and keys with RoPE (relative offsets,
    cache-friendly); ``positional="none"`` uses no position information at all, which
    makes the layer permutation-equivariant along time under a full mask.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        positional: str = "relative",
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        if positional not in POSITIONAL_CHOICES:
            raise ValueError(f"positional must be one of {POSITIONAL_CHOICES}, got {positional!r}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.positional = positional
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.rotary = RotaryEmbedding(self.head_dim) if positional == "relative" else None

    def project(self, x: Tensor, positions: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values shaped (B, H, T, head_dim), positions already applied.

        ``positions`` are absolute frame indices (T,); default ``0 .. T-1``. A streaming
        caller passes the chunk's true offsets so cached keys stay consistent.
        """
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.rotary is not None:
            if positions is None:
                positions = torch.arange(t, device=x.device)
            q, k = self.rotary(q, positions), self.rotary(k, positions)
        return q, k, v

    def merge(self, context: Tensor) -> Tensor:
        """(B, H, T, head_dim) attention output -> (B, T, d_model)."""
        b, _, t, _ = context.shape
        return self.out_proj(context.transpose(1, 2).reshape(b, t, self.d_model))

    def forward(
        self,
        x: Tensor,
        attn_mask: Optional[Tensor] = None,
        positions: Optional[Tensor] = None,
    ) -> Tensor:
        """x: (B, T, d_model); attn_mask: (B or 1, T, T) bool, True = allowed."""
        q, k, v = self.project(x, positions)
        mask = attn_mask.unsqueeze(1) if attn_mask is not None else None  # broadcast over heads
        context = masked_attention(q, k, v, mask, self.dropout, self.training)
        return self.merge(context)

    def initial_cache(self, batch_size: int, device=None, dtype=None) -> AttentionCache:
        empty = torch.zeros(batch_size, self.num_heads, 0, self.head_dim, device=device, dtype=dtype)
        return AttentionCache(empty, empty, torch.zeros(batch_size, 0, dtype=torch.bool, device=device))

    def forward_cached(
        self,
        x: Tensor,
        positions: Tensor,
        valid: Tensor,
        cache: AttentionCache,
        max_cached_frames: Optional[int] = None,
    ) -> Tuple[Tensor, AttentionCache]:
        """Attention of a chunk's frames to the cached frames and to the whole chunk.

        x: (B, T, d_model); positions: (T,) absolute frame indices; valid: (B, T) False on
        padding. Returns the output and a cache holding at most ``max_cached_frames`` of the
        most recent keys/values (None: all of them).
        """
        q, k, v = self.project(x, positions)
        keys = torch.cat([cache.keys, k], dim=2)
        values = torch.cat([cache.values, v], dim=2)
        key_valid = torch.cat([cache.valid, valid], dim=1)
        context = masked_attention(q, keys, values, key_valid[:, None, None, :], self.dropout, self.training)
        start = 0 if max_cached_frames is None else max(keys.size(2) - max_cached_frames, 0)
        new_cache = AttentionCache(keys[:, :, start:], values[:, :, start:], key_valid[:, start:])
        return self.merge(context), new_cache


__all__ = ["POSITIONAL_CHOICES", "AttentionCache", "masked_attention", "MultiHeadSelfAttention"]
