"""Settings of one distillation run: the method, the layer mapping, the APC shift and the loss."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from streamkd.schema import config_default

METHODS = ("none", "token", "layer", "aux")
LAYER_METHODS = ("layer", "aux")  # methods that distil hidden layers and need a layer set
DISTANCES = ("l1", "l2", "cos", "l1_cos")
TEACHER_INPUTS = ("clean", "augmented")
TEACHER_TARGETS = ("live", "cache")  # run the teacher in every step, or read its targets from a cache
AUX_TYPES = ("transformer", "conformer")
AUX_ATTENTION = ("full", "causal")
AUX_POSITIONAL = ("none", "relative")


def _choice(name: str, value: Any, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(choices)}")


def _from_dict(cls, options: Mapping[str, Any], where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {where} option(s): {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    return cls(**options)


@dataclass(frozen=True)
class AuxConfig:
    """The auxiliary branch put after each distilled student layer (training only).

    Defaults follow the method: one Transformer layer with full-context attention and no
    positional encoding. Such a branch is permutation-equivariant over its input, yet it can
    still meet a shifted target by attending k frames ahead, because a streaming student's
    features carry their position: trained with shift k, its attention peaks at offset k
    (``streamkd analyse-aux``; results/embedded-grid/aux-analysis/). ``attention: causal``
    takes that way out, leaving the student's own features to anticipate. A conformer branch's depthwise
    convolution is causal (see :class:`~streamkd.distill.branches.AuxBranch`), so any
    ``conv_kernel`` works. ``None`` sizes default to the student's.
    """

    type: str = config_default("kd.aux.type")
    attention: str = config_default("kd.aux.attention")
    positional: str = config_default("kd.aux.positional")
    ff_dim: Optional[int] = None
    num_heads: Optional[int] = None
    conv_kernel: Optional[int] = None  # conformer branches only; the convolution is causal

    def __post_init__(self) -> None:
        _choice("kd.aux.type", self.type, AUX_TYPES)
        _choice("kd.aux.attention", self.attention, AUX_ATTENTION)
        _choice("kd.aux.positional", self.positional, AUX_POSITIONAL)
        for name in ("ff_dim", "num_heads", "conv_kernel"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"kd.aux.{name} must be positive, got {value}")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "AuxConfig":
        return _from_dict(cls, options, "kd.aux")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class KdConfig:
    """Everything that defines how one student is distilled.

    ``student_layers`` are 1-based block indices; ``teacher_layers`` None means the
    proportional mapping (see :mod:`streamkd.distill.mapping`). ``apc_shift`` k pairs
    student position t with teacher frame t + k. It is part of every ``aux`` run (None
    counts as 0) and an optional ablation of ``layer`` runs (None: not shifted).
    """

    method: str = "none"
    student_layers: Tuple[int, ...] = ()
    teacher_layers: Optional[Tuple[int, ...]] = None
    apc_shift: Optional[int] = None
    loss: str = config_default("kd.loss")
    weight: float = config_default("kd.weight")
    teacher_input: str = config_default("kd.teacher_input")
    token_delay: int = config_default("kd.token_delay")
    temperature: float = config_default("kd.temperature")
    teacher_targets: str = config_default("kd.teacher_targets")
    aux: AuxConfig = field(default_factory=AuxConfig)

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        _choice("kd.loss", self.loss, DISTANCES)
        _choice("kd.teacher_input", self.teacher_input, TEACHER_INPUTS)
        _choice("kd.teacher_targets", self.teacher_targets, TEACHER_TARGETS)
        if self.teacher_targets == "cache" and self.teacher_input != "clean":
            raise ValueError(
                f"kd.teacher_targets='cache' needs kd.teacher_input='clean', got {self.teacher_input!r}: "
                "the augmented input changes every step, so cached targets would be stale"
            )
        object.__setattr__(self, "student_layers", tuple(self.student_layers))
        if self.teacher_layers is not None:
            object.__setattr__(self, "teacher_layers", tuple(self.teacher_layers))
        if isinstance(self.aux, Mapping):
            object.__setattr__(self, "aux", AuxConfig.from_dict(self.aux))
        if self.apc_shift is not None and self.apc_shift < 0:
            raise ValueError(f"apc_shift must be >= 0 frames, got {self.apc_shift}")
        if self.token_delay < 0:
            raise ValueError(f"kd.token_delay must be >= 0 frames, got {self.token_delay}")
        if not self.weight > 0:
            raise ValueError(f"kd.weight must be positive, got {self.weight}")
        if not self.temperature > 0:
            raise ValueError(f"kd.temperature must be positive, got {self.temperature}")
        if self.method in LAYER_METHODS:
            if not self.student_layers:
                raise ValueError(f"method {self.method!r} needs at least one student layer to distil")
            if any(layer < 1 for layer in self.student_layers):
                raise ValueError(f"student layers are 1-based, got {list(self.student_layers)}")
            if len(set(self.student_layers)) != len(self.student_layers):
                raise ValueError(f"student layers repeat: {list(self.student_layers)}")
            if self.teacher_layers is not None:
                if len(self.teacher_layers) != len(self.student_layers):
                    raise ValueError(
                        f"{len(self.student_layers)} student layers {list(self.student_layers)} but "
                        f"{len(self.teacher_layers)} teacher layers {list(self.teacher_layers)}"
                    )
                if any(layer < 1 for layer in self.teacher_layers):
                    raise ValueError(f"teacher layers are 1-based, got {list(self.teacher_layers)}")
        elif self.student_layers or self.teacher_layers:
            raise ValueError(f"method {self.method!r} distils no hidden layers, but layers were given")
        elif self.apc_shift is not None:
            raise ValueError(f"method {self.method!r} has no APC shift, got apc_shift={self.apc_shift}")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "KdConfig":
        return _from_dict(cls, options, "kd")

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["student_layers"] = list(self.student_layers)
        d["teacher_layers"] = None if self.teacher_layers is None else list(self.teacher_layers)
        return d

    @property
    def shift(self) -> int:
        """The APC shift in frames that training applies."""
        return self.apc_shift or 0

    @property
    def recorded_shift(self) -> Optional[int]:
        """The shift as the run record reports it: null where the method has none."""
        if self.method == "aux":
            return self.shift
        return self.apc_shift if self.method == "layer" else None
