"""Which output head(s) a model carries, and the options of the transducer head and its loss.

``type`` is one of:

- ``ctc``: linear + log-softmax over the encoder frames (the original model);
- ``transducer``: a stateless transducer (embedding predictor over the last
  ``context_size`` tokens + joiner) trained with k2's pruned RNN-T loss;
- ``transducer+ctc``: both heads on the same encoder, trained with the pruned RNN-T loss
  plus ``ctc_scale`` times the CTC loss; either head can decode.

The loss weights live here, next to the structure, because every objective (the plain ASR
loss and each KD method) computes the ASR loss through :meth:`AsrModel.asr_loss`, which only
sees the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from streamkd.schema import config_default

HEAD_TYPES = ("ctc", "transducer", "transducer+ctc")


@dataclass(frozen=True)
class HeadConfig:
    # Defaults: the config schema's model.head (streamkd/schemas/config.schema.yaml).
    type: str = config_default("model.head")["type"]
    # Transducer structure.
    decoder_dim: int = config_default("model.head.decoder_dim")  # predictor embedding width
    joiner_dim: int = config_default("model.head.joiner_dim")
    # Tokens of left context the stateless predictor sees (1 = bigram).
    context_size: int = config_default("model.head.context_size")
    # Pruned RNN-T loss (k2): a smoothed "simple" loss over a cheap joiner gives the prune
    # ranges; the full joiner is evaluated on ``prune_range`` symbols per frame only.
    prune_range: int = config_default("model.head.prune_range")
    simple_loss_scale: float = config_default("model.head.simple_loss_scale")
    lm_scale: float = config_default("model.head.lm_scale")  # towards the predictor-only model
    am_scale: float = config_default("model.head.am_scale")  # ... and towards the encoder-only model
    # Weight of the CTC loss when the model carries both heads.
    ctc_scale: float = config_default("model.head.ctc_scale")

    def __post_init__(self) -> None:
        if self.type not in HEAD_TYPES:
            raise ValueError(f"head type must be one of {', '.join(HEAD_TYPES)}; got {self.type!r}")
        for name in ("decoder_dim", "joiner_dim", "context_size", "prune_range"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"head.{name} must be a positive integer, got {value!r}")
        for name in ("simple_loss_scale", "lm_scale", "am_scale", "ctc_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"head.{name} must be a non-negative number, got {value!r}")

    @property
    def has_ctc(self) -> bool:
        return self.type in ("ctc", "transducer+ctc")

    @property
    def has_transducer(self) -> bool:
        return self.type in ("transducer", "transducer+ctc")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, options: Optional[Mapping[str, Any]]) -> "HeadConfig":
        """Build from a plain dict (None: the CTC default); unknown keys are an error."""
        options = dict(options or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown head option(s): {', '.join(unknown)}; valid options: {', '.join(sorted(known))}")
        return cls(**options)


__all__ = ["HEAD_TYPES", "HeadConfig"]
