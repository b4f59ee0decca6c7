"""The frozen full-context teacher: loaded from its checkpoint, checked, never trained."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from streamkd.model.asr import AsrModel
from streamkd.model.checkpoint import load_model


class TeacherCheckpointError(ValueError):
    """The teacher checkpoint is missing or does not fit the student it should teach."""


class FrozenTeacher(nn.Module):
    """Wraps a teacher AsrModel: eval mode always, no parameter requires grad, forward under no_grad."""

    def __init__(self, model: AsrModel, meta: Optional[dict] = None) -> None:
        super().__init__()
        self.model = model
        self.meta = dict(meta or {})  # the teacher's training summary (config hash, seed, ...)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenTeacher":
        # The objective's train() must not switch on the teacher's dropout.
        super().train(False)
        return self

    @property
    def d_model(self) -> int:
        return self.model.encoder.d_model

    @property
    def num_layers(self) -> int:
        return self.model.encoder.num_layers

    @torch.no_grad()
    def forward(self, feats: Tensor, feat_lens: Tensor):
        """(CTC log-probs, lengths, every block's output), all detached from any graph."""
        return self.model(feats, feat_lens)


def load_teacher(
    path: Path,
    vocab_size: Optional[int] = None,
    feat_dim: Optional[int] = None,
    teacher_layers: Sequence[int] = (),
    expected_encoder: Optional[dict] = None,
) -> FrozenTeacher:
    """Load and freeze the teacher; every mismatch is an error naming ``path`` and the values.

    ``vocab_size`` and ``feat_dim`` (None: not checked) are the student's.
    ``expected_encoder`` (options of the configured teacher) is compared key by key with
    the encoder stored in the checkpoint, so a teacher trained under another config is
    refused instead of silently used.
    """
    path = Path(path)
    if not path.is_file():
        raise TeacherCheckpointError(f"teacher checkpoint not found: {path} (train the teacher first)")
    try:
        model, meta = load_model(path)
    except ValueError as e:
        raise TeacherCheckpointError(f"cannot use {path} as the teacher: {e}") from e
    encoder = model.encoder.config
    problems = []
    if meta.get("role", "teacher") != "teacher":
        problems.append(f"it is a {meta.get('role')!r} model, not a teacher")
    if encoder.causal or encoder.chunk_size is not None:
        problems.append(
            f"it is a streaming model (causal={encoder.causal}, chunk_size={encoder.chunk_size}), not full-context"
        )
    if vocab_size is not None and model.vocab_size != vocab_size:
        problems.append(f"vocab_size={model.vocab_size} but the BPE model has {vocab_size} tokens")
    if feat_dim is not None and encoder.feat_dim != feat_dim:
        problems.append(f"feat_dim={encoder.feat_dim} but the student reads {feat_dim}-dim features")
    for layer in teacher_layers:
        if not 1 <= layer <= encoder.num_layers:
            problems.append(f"teacher layer {layer} is requested but it has {encoder.num_layers} layers")
    for key, want in (expected_encoder or {}).items():
        have = getattr(encoder, key, None)
        if have != want:
            problems.append(f"model.teacher.{key}={want!r} in the config but the checkpoint has {have!r}")
    if problems:
        raise TeacherCheckpointError(f"teacher checkpoint {path} does not fit this run: " + "; ".join(problems))
    return FrozenTeacher(model, meta)
