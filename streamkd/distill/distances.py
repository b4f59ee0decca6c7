"""Per-frame distances between a (projected) student representation and the teacher's.

Each takes (..., D) tensors and returns (...) values, one per frame:

- ``l1``: mean absolute difference over the D channels;
- ``l2``: mean squared difference over the channels;
- ``cos``: -log sigmoid(cosine similarity), smallest when the vectors point the same way;
- ``l1_cos``: ``l1 + cos``, the loss of the reference method (after DistilHuBERT).

Means over channels keep the scale independent of the teacher's width.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch.nn.functional as F
from torch import Tensor


def l1(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs().mean(dim=-1)


def l2(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).pow(2).mean(dim=-1)


def cos(pred: Tensor, target: Tensor) -> Tensor:
    return -F.logsigmoid(F.cosine_similarity(pred, target, dim=-1, eps=1e-8))


def l1_cos(pred: Tensor, target: Tensor) -> Tensor:
    return l1(pred, target) + cos(pred, target)


FRAME_DISTANCES: Dict[str, Callable[[Tensor, Tensor], Tensor]] = {"l1": l1, "l2": l2, "cos": cos, "l1_cos": l1_cos}


def frame_distance(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    try:
        return FRAME_DISTANCES[name]
    except KeyError:
        raise ValueError(f"unknown KD distance {name!r}; choose one of {', '.join(FRAME_DISTANCES)}") from None


def masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values`` over the True entries of ``valid``; 0 (still differentiable) if none.

    Entries outside ``valid`` are replaced, not multiplied by zero, so NaN or inf on padded
    frames cannot reach the result or the gradient.
    """
    return values.masked_fill(~valid, 0.0).sum() / valid.sum().clamp(min=1)
