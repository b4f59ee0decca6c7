"""Convolutional front-end that turns 10 ms fbank frames into 40 ms encoder frames.

Two 3x3 convolutions with stride 2 and no padding along time. Without time padding
an output frame never looks at zero-padding past the end of an utterance, so a
padded batch gives the same valid frames as each utterance on its own.

Receptive field along time: output frame ``i`` is computed from input frames
``4*i .. 4*i + 6`` (seven 10 ms frames). Relative to the first input frame of its own
40 ms span, the front-end therefore reads ``RIGHT_CONTEXT_FRAMES = 6`` frames (60 ms)
ahead. Of those, frames ``4*i+1 .. 4*i+3`` belong to the output frame's own span; only
``LOOKAHEAD_FRAMES = 3`` frames (30 ms) lie beyond it. For a chunk of encoder frames
that is the extra input the streaming student must wait for after the chunk's own
audio has arrived (see :func:`algorithmic_latency_ms`).
"""

from typing import Optional, Tuple, TypeVar

import torch
from torch import Tensor, nn

SUBSAMPLING_FACTOR = 4
"""Input (10 ms) frames per output (40 ms) frame."""

INPUT_FRAME_SHIFT_MS = 10.0
"""Frame shift of the fbank features the front-end expects."""

RECEPTIVE_FIELD_FRAMES = 7
"""Input frames that feed one output frame (``4*i .. 4*i + 6``)."""

RIGHT_CONTEXT_FRAMES = RECEPTIVE_FIELD_FRAMES - 1
"""Input frames read ahead of an output frame's first input frame (6, i.e. 60 ms)."""

LOOKAHEAD_FRAMES = RIGHT_CONTEXT_FRAMES - (SUBSAMPLING_FACTOR - 1)
"""Input frames read beyond the end of an output frame's own 40 ms span (3, i.e. 30 ms)."""

MIN_INPUT_FRAMES = RECEPTIVE_FIELD_FRAMES
"""Shortest input that yields at least one output frame."""

ENCODER_FRAME_MS = SUBSAMPLING_FACTOR * INPUT_FRAME_SHIFT_MS
"""One encoder (output) frame: 40 ms."""

IntOrTensor = TypeVar("IntOrTensor", int, Tensor)


def _conv_out(n: IntOrTensor) -> IntOrTensor:
    """Output length of one kernel-3, stride-2, unpadded convolution."""
    if isinstance(n, Tensor):
        return torch.div(n - 1, 2, rounding_mode="floor")
    return (n - 1) // 2


def subsampled_lengths(lengths: IntOrTensor) -> IntOrTensor:
    """Number of encoder frames produced from ``lengths`` input frames.

    Equals the time size of :class:`Conv2dSubsampling`'s output,
    ``((T - 1) // 2 - 1) // 2``; inputs shorter than :data:`MIN_INPUT_FRAMES` give 0.
    Accepts a Python int or an integer tensor.
    """
    out = _conv_out(_conv_out(lengths))
    if isinstance(out, Tensor):
        return out.clamp(min=0)
    return max(out, 0)


def input_frames_needed(num_output_frames: int) -> int:
    """Input frames required to compute the first ``num_output_frames`` encoder frames.

    The last of them (index ``n - 1``) reads up to input frame ``4*(n-1) + 6``.
    """
    if num_output_frames <= 0:
        return 0
    return SUBSAMPLING_FACTOR * (num_output_frames - 1) + RECEPTIVE_FIELD_FRAMES


# lhotse's fbank (snip_edges=False) centres a 25 ms window on each 10 ms shift: input frame i
# reads audio up to i * 10 + 17.5 ms.
FBANK_WINDOW_MS = 25.0
FRAME_END_OFFSET_MS = INPUT_FRAME_SHIFT_MS / 2 + FBANK_WINDOW_MS / 2


def input_frames_ready_ms(num_input_frames: int) -> float:
    """When input frames ``0 .. n-1`` are complete: the end of frame n-1's window (0 for none)."""
    if num_input_frames <= 0:
        return 0.0
    return (num_input_frames - 1) * INPUT_FRAME_SHIFT_MS + FRAME_END_OFFSET_MS


def frame_time_ms(frame: int) -> float:
    """The end of encoder frame ``frame``'s own audio span: when a decoder that has seen it could show its token."""
    return (frame + 1) * ENCODER_FRAME_MS


def algorithmic_latency_ms(chunk_size: int, frame_shift_ms: float = INPUT_FRAME_SHIFT_MS) -> float:
    """Algorithmic latency of chunk-wise streaming with ``chunk_size`` encoder frames.

    A chunk covers ``chunk_size * 4`` input frames (``chunk_size * 40`` ms) and cannot be
    computed before :data:`LOOKAHEAD_FRAMES` further input frames (30 ms) have arrived, so
    the latency is ``chunk_size * 40 + 30`` ms. Feature-extraction window overhang
    (a 25 ms window at 10 ms shift) and compute time are not included.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return (chunk_size * SUBSAMPLING_FACTOR + LOOKAHEAD_FRAMES) * frame_shift_ms


class Conv2dSubsampling(nn.Module):
    """(B, T, in_dim) fbank -> (B, T', d_model) with T' = ``subsampled_lengths(T)``."""

    def __init__(self, in_dim: int = 80, d_model: int = 144, channels: Optional[int] = None) -> None:
        super().__init__()
        channels = channels or d_model
        self.in_dim = in_dim
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        freq_out = subsampled_lengths(in_dim)
        if freq_out <= 0:
            raise ValueError(f"in_dim={in_dim} is too small for two stride-2 convolutions")
        self.out = nn.Linear(channels * freq_out, d_model)

    def forward(self, feats: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        if feats.dim() != 3 or feats.size(2) != self.in_dim:
            raise ValueError(f"expected (B, T, {self.in_dim}) features, got {tuple(feats.shape)}")
        if feats.size(1) < MIN_INPUT_FRAMES:
            raise ValueError(f"need at least {MIN_INPUT_FRAMES} input frames, got {feats.size(1)}")
        x = self.conv(feats.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))
        return x, subsampled_lengths(lengths)


__all__ = [
    "SUBSAMPLING_FACTOR",
    "INPUT_FRAME_SHIFT_MS",
    "RECEPTIVE_FIELD_FRAMES",
    "RIGHT_CONTEXT_FRAMES",
    "LOOKAHEAD_FRAMES",
    "MIN_INPUT_FRAMES",
    "ENCODER_FRAME_MS",
    "frame_time_ms",
    "input_frames_ready_ms",
    "subsampled_lengths",
    "input_frames_needed",
    "algorithmic_latency_ms",
    "Conv2dSubsampling",
]
