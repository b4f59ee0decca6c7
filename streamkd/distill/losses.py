"""The KD terms: hidden-layer KD (``layer``, ``aux``) and output-posterior KD (``token``).

Token KD compares CTC posteriors frame by frame (:class:`TokenKd`) or, for a student with
a transducer head, the collapsed blank/correct/rest distribution on the student's pruned
lattice region (:class:`TransducerTokenKd`).

Each returns a per-frame loss (a mean over the frames it could pair), so the total
objective reads L = L_asr + lambda * L_kd with both terms per frame.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamkd.distill.distances import frame_distance, masked_mean
from streamkd.distill.shift import shifted_pairs


class HiddenLayerKd(nn.Module):
    """Mean over mapped pairs (l, m) of d(branch_l(h_s[l])[t], h_t[m][t + k]) over valid t.

    ``branches[i]`` belongs to the i-th pair: a projection (or nothing) for ``layer`` KD,
    an auxiliary non-streaming branch for ``aux`` KD.
    """

    def __init__(
        self, pairs: Sequence[Tuple[int, int]], branches: Sequence[nn.Module], distance: str, shift: int
    ) -> None:
        super().__init__()
        if len(pairs) != len(branches) or not pairs:
            raise ValueError(f"need one branch per layer pair, got {len(pairs)} pairs and {len(branches)} branches")
        if shift < 0:
            raise ValueError(f"APC shift must be >= 0 frames, got {shift}")
        self.pairs = [(int(s), int(t)) for s, t in pairs]
        self.branches = nn.ModuleList(branches)
        self.distance_name = distance
        self.distance = frame_distance(distance)
        self.shift = shift

    def forward(self, student_hidden: List[Tensor], teacher_hidden: List[Tensor], lengths: Tensor) -> Tensor:
        per_pair = []
        for (s_layer, t_layer), branch in zip(self.pairs, self.branches):
            # Distances in float32 whatever the autocast: small differences of large values.
            predicted = branch(student_hidden[s_layer - 1], lengths).float()
            source, target, valid = shifted_pairs(predicted, teacher_hidden[t_layer - 1].float(), lengths, self.shift)
            per_pair.append(masked_mean(self.distance(source, target), valid))
        return torch.stack(per_pair).mean()


class TokenKd(nn.Module):
    """Frame-level KL(teacher || student) between CTC posteriors at temperature tau.

    With ``delay`` d, teacher frame t is compared with student frame t + d: a streaming
    student tends to emit later than the full-context teacher. Scaled by tau^2 so the
    gradient size does not depend on the temperature.
    """

    def __init__(self, temperature: float = 1.0, delay: int = 0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if delay < 0:
            raise ValueError(f"token delay must be >= 0 frames, got {delay}")
        self.temperature = temperature
        self.delay = delay

    def forward(self, student_log_probs: Tensor, teacher_log_probs: Tensor, lengths: Tensor) -> Tensor:
        teacher, student, valid = shifted_pairs(teacher_log_probs, student_log_probs, lengths, self.delay)
        return self.mean_kl(student, teacher, valid)

    def mean_kl(self, student_log_probs: Tensor, teacher_log_probs: Tensor, valid: Tensor) -> Tensor:
        """tau^2 * KL(teacher || student) over the last dimension at temperature tau, averaged over ``valid``."""
        tau = self.temperature
        # log_softmax(log p / tau) is the softmax of the logits at temperature tau.
        teacher = (teacher_log_probs.float() / tau).log_softmax(dim=-1)
        student = (student_log_probs.float() / tau).log_softmax(dim=-1)
        kl = (teacher.exp() * (teacher - student)).sum(dim=-1)
        return masked_mean(kl, valid) * tau**2


class TransducerTokenKd(TokenKd):
    """KL(teacher || student) over the collapsed transducer distribution, per lattice node.

    At every node (t, u) of the student's pruned lattice region (the ``prune_range`` rows
    the pruned RNN-T loss evaluates) both joiners' distributions are collapsed to
    ``[blank, next reference token, rest]`` (Panchapagesan et al., 2021), so the cost does
    not grow with the vocabulary and the KD acts where the RNN-T loss does. Both models are
    scored on the same nodes. With ``delay`` d the student's frame t + d is compared with the
    teacher's frame t; the first d frames have no teacher counterpart and are skipped.
    """

    def forward(
        self,
        student_head: nn.Module,
        teacher_head: nn.Module,
        student_out: Tensor,
        teacher_out: Tensor,
        lengths: Tensor,
        targets: Sequence[Sequence[int]],
    ) -> Tensor:
        """``*_head``: :class:`~streamkd.model.transducer.TransducerHead`; ``*_out``: encoder outputs (B, T, D)."""
        d = self.delay
        if d:
            # Teacher frame t moves to position t + d; positions < d hold zeros and are masked.
            teacher_out = F.pad(teacher_out[:, : max(teacher_out.size(1) - d, 0)], (0, 0, d, 0))
        ranges = student_head.prune_ranges(student_out, lengths, targets)
        student, valid = student_head.collapsed_log_probs(student_out, lengths, targets, ranges)
        with torch.no_grad():
            teacher, _ = teacher_head.collapsed_log_probs(teacher_out, lengths, targets, ranges)
        if d:
            frames = torch.arange(valid.size(1), device=valid.device).view(1, -1, 1)
            valid = valid & (frames >= d)
        return self.mean_kl(student, teacher, valid)
