"""Optimisation settings of one training run."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Mapping

from streamkd.schema import config_default


def _default(key: str) -> Any:
    return config_default(f"training.student.{key}")


@dataclass(frozen=True)
class OptimisationConfig:
    num_epochs: int
    max_duration: float  # seconds of audio per batch
    peak_lr: float
    warmup_steps: int
    # Defaults: the config schema's (streamkd/schemas/config.schema.yaml).
    weight_decay: float = _default("weight_decay")
    grad_clip: float = _default("grad_clip")
    spec_augment: bool = _default("spec_augment")
    log_interval: int = _default("log_interval")
    max_utterance_seconds: float = _default("max_utterance_seconds")
    # Data-parallel slots per process: each optimiser step sums the gradients of
    # accum_grad batches per process, so the global batch is world_size * accum_grad
    # sampler batches whatever the number of processes (see streamkd.training.trainer).
    accum_grad: int = _default("accum_grad")
    # Optimiser steps between mid-epoch checkpoints (0: only at the end of each epoch).
    checkpoint_interval: int = _default("checkpoint_interval")
    # Duration buckets of the dynamic bucketing sampler.
    num_buckets: int = _default("num_buckets")
    # fp32 | bf16 | fp16: autocast of the forward passes (fp16 with dynamic loss scaling).
    precision: str = _default("precision")

    def __post_init__(self) -> None:
        if self.accum_grad < 1:
            raise ValueError(f"accum_grad must be >= 1, got {self.accum_grad}")
        if self.checkpoint_interval < 0:
            raise ValueError(f"checkpoint_interval must be >= 0 (0: every epoch), got {self.checkpoint_interval}")
        if self.num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {self.num_buckets}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OptimisationConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown optimisation option(s): {', '.join(unknown)}")
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in d]
        if missing:
            raise ValueError(f"missing optimisation option(s): {', '.join(missing)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def lr_at(self, step: int) -> float:
        """Linear warm-up to the peak, then inverse-square-root decay (Noam-style)."""
        step = max(step, 1)
        if self.warmup_steps == 0:
            return self.peak_lr
        return self.peak_lr * min(step / self.warmup_steps, (self.warmup_steps / step) ** 0.5)
