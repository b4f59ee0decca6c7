"""Conformer block: macaron feed-forward, self-attention, convolution, feed-forward."""

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .attention import MultiHeadSelfAttention


class FeedForward(nn.Module):
    """Pre-norm position-wise feed-forward network with Swish activation."""

    def __init__(self, d_model: int, ff_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
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
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, kernel_size=1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        self.depthwise_norm = nn.LayerNorm(d_model)
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

    def forward(self, x: Tensor, valid: Optional[Tensor] = None) -> Tensor:
        """x: (B, T, d_model); valid: (B, T) bool, False on padded frames."""
        y = self.pointwise_in(self.norm(x).transpose(1, 2))  # (B, 2C, T)
        y = F.glu(y, dim=1)
        if valid is not None:
            # Padded frames must look exactly like the zero padding past the end of a
            # lone utterance, or they would leak into valid frames through the kernel.
            y = y.masked_fill(~valid.unsqueeze(1), 0.0)
        y = self.depthwise(self.pad(y))
        y = self.activation(self.depthwise_norm(y.transpose(1, 2)))
        y = self.pointwise_out(y.transpose(1, 2)).transpose(1, 2)
        return self.dropout(y)


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
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, num_heads, dropout, positional)
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConvModule(d_model, conv_kernel, dropout, causal)
        self.ff2 = FeedForward(d_model, ff_dim, dropout)
        self.final_norm = nn.LayerNorm(d_model)

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


__all__ = ["FeedForward", "ConvModule", "ConformerBlock"]
