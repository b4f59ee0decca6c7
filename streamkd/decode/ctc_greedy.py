"""Greedy CTC decoding with torch alone: the arg-max token of every frame, repeats merged, blanks dropped.

Over the plain CTC topology every frame-label sequence is one path, so the frame-wise arg-max
is the Viterbi best path that ``ctc-1best`` finds with k2. The search keeps, per stream, the
tokens so far and the last frame's label, so feeding the posteriors chunk by chunk gives the
same result as feeding them at once (a token split across two chunks is emitted once).
"""

from __future__ import annotations

from typing import List

import torch

from streamkd.model.ctc import BLANK_ID


class CtcGreedySearch:
    """:meth:`advance` with each piece's posteriors (whole utterances or chunks), then :meth:`finish`."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.results: List[List[int]] = [[] for _ in range(batch_size)]
        self.last_label = [BLANK_ID] * batch_size

    def advance(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> None:
        """log_probs: (B, T, V) posteriors of the new frames; lengths: (B,) how many are real."""
        if log_probs.size(0) != self.batch_size:
            raise ValueError(f"expected {self.batch_size} streams, got {log_probs.size(0)}")
        best = log_probs.argmax(dim=-1).cpu().tolist()
        for stream, n in enumerate(lengths.cpu().tolist()):
            previous = self.last_label[stream]
            for label in best[stream][:n]:
                if label != previous and label != BLANK_ID:
                    self.results[stream].append(label)
                previous = label
            self.last_label[stream] = previous

    def finish(self) -> List[List[int]]:
        return [list(r) for r in self.results]


__all__ = ["CtcGreedySearch"]
