"""What a trained auxiliary branch does with the APC shift, measured on held-out cuts.

Two measurements per distilled (student layer, teacher layer) pair of an aux run:

* ``distance_by_shift``: the KD distance of the branch's output at frame t against the
  teacher's frame t + k, for k = 0..K. A branch trained with shift s should be closest at
  k = s; how much worse it is at other k says how much of the teacher's future the student
  layer really carries.
* ``attention_by_offset``: the branch's attention mass at key offset d = key - query,
  d = -K..K, averaged over heads, frames and cuts. A positionless branch cannot find "the
  frame k ahead" by position; mass piling up at +s would mean it found it by content.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List

import torch

from streamkd.data.loaders import eval_dataloader, load_cuts, unpack_batch
from streamkd.distill.config import KdConfig
from streamkd.distill.distances import masked_mean
from streamkd.distill.shift import shifted_pairs
from streamkd.distill.teacher import load_teacher
from streamkd.model.checkpoint import load_model
from streamkd.model.masks import padding_mask
from streamkd.training.objectives import DistillationObjective
from streamkd.training.trainer import latest_checkpoint


def load_aux_objective(run_dir: Path, teacher_path: Path) -> DistillationObjective:
    """The run's student, teacher and trained branches, from its last training checkpoint."""
    run_dir = Path(run_dir)
    student, _ = load_model(run_dir / "model.pt")
    summary = json.loads((run_dir / "train_summary.json").read_text())
    if summary.get("method") not in ("aux", "layer"):
        raise ValueError(f"{run_dir} is a {summary.get('method')!r} run: only aux and layer runs have branches")
    kd = KdConfig.from_dict(summary["kd"])
    objective = DistillationObjective(student, load_teacher(teacher_path), kd, spec_augment=False)
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'} has no training checkpoint (the branches live only there)")
    objective.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["objective"])
    return objective.eval()


def _attention_by_offset(
    attn, x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, max_offset: int
) -> torch.Tensor:
    """Attention weight at offsets -K..K summed over the valid query frames of one batch."""
    q, k, _ = attn.project(x, None)
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    weights = scores.masked_fill(~mask.unsqueeze(1), float("-inf")).softmax(-1).nan_to_num(0.0).mean(1)  # (B, T, T)
    weights = weights * padding_mask(lengths, weights.size(1)).unsqueeze(-1)  # padded queries do not count
    t = weights.size(-1)
    offsets = torch.arange(t).view(1, -1) - torch.arange(t).view(-1, 1)  # key - query
    sums = torch.zeros(2 * max_offset + 1)
    for d in range(-max_offset, max_offset + 1):
        sums[d + max_offset] = weights[:, offsets == d].sum()
    return sums


@torch.no_grad()
def analyse_aux_run(
    run_dir: Path, teacher_path: Path, cuts_path: Path, max_shift: int = 6, max_duration: float = 60.0
) -> Dict[str, object]:
    objective = load_aux_objective(run_dir, teacher_path)
    distance = objective.kd.distance
    pairs = objective.pairs
    sums = {p: torch.zeros(max_shift + 1) for p in pairs}
    counts = {p: torch.zeros(max_shift + 1) for p in pairs}
    attention = {p: torch.zeros(2 * max_shift + 1) for p in pairs}
    queries = {p: 0.0 for p in pairs}
    captured: Dict[int, tuple] = {}
    hooks = []
    for i, branch in enumerate(objective.kd.branches):
        attn = getattr(getattr(branch, "layer", None), "attn", None)
        if attn is not None:
            hooks.append(
                attn.register_forward_hook(lambda m, args, out, i=i: captured.__setitem__(i, (args[0], args[1])))
            )
    for raw in eval_dataloader(load_cuts(cuts_path), max_duration):
        batch = unpack_batch(raw)
        _, lengths, hidden = objective.student(batch.feats, batch.feat_lens)
        _, _, teacher_hidden = objective.teacher(batch.feats, batch.feat_lens)
        for i, ((s, m), branch) in enumerate(zip(pairs, objective.kd.branches)):
            predicted = branch(hidden[s - 1], lengths).float()
            for k in range(max_shift + 1):
                source, target, valid = shifted_pairs(predicted, teacher_hidden[m - 1], lengths, k)
                n = valid.sum().item()
                sums[(s, m)][k] += masked_mean(distance(source, target), valid).item() * n
                counts[(s, m)][k] += n
            if i in captured:
                x, mask = captured.pop(i)
                attention[(s, m)] += _attention_by_offset(branch.layer.attn, x, mask, lengths, max_shift)
                queries[(s, m)] += lengths.sum().item()
    for hook in hooks:
        hook.remove()
    offsets = list(range(-max_shift, max_shift + 1))
    result: List[Dict[str, object]] = []
    for p in pairs:
        row: Dict[str, object] = {
            "student_layer": p[0],
            "teacher_layer": p[1],
            "distance_by_shift": {
                k: round((sums[p][k] / counts[p][k].clamp(min=1)).item(), 4) for k in range(max_shift + 1)
            },
        }
        if queries[p]:
            row["attention_by_offset"] = {
                d: round((attention[p][d + max_shift] / queries[p]).item(), 4) for d in offsets
            }
        result.append(row)
    return {
        "run": str(run_dir),
        "trained_shift": objective.kd.shift,
        "kd_loss": objective.kd.distance_name,
        "pairs": result,
    }
