"""Dynamic-chunk training: a student that samples its chunk size (and left context) per batch.

Like WeNet's U2 and icefall's streaming Zipformer, a dynamic-chunk student is one checkpoint
that streams at any chunk size: each training forward draws a chunk size from
``chunk_sizes`` with ``probabilities`` (and, when given, a left context in chunks from
``left_chunks`` with ``left_chunk_probabilities``). Draws come from torch's global random
generator, which the trainer seeds from the run's seed and stores in its checkpoints, so a
run (resumed or not) sees the same sequence of chunk sizes.

Such a checkpoint has no single chunk size: decoding and export must name one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Tuple

if TYPE_CHECKING:  # torch is imported where a draw happens: the config checks run without it
    import torch

DYNAMIC = "dynamic"  # grid.chunk_sizes entry and run-name part of a dynamic-chunk student
# A dynamic-chunk student's decodes are told apart by chunk size: "ctc-1best@chunk4" names the
# decode (folder test-ctc-1best@chunk4, record key) of method ctc-1best at chunk size 4.
AT_CHUNK = "@chunk"
KEYS = ("chunk_sizes", "probabilities", "left_chunks", "left_chunk_probabilities")
SUM_TOLERANCE = 1e-6


def _check_choices(name: str, values: Sequence[int], minimum: int, probs_name: str, probs: Sequence[float]) -> None:
    if not values:
        raise ValueError(f"dynamic_chunk.{name} is empty: give at least one value")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise ValueError(f"dynamic_chunk.{name}: {value!r} is not {what}")
    if len(set(values)) != len(values):
        raise ValueError(f"dynamic_chunk.{name}: {list(values)} repeats a value")
    if len(probs) != len(values):
        raise ValueError(
            f"dynamic_chunk.{probs_name}: {list(probs)} has {len(probs)} entries but {name} has {len(values)}"
        )
    for p in probs:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 0:
            raise ValueError(f"dynamic_chunk.{probs_name}: {p!r} is not a probability (a number >= 0)")
    total = float(sum(probs))
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ValueError(f"dynamic_chunk.{probs_name}: {list(probs)} sum to {total:g}, not 1")


@dataclass(frozen=True)
class DynamicChunk:
    """The distribution a dynamic-chunk student samples its chunk size and left context from."""

    chunk_sizes: Tuple[int, ...]
    probabilities: Tuple[float, ...] = ()  # empty: uniform
    left_chunks: Tuple[int, ...] = ()  # empty: the encoder's left_chunks in every batch
    left_chunk_probabilities: Tuple[float, ...] = ()  # empty: uniform

    def __post_init__(self) -> None:
        for name in KEYS:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.probabilities and self.chunk_sizes:
            object.__setattr__(self, "probabilities", tuple(1 / len(self.chunk_sizes) for _ in self.chunk_sizes))
        _check_choices("chunk_sizes", self.chunk_sizes, 1, "probabilities", self.probabilities)
        if self.left_chunk_probabilities and not self.left_chunks:
            raise ValueError("dynamic_chunk.left_chunk_probabilities is given without dynamic_chunk.left_chunks")
        if self.left_chunks:
            if not self.left_chunk_probabilities:
                uniform = tuple(1 / len(self.left_chunks) for _ in self.left_chunks)
                object.__setattr__(self, "left_chunk_probabilities", uniform)
            _check_choices(
                "left_chunks", self.left_chunks, -1, "left_chunk_probabilities", self.left_chunk_probabilities
            )

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "DynamicChunk":
        """Build from the config's ``grid.dynamic_chunk``; unknown keys are an error."""
        if isinstance(options, DynamicChunk):
            return options
        if not isinstance(options, Mapping):
            raise ValueError(f"dynamic_chunk must be a mapping, got {options!r}")
        unknown = sorted(set(options) - set(KEYS))
        if unknown:
            raise ValueError(f"unknown dynamic_chunk option(s): {', '.join(unknown)}; valid options: {', '.join(KEYS)}")
        if "chunk_sizes" not in options:
            raise ValueError("dynamic_chunk needs chunk_sizes")
        return cls(**{k: tuple(v) for k, v in options.items()})

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"chunk_sizes": list(self.chunk_sizes), "probabilities": list(self.probabilities)}
        if self.left_chunks:
            out["left_chunks"] = list(self.left_chunks)
            out["left_chunk_probabilities"] = list(self.left_chunk_probabilities)
        return out

    @property
    def largest(self) -> int:
        return max(self.chunk_sizes)

    def sample(self, generator: Optional["torch.Generator"] = None) -> Tuple[int, Optional[int]]:
        """One draw: (chunk size, left context in chunks or None for the encoder's own)."""
        chunk = self.chunk_sizes[_draw(self.probabilities, generator)]
        if not self.left_chunks:
            return chunk, None
        return chunk, self.left_chunks[_draw(self.left_chunk_probabilities, generator)]

    def describe(self) -> str:
        """e.g. ``1 (p=0.25), 4 (p=0.5), 16 (p=0.25)``."""
        return ", ".join(f"{c} (p={p:g})" for c, p in zip(self.chunk_sizes, self.probabilities))


def _draw(probabilities: Sequence[float], generator: Optional["torch.Generator"]) -> int:
    if len(probabilities) == 1:
        return 0  # no draw: a one-value list leaves the random stream as a fixed chunk would
    import torch

    weights = torch.tensor(probabilities, dtype=torch.float64)
    return int(torch.multinomial(weights, 1, generator=generator).item())


def decode_key(method: str, chunk_size: Optional[int]) -> str:
    """``ctc-1best`` at chunk size 4 -> ``ctc-1best@chunk4``; a method alone without a chunk size."""
    return method if chunk_size is None else f"{method}{AT_CHUNK}{int(chunk_size)}"


def split_decode_key(key: str) -> Tuple[str, Optional[int]]:
    """``ctc-1best@chunk4`` -> (``ctc-1best``, 4); ``ctc-1best`` -> (``ctc-1best``, None)."""
    method, sep, chunk = key.partition(AT_CHUNK)
    if not sep:
        return key, None
    if not chunk.isdigit() or int(chunk) < 1 or not method:
        raise ValueError(f"not a decode name: {key!r} (expected METHOD or METHOD{AT_CHUNK}N, N >= 1)")
    return method, int(chunk)


__all__ = ["AT_CHUNK", "DYNAMIC", "DynamicChunk", "decode_key", "split_decode_key"]
