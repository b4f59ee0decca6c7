"""Encoder + CTC head, the model the trainer optimises and the decoder runs."""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ctc import BLANK_ID, CTCHead
from .encoder import ConformerEncoder, EncoderConfig


class AsrModel(nn.Module):
    """Conformer encoder with a CTC head.

    ``config`` is a plain, JSON-serialisable dict; ``AsrModel.from_config(model.config)``
    rebuilds a model with identical structure, so a checkpoint only needs it and the
    state dict.
    """

    def __init__(self, encoder: ConformerEncoder, vocab_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.vocab_size = vocab_size
        # The head reuses the encoder's dropout rate so the config needs no extra key.
        self.ctc = CTCHead(encoder.d_model, vocab_size, dropout=encoder.config.dropout)

    @property
    def config(self) -> Dict[str, Any]:
        return {"encoder": self.encoder.config.to_dict(), "vocab_size": self.vocab_size}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "AsrModel":
        unknown = sorted(set(config) - {"encoder", "vocab_size"})
        if unknown:
            raise ValueError(f"unknown model config key(s): {', '.join(unknown)}")
        return build_asr_model(config["encoder"], int(config["vocab_size"]))

    def forward(
        self,
        feats: Tensor,
        feat_lens: Tensor,
        chunk_size: Optional[int] = None,
    ) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """Returns CTC log-probs (B, T', V), their lengths (B,) and every block's output."""
        enc = self.encoder(feats, feat_lens, chunk_size=chunk_size)
        return self.ctc(enc.out), enc.lengths, enc.hidden

    def ctc_loss(
        self,
        log_probs: Tensor,
        lengths: Tensor,
        token_ids: Sequence[Sequence[int]],
    ) -> Tensor:
        """Summed CTC loss over the batch (blank = 0; infeasible utterances count as 0)."""
        if len(token_ids) != log_probs.size(0):
            raise ValueError(f"{len(token_ids)} transcripts for a batch of {log_probs.size(0)}")
        flat = [t for seq in token_ids for t in seq]
        if any(t == BLANK_ID or not 0 <= t < self.vocab_size for t in flat):
            raise ValueError(f"token ids must lie in [1, {self.vocab_size}) (0 is the blank)")
        device = log_probs.device
        targets = torch.tensor(flat, dtype=torch.long, device=device)
        target_lens = torch.tensor([len(seq) for seq in token_ids], dtype=torch.long, device=device)
        # ctc_loss wants (T, B, V); float32 keeps the forward-backward recursion stable
        # under mixed precision.
        return F.ctc_loss(
            log_probs.float().transpose(0, 1),
            targets,
            lengths.long(),
            target_lens,
            blank=BLANK_ID,
            reduction="sum",
            zero_infinity=True,
        )

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def build_asr_model(model_cfg: Mapping[str, Any], vocab_size: int) -> AsrModel:
    """Build an :class:`AsrModel` from a plain dict of :class:`EncoderConfig` options."""
    encoder = ConformerEncoder.from_config(EncoderConfig.from_dict(model_cfg))
    return AsrModel(encoder, vocab_size)


__all__ = ["AsrModel", "build_asr_model"]
