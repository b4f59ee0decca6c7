"""Training-only modules that map a student layer's output into the teacher's space.

- :class:`Projection`: a linear map to the teacher's width (``layer`` KD across widths).
- :class:`AuxBranch`: the proposed auxiliary non-streaming branch, one Transformer or
  Conformer layer over the whole utterance followed by a projection to the teacher width.

Both take ``(x, lengths)`` so the KD loss can treat them alike. None of them is part of
the student that gets saved for decoding.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from streamkd.distill.config import AuxConfig
from streamkd.model.attention import MultiHeadSelfAttention
from streamkd.model.conformer import ConformerBlock, FeedForward, LayerNorm
from streamkd.model.masks import attention_mask, padding_mask


class Projection(nn.Module):
    """Linear map from the student's width to the teacher's."""

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(student_dim, teacher_dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.linear(x)


class Unchanged(nn.Module):
    """``layer`` KD between equal widths compares the student's features directly."""

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return x


class TransformerLayer(nn.Module):
    """Pre-norm self-attention + feed-forward layer with a final LayerNorm."""

    def __init__(self, d_model: int, num_heads: int, ff_dim: int, dropout: float, positional: str) -> None:
        super().__init__()
        self.attn_norm = LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, num_heads, dropout, positional)
        self.attn_dropout = nn.Dropout(dropout)
        self.ff = FeedForward(d_model, ff_dim, dropout)
        self.final_norm = LayerNorm(d_model)

    def forward(self, x: Tensor, attn_mask: Tensor, valid: Tensor) -> Tensor:
        x = x + self.attn_dropout(self.attn(self.attn_norm(x), attn_mask))
        x = x + self.ff(x)
        return self.final_norm(x)


class AuxBranch(nn.Module):
    """One auxiliary layer over a student layer's output, then a projection to the teacher width.

    ``attention="full"`` lets every frame see the whole utterance (padding excluded), so the
    branch output is computed with the same context as the teacher's. ``"causal"`` limits
    frame t to frames <= t (an ablation). With ``positional="none"`` and a Transformer layer
    the branch is permutation-equivariant over time: it has no way to find "the frame k
    steps ahead", so a shifted target has to be predicted from the student's own features.

    A Conformer branch carries position through its depthwise convolution, so that
    convolution is always causal (left context only), whatever the attention: a symmetric
    kernel would see (kernel - 1) / 2 frames ahead and could copy any APC shift up to that.
    With full attention and no positions, the frames after t then reach the output at t
    only as an unordered set, never as "the frame k steps ahead".
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        num_heads: int,
        ff_dim: int,
        dropout: float,
        config: AuxConfig,
        conv_kernel: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.causal = config.attention == "causal"
        if config.type == "transformer":
            self.layer: nn.Module = TransformerLayer(student_dim, num_heads, ff_dim, dropout, config.positional)
        else:
            if conv_kernel is None:
                raise ValueError("a conformer auxiliary branch needs a conv_kernel")
            self.layer = ConformerBlock(
                student_dim, num_heads, ff_dim, conv_kernel, dropout, causal=True, positional=config.positional
            )
        self.projection = nn.Linear(student_dim, teacher_dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        num_frames = x.size(1)
        # chunk_size=1 with unlimited left context is a plain causal mask.
        mask = attention_mask(lengths, num_frames, 1 if self.causal else None, -1)
        valid = padding_mask(lengths, num_frames)
        return self.projection(self.layer(x, mask, valid))


def branch_for(
    method: str,
    student_dim: int,
    teacher_dim: int,
    num_heads: int,
    ff_dim: int,
    dropout: float,
    aux: AuxConfig,
    conv_kernel: int,
) -> nn.Module:
    """The module put between student layer l and its KD target for ``method``."""
    if method == "aux":
        return AuxBranch(
            student_dim,
            teacher_dim,
            num_heads=aux.num_heads or num_heads,
            ff_dim=aux.ff_dim or ff_dim,
            dropout=dropout,
            config=aux,
            conv_kernel=aux.conv_kernel or conv_kernel,
        )
    if method == "layer":
        return Projection(student_dim, teacher_dim) if student_dim != teacher_dim else Unchanged()
    raise ValueError(f"method {method!r} has no per-layer branch")


__all__ = ["Projection", "Unchanged", "TransformerLayer", "AuxBranch", "branch_for"]
