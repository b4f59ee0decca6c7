"""Training objectives. Each wraps the model it trains and says which part gets deployed."""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn


class CtcObjective(nn.Module):
    """The ASR loss alone: the teacher's objective and the streaming baseline's (``none``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, feats: Tensor, feat_lens: Tensor, targets: List[List[int]]) -> Tuple[Tensor, Dict[str, float], int]:
        """Return (summed loss, per-frame statistics for logging, number of encoder frames)."""
        log_probs, lengths, _ = self.model(feats, feat_lens)
        loss = self.model.ctc_loss(log_probs, lengths, targets)
        frames = int(lengths.sum())
        return loss, {"ctc": loss.item() / max(frames, 1)}, frames

    def deployable(self) -> nn.Module:
        """The part of the objective that decoding uses."""
        return self.model


class TransducerObjective(CtcObjective):
    """The ASR loss of a model with a transducer head: pruned RNN-T (+ CTC when it has both).

    The combination and its weights are the model's (:meth:`AsrModel.asr_loss`), so KD
    objectives that call ``asr_loss`` train either head the same way.
    """

    def forward(self, feats: Tensor, feat_lens: Tensor, targets: List[List[int]]) -> Tuple[Tensor, Dict[str, float], int]:
        log_probs, lengths, hidden = self.model(feats, feat_lens)
        loss, parts = self.model.asr_loss(log_probs, lengths, hidden, targets)
        frames = int(lengths.sum())
        return loss, {name: value.item() / max(frames, 1) for name, value in parts.items()}, frames


def asr_objective(model: nn.Module) -> nn.Module:
    """The plain ASR objective for the model's head(s)."""
    return TransducerObjective(model) if model.head.has_transducer else CtcObjective(model)
