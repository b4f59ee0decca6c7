"""Batches that carry a teacher's cached targets beside the features.

A teacher cache (:mod:`streamkd.distill.teacher_cache`) stores the teacher's outputs as custom
temporal arrays on the cuts; this module only reads them back per batch, so the data loaders
need nothing from the distillation package.
"""

from __future__ import annotations

import logging
from typing import Dict, Sequence

import numpy as np
import torch
from lhotse import CutSet
from torch import Tensor


class TeacherCacheError(ValueError):
    """The cache does not belong to this teacher, or lacks what this run needs."""


def collate_teacher_targets(cuts: Sequence, fields: Sequence[str]) -> Dict[str, Tensor]:
    """Load and right-pad each field of ``cuts`` (in batch order): ``{field: (B, T', D)}``
    plus ``"lengths"`` (B,) from the first field."""
    out: Dict[str, Tensor] = {}
    for field in fields:
        arrays = []
        for cut in cuts:
            value = cut.custom.get(field) if cut.custom else None
            if value is None:
                raise TeacherCacheError(f"cut {cut.id} carries no {field!r}: it does not come from a teacher cache")
            arrays.append(torch.from_numpy(np.asarray(value.load(), dtype=np.float32)))
        if "lengths" not in out:
            out["lengths"] = torch.tensor([a.size(0) for a in arrays], dtype=torch.int64)
        out[field] = torch.nn.utils.rnn.pad_sequence(arrays, batch_first=True)
    return out


class _ShorterTargetsAreExpected(logging.Filter):
    """lhotse's cut validation warns when a temporal array is shorter than its cut; the
    encoder's subsampling drops the last few 10 ms frames, so every cached target is."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "in custom field 'teacher_" not in record.getMessage()


class WithTeacherTargets(torch.utils.data.Dataset):
    """A lhotse dataset whose batches also carry the cached teacher targets (``batch["teacher"]``)."""

    def __init__(self, dataset: torch.utils.data.Dataset, fields: Sequence[str]) -> None:
        self.dataset = dataset
        self.fields = list(fields)
        root = logging.getLogger()
        if not any(isinstance(f, _ShorterTargetsAreExpected) for f in root.filters):
            root.addFilter(_ShorterTargetsAreExpected())

    def __getitem__(self, cuts: CutSet) -> dict:
        batch = self.dataset[cuts]
        batch["teacher"] = collate_teacher_targets(batch["supervisions"]["cut"], self.fields)
        return batch
