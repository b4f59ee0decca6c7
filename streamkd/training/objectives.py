"""Training objectives. Each wraps the model it trains and says which part gets deployed.

An objective whose ``applies_spec_augment`` is True receives clean features from the
trainer and augments them itself (the distillation objective needs the clean copy for
the teacher); otherwise the dataset applies SpecAugment.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from streamkd.data.loaders import make_spec_augment, spec_augment_batch
from streamkd.distill.branches import branch_for
from streamkd.distill.config import KdConfig
from streamkd.distill.losses import HiddenLayerKd, TokenKd, TransducerTokenKd
from streamkd.distill.mapping import layer_pairs
from streamkd.distill.teacher import FrozenTeacher
from streamkd.distill.teacher_cache import TargetSpec, targets_for_objective
from streamkd.model.asr import AsrModel


class CtcObjective(nn.Module):
    """The ASR loss alone: the teacher's objective and the streaming baseline's (``none``)."""

    applies_spec_augment = False

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, feats: Tensor, feat_lens: Tensor, targets: List[List[int]], teacher_targets=None
    ) -> Tuple[Tensor, Dict[str, float], int]:
        """Return (summed loss, per-frame statistics for logging, number of encoder frames).

        The statistics always hold ``asr``, the ASR loss alone, comparable across methods.
        """
        log_probs, lengths, _ = self.model(feats, feat_lens)
        loss = self.model.ctc_loss(log_probs, lengths, targets)
        frames = int(lengths.sum())
        per_frame = loss.item() / max(frames, 1)
        return loss, {"asr": per_frame, "ctc": per_frame}, frames

    def deployable(self) -> nn.Module:
        """The part of the objective that decoding uses."""
        return self.model


class TransducerObjective(CtcObjective):
    """The ASR loss of a model with a transducer head: pruned RNN-T (+ CTC when it has both).

    The combination and its weights are the model's (:meth:`AsrModel.asr_loss`), so KD
    objectives that call ``asr_loss`` train either head the same way.
    """

    def forward(
        self, feats: Tensor, feat_lens: Tensor, targets: List[List[int]], teacher_targets=None
    ) -> Tuple[Tensor, Dict[str, float], int]:
        log_probs, lengths, hidden = self.model(feats, feat_lens)
        loss, parts = self.model.asr_loss(log_probs, lengths, hidden, targets)
        frames = int(lengths.sum())
        stats = {name: value.item() / max(frames, 1) for name, value in parts.items()}
        return loss, {"asr": loss.item() / max(frames, 1), **stats}, frames


def asr_objective(model: nn.Module) -> nn.Module:
    """The plain ASR objective for the model's head(s)."""
    return TransducerObjective(model) if model.head.has_transducer else CtcObjective(model)


