"""Mixed precision: autocast around the forward passes, dynamic loss scaling for fp16.

``training.precision`` is ``fp32`` (no autocast), ``bf16`` (autocast to bfloat16; its float32
exponent range needs no loss scaling) or ``fp16`` (autocast to float16 with a GradScaler,
which multiplies the loss before the backward pass, unscales the gradients before clipping
and skips the step when they overflow). The losses that need float32 compute in it whatever
the autocast: CTC, the pruned RNN-T recursion and the KD distances cast their inputs.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Optional

import torch

PRECISIONS = ("fp32", "fp16", "bf16")
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class PrecisionError(ValueError):
    """The requested precision cannot run on this device or torch build."""


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse, by name, a precision the device or torch cannot train with."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"training.precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu" and not _cpu_fp16_supported():
        raise PrecisionError(
            f"training.precision=fp16 needs a GPU with torch {torch.__version__} (CPU autocast and loss "
            "scaling in float16 need torch >= 2.3); use bf16 or fp32 on the CPU"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise PrecisionError(
            f"training.precision=bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use fp16"
        )


def _cpu_fp16_supported() -> bool:
    return hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler")


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The autocast context of the forward passes (nothing for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def make_grad_scaler(precision: str, device: torch.device) -> Optional[Any]:
    """A dynamic loss scaler for fp16, None otherwise."""
    if precision != "fp16":
        return None
    if device.type == "cuda":
        return torch.cuda.amp.GradScaler()
    return torch.amp.GradScaler("cpu")
