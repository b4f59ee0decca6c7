"""Conformer block: macaron feed-forward, self-attention, convolution, feed-forward."""

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AttentionCache, MultiHeadSelfAttention


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and returned in its input's dtype.

    Under bf16 autocast on the CPU, torch 1.13 hands layer_norm a bfloat16 input with float32
    weights and fails; normalising in float32 is what autocast does on GPUs anyway. In fp32
    training the casts are no-ops.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class FeedForward(nn.Module):
    """Pre-norm position-wise feed-forward network with Swish activation."""

    def __init__(self, d_model: int, ff_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            LayerNorm(d_model),
            nn.Linear(d_model, ff_dim),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(ff_dim, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    """Conformer convolution module over (B, T, d_model).

    pointwise conv + GLU -> depthwise conv -> LayerNorm -> Swish -> pointwise conv.
    LayerNorm replaces the usual BatchNorm: its statistics are per frame, so padded
    frames cannot leak into them and streaming needs no running batch statistics.

    Padding of the depthwise conv is explicit (:meth:`pad`) so that a streaming caller
    can replace the causal left zeros with the previous chunk's cached frames.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float = 0.0, causal: bool = False) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be positive, got {kernel_size}")
        if not causal and kernel_size % 2 == 0:
            # Symmetric padding needs an odd kernel to keep frames aligned.
            raise ValueError(f"non-causal conv needs an odd kernel_size, got {kernel_size}")
        self.kernel_size = kernel_size
        self.causal = causal
        self.norm = LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, kernel_size=1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        self.depthwise_norm = LayerNorm(d_model)
        self.activation = nn.SiLU()
        self.pointwise_out = nn.Conv1d(d_model, d_model, kernel_size=1)
        self.dropout = nn.Dropout(dropout)

    @property
    def left_context(self) -> int:
        """Past frames one output frame reads (the size of a streaming conv cache)."""
        return self.kernel_size - 1 if self.causal else (self.kernel_size - 1) // 2

    def pad(self, x: Tensor) -> Tensor:
        """Zero-pad (B, C, T) for the depthwise conv: left only when causal."""
        if self.causal:
            return F.pad(x, (self.kernel_size - 1, 0))
        half = (self.kernel_size - 1) // 2
        return F.pad(x, (half, half))

    def _gated(self, x: Tensor, valid: Optional[Tensor]) -> Tensor:
        """pointwise conv + GLU: (B, T, d_model) -> (B, C, T), zero on padded frames."""
        y = F.glu(self.pointwise_in(self.norm(x).transpose(1, 2)), dim=1)
        if valid is not None:
            # Padded frames must look exactly like the zero padding past the end of a
            # lone utterance, or they would leak into valid frames through the kernel.
            y = y.masked_fill(~valid.unsqueeze(1), 0.0)
        return y

    def _finish(self, y: Tensor) -> Tensor:
        """Depthwise conv output (B, C, T) -> module output (B, T, d_model)."""
        y = self.activation(self.depthwise_norm(y.transpose(1, 2)))
        y = self.pointwise_out(y.transpose(1, 2)).transpose(1, 2)
        return self.dropout(y)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> Tensor:
        """x: (B, T, d_model); valid: (B, T) bool, False on padded frames."""
        return self._finish(self.depthwise(self.pad(self._gated(x, valid))))

    def initial_cache(self, batch_size: int, device=None, dtype=None) -> Tensor:
        """The streaming state before the first chunk: the causal zero padding, (B, C, kernel_size - 1)."""
        channels = self.depthwise.in_channels
        return torch.zeros(batch_size, channels, self.kernel_size - 1, device=device, dtype=dtype)

    def forward_cached(self, x: Tensor, valid: Optional[Tensor], cache: Tensor) -> Tuple[Tensor, Tensor]:
        """One streaming chunk of a causal module: the cache replaces the left zero padding.

        x: (B, T, d_model) new frames; cache: (B, C, kernel_size - 1), the previous chunk's
        last GLU outputs (zeros at the start). Returns the output and the next cache.
        """
        if not self.causal:
            raise ValueError("only a causal convolution module can run chunk by chunk")
        y = torch.cat([cache, self._gated(x, valid)], dim=2)
        new_cache = y[:, :, y.size(2) - (self.kernel_size - 1) :]
        return self._finish(self.depthwise(y)), new_cache


class ConformerBlock(nn.Module):
    """One Conformer layer with pre-norm residual sub-modules and a final LayerNorm.

    ``causal`` only changes the convolution; attention causality comes from the mask
    the caller passes, so the same block serves teacher, student and auxiliary branches.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ff_dim: int,
        conv_kernel: int,
        dropout: float = 0.0,
        causal: bool = False,
        positional: str = "relative",
    ) -> None:
        super().__init__()
        self.ff1 = FeedForward(d_model, ff_dim, dropout)
        self.attn_norm = LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, num_heads, dropout, positional)
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConvModule(d_model, conv_kernel, dropout, causal)
        self.ff2 = FeedForward(d_model, ff_dim, dropout)
        self.final_norm = LayerNorm(d_model)

    def forward(
        self,
        x: Tensor,
        attn_mask: Optional[Tensor] = None,
        valid: Optional[Tensor] = None,
        positions: Optional[Tensor] = None,
    ) -> Tensor:
        """x: (B, T, D); attn_mask: (B or 1, T, T) allowed-mask; valid: (B, T) frames."""
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn_dropout(self.attn(self.attn_norm(x), attn_mask, positions))
        x = x + self.conv(x, valid)
        x = x + 0.5 * self.ff2(x)
        return self.final_norm(x)

    def initial_cache(self, batch_size: int, device=None, dtype=None) -> "BlockCache":
        return BlockCache(
            attention=self.attn.initial_cache(batch_size, device, dtype),
            conv=self.conv.initial_cache(batch_size, device, dtype),
        )

    def forward_cached(
        self,
        x: Tensor,
        valid: Tensor,
        positions: Tensor,
        cache: "BlockCache",
        max_cached_frames: Optional[int],
    ) -> Tuple[Tensor, "BlockCache"]:
        """One streaming chunk: every frame of the chunk sees the whole chunk and the cached past.

        Same arithmetic as :meth:`forward` under a chunk mask, with the attention's cached
        keys/values and the convolution's cached frames standing in for the earlier chunks.
        ``max_cached_frames`` is ``left_chunks * chunk_size`` (None: keep everything).
        """
        x = x + 0.5 * self.ff1(x)
        attended, attention_cache = self.attn.forward_cached(
            self.attn_norm(x), positions, valid, cache.attention, max_cached_frames
        )
        x = x + self.attn_dropout(attended)
        conv_out, conv_cache = self.conv.forward_cached(x, valid, cache.conv)
        x = x + conv_out
        x = x + 0.5 * self.ff2(x)
        return self.final_norm(x), BlockCache(attention_cache, conv_cache)


class BlockCache(NamedTuple):
    """Streaming state of one Conformer block."""

    attention: AttentionCache
    conv: Tensor  # (B, d_model, conv_kernel - 1)


__all__ = ["FeedForward", "ConvModule", "ConformerBlock", "BlockCache"]