class DistillationObjective(nn.Module):
    """L = L_ctc(student) + weight * L_kd(student, frozen teacher), both per encoder frame.

    ``kd.method`` picks the KD term: ``token`` (posterior KL; on the collapsed lattice
    distribution for a transducer student), ``layer`` (projected student
    layers against teacher layers) or ``aux`` (auxiliary non-streaming branches on the
    student layers). Branches and projections live here, beside the student, so that
    :meth:`deployable` returns exactly the student a ``none`` run would save.
    """

    applies_spec_augment = True

    def __init__(self, student: AsrModel, teacher: FrozenTeacher, kd: KdConfig, spec_augment: bool) -> None:
        super().__init__()
        if kd.method == "none":
            raise ValueError("method 'none' trains without a teacher: use CtcObjective")
        self.student = student
        self.teacher = teacher
        self.kd_config = kd
        # No time warping: the student's frame t must stay aligned with the teacher's frame t.
        self.spec_augment = make_spec_augment(time_warp=False) if spec_augment else None
        if kd.method == "token":
            self.pairs: List[Tuple[int, int]] = []
            # A transducer student distils the teacher's transducer (its main output, and the
            # one decoding uses); a CTC-only student the teacher's CTC posteriors.
            if student.transducer is not None:
                if teacher.model.transducer is None:
                    raise ValueError(
                        f"kd.method 'token' on a {student.head.type!r} student needs a teacher with a "
                        f"transducer head; the teacher's head is {teacher.model.head.type!r}"
                    )
                self.kd: nn.Module = TransducerTokenKd(kd.temperature, kd.token_delay)
            else:
                if teacher.model.ctc is None:
                    raise ValueError(
                        f"kd.method 'token' on a CTC student needs a teacher with a CTC head; "
                        f"the teacher's head is {teacher.model.head.type!r}"
                    )
                self.kd = TokenKd(kd.temperature, kd.token_delay)
        else:
            enc = student.encoder.config
            self.pairs = layer_pairs(kd.student_layers, enc.num_layers, teacher.num_layers, kd.teacher_layers)
            branches = [
                branch_for(
                    kd.method,
                    enc.d_model,
                    teacher.d_model,
                    enc.num_heads,
                    enc.ff_dim,
                    enc.dropout,
                    kd.aux,
                    enc.conv_kernel,
                )
                for _ in self.pairs
            ]
            self.kd = HiddenLayerKd(self.pairs, branches, kd.loss, kd.shift)

    @property
    def target_spec(self) -> TargetSpec:
        """The teacher outputs this objective reads, i.e. what a teacher cache must hold for it."""
        if isinstance(self.kd, TransducerTokenKd):
            return TargetSpec(layers=(self.teacher.num_layers,))
        if isinstance(self.kd, TokenKd):
            return TargetSpec(posteriors=True)
        return TargetSpec(layers=tuple(t for _, t in self.pairs))

    def forward(
        self,
        feats: Tensor,
        feat_lens: Tensor,
        targets: List[List[int]],
        teacher_targets: Optional[Dict[str, Tensor]] = None,
    ) -> Tuple[Tensor, Dict[str, float], int]:
        """As the ASR objectives; ``teacher_targets`` (a batch's cached targets) replaces the
        teacher's forward pass, otherwise the frozen teacher runs on the batch."""
        student_feats = feats
        if self.training and self.spec_augment is not None:
            student_feats = spec_augment_batch(self.spec_augment, feats, feat_lens)
        teacher_feats = student_feats if self.kd_config.teacher_input == "augmented" else feats

        log_probs, lengths, hidden = self.student(student_feats, feat_lens)
        # The student's own ASR loss: CTC, pruned RNN-T, or both, as its head says.
        asr, asr_parts = self.student.asr_loss(log_probs, lengths, hidden, targets)
        if teacher_targets is not None:
            teacher_log_probs, teacher_hidden = targets_for_objective(
                teacher_targets, lengths, hidden[-1].size(1), self.teacher.num_layers
            )
        else:
            teacher_log_probs, teacher_lengths, teacher_hidden = self.teacher(teacher_feats, feat_lens)
            if not torch.equal(lengths, teacher_lengths):
                raise RuntimeError("teacher and student produced different numbers of encoder frames")
        if isinstance(self.kd, TransducerTokenKd):
            kd = self.kd(
                self.student.transducer, self.teacher.model.transducer, hidden[-1], teacher_hidden[-1], lengths, targets
            )
        elif isinstance(self.kd, TokenKd):
            kd = self.kd(log_probs, teacher_log_probs, lengths)
        else:
            kd = self.kd(hidden, teacher_hidden, lengths)

        frames = int(lengths.sum())
        # kd is already a per-frame mean; scale it to a sum like the CTC loss.
        loss = asr + self.kd_config.weight * kd * frames
        stats = {name: value.item() / max(frames, 1) for name, value in asr_parts.items()}
        return loss, {"asr": asr.item() / max(frames, 1), **stats, "kd": kd.item()}, frames

    def deployable(self) -> nn.Module:
        """The student alone: no teacher, no branches, no projections."""
        return self.student
