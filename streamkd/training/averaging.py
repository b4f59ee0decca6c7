"""Checkpoint averaging: the deployable model's weights averaged over the last N epochs.

icefall's recipes decode with such an average, which usually beats the last epoch alone.
The trainer keeps every ``checkpoints/epoch-K.pt``; each holds the *objective's* state dict,
in which the deployable model (the one ``model.pt`` holds) sits under a prefix (``model.``
for the ASR objectives, ``student.`` for the distillation objective, beside its teacher and
KD branches). The averaged model is written in ``model.pt``'s format, so everything that
decodes ``model.pt`` decodes it too. torch is imported where it is used: the workflow reads
:func:`averaged_model_name` without it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence

from streamkd.utils import atomic_path, load_tagged_payload

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

EPOCH_CHECKPOINT = re.compile(r"^epoch-(\d+)\.pt$")
FINAL = "final"


def averaged_model_name(last: int) -> str:
    """How records and tables name the model decoded: ``final`` or ``avg-last-N``."""
    return FINAL if last <= 1 else f"avg-last-{last}"


def epoch_checkpoints(ckpt_dir: Path) -> Dict[int, Path]:
    """Epoch number -> ``epoch-K.pt`` in ``ckpt_dir``."""
    found = {}
    for path in Path(ckpt_dir).glob("epoch-*.pt"):
        match = EPOCH_CHECKPOINT.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def last_epoch_checkpoints(ckpt_dir: Path, last: int) -> List[Path]:
    """The newest ``last`` epoch checkpoints, oldest first; an error names what is missing."""
    if last < 1:
        raise ValueError(f"average over last={last} epochs: expected at least 1")
    found = epoch_checkpoints(ckpt_dir)
    if not found:
        raise FileNotFoundError(f"no epoch checkpoints (epoch-K.pt) in {ckpt_dir}")
    final = max(found)
    wanted = list(range(final - last + 1, final + 1))
    missing = [f"epoch-{e}.pt" for e in wanted if e >= 1 and e not in found]
    if wanted[0] < 1:
        missing.append(f"{1 - wanted[0]} epoch(s) before epoch-1.pt")
    if missing:
        raise FileNotFoundError(
            f"{ckpt_dir}: averaging the last {last} epochs needs epoch-{wanted[0]}.pt ... epoch-{final}.pt; "
            f"missing: {', '.join(missing)}"
        )
    return [found[e] for e in wanted]


def _prefix_of(
    model_state: Dict[str, "torch.Tensor"], objective_state: Dict[str, "torch.Tensor"], reference: Path
) -> str:
    """The prefix under which ``model_state``'s keys appear in ``objective_state``.

    A distillation objective may hold a teacher of the very same shape; the deployable
    prefix is the one whose weights in the newest checkpoint equal ``model.pt``'s.
    """
    import torch

    first = next(iter(model_state))
    candidates = [k[: -len(first)] for k in objective_state if k.endswith(first)]
    complete = [p for p in candidates if all(p + k in objective_state for k in model_state)]
    equal = [p for p in complete if all(torch.equal(objective_state[p + k], v) for k, v in model_state.items())]
    if len(equal) != 1:
        raise ValueError(
            f"cannot find the weights of {reference} in the epoch checkpoints "
            f"(prefixes with every key: {complete or 'none'}; equal to it: {equal or 'none'})"
        )
    return equal[0]


def average_state_dicts(states: Sequence[Dict[str, "torch.Tensor"]]) -> Dict[str, "torch.Tensor"]:
    """Element-wise mean of floating-point tensors; other tensors (counters) from the last state."""
    import torch

    averaged = {}
    for key, value in states[-1].items():
        if value.is_floating_point():
            total = torch.zeros_like(value, dtype=torch.float64)
            for state in states:
                total += state[key].to(torch.float64)
            averaged[key] = (total / len(states)).to(value.dtype)
        else:
            averaged[key] = value.clone()
    return averaged


def average_last_epochs(run_dir: Path, last: int, out: Path) -> Path:
    """Write ``out``: ``run_dir/model.pt`` with its weights averaged over the last ``last`` epochs."""
    import torch

    from streamkd.model.checkpoint import FORMAT

    run_dir = Path(run_dir)
    reference = run_dir / "model.pt"
    payload = load_tagged_payload(
        reference, FORMAT, "model checkpoint", f"a streamkd model checkpoint (format {FORMAT!r} expected)"
    )
    model_state = payload["state_dict"]
    paths = last_epoch_checkpoints(run_dir / "checkpoints", last)
    objective_states = [torch.load(p, map_location="cpu", weights_only=False)["objective"] for p in paths]
    prefix = _prefix_of(model_state, objective_states[-1], reference)
    states = [{k: state[prefix + k] for k in model_state} for state in objective_states]
    averaged = average_state_dicts(states)
    meta = {
        **payload["meta"],
        "decoded_model": averaged_model_name(last),
        "averaged_epochs": [int(EPOCH_CHECKPOINT.match(p.name).group(1)) for p in paths],
    }
    out_payload = {**payload, "state_dict": averaged, "meta": meta}
    with atomic_path(out) as tmp:
        torch.save(out_payload, tmp)
    log.info("wrote %s: %s of %s (epochs %s)", out, meta["decoded_model"], reference, meta["averaged_epochs"])
    return Path(out)
