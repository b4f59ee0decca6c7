"""Encoder + output head(s): the model the trainer optimises and the decoder runs."""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ctc import BLANK_ID, CTCHead
from .encoder import ConformerEncoder, EncoderConfig
from .heads import HeadConfig
from .transducer import TransducerHead, loss_parts


class AsrModel(nn.Module):
    """Conformer encoder with a CTC head, a stateless transducer head, or both.

    ``config`` is a plain, JSON-serialisable dict; ``AsrModel.from_config(model.config)``
    rebuilds a model with identical structure, so a checkpoint only needs it and the
    state dict.
    """

    def __init__(self, encoder: ConformerEncoder, vocab_size: int, head: Optional[HeadConfig] = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.vocab_size = vocab_size
        self.head = head or HeadConfig()
        # The CTC head reuses the encoder's dropout rate so the config needs no extra key.
        self.ctc = CTCHead(encoder.d_model, vocab_size, dropout=encoder.config.dropout) if self.head.has_ctc else None
        self.transducer = TransducerHead(encoder.d_model, vocab_size, self.head) if self.head.has_transducer else None

    @property
    def config(self) -> Dict[str, Any]:
        return {"encoder": self.encoder.config.to_dict(), "vocab_size": self.vocab_size, "head": self.head.to_dict()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "AsrModel":
        unknown = sorted(set(config) - {"encoder", "vocab_size", "head"})
        if unknown:
            raise ValueError(f"unknown model config key(s): {', '.join(unknown)}")
        # Checkpoints written before heads were configurable carry no "head": they are CTC.
        return build_asr_model(config["encoder"], int(config["vocab_size"]), config.get("head"))

    def forward(
        self,
        feats: Tensor,
        feat_lens: Tensor,
        chunk_size: Optional[int] = None,
    ) -> Tuple[Optional[Tensor], Tensor, List[Tensor]]:
        """Returns CTC log-probs (B, T', V), their lengths (B,) and every block's output.

        A transducer-only model has no CTC output: the first element is None. The encoder
        output that the transducer head reads is ``hidden[-1]``.
        """
        enc = self.encoder(feats, feat_lens, chunk_size=chunk_size)
        log_probs = self.ctc(enc.out) if self.ctc is not None else None
        return log_probs, enc.lengths, enc.hidden

    def asr_loss(
        self,
        log_probs: Optional[Tensor],
        lengths: Tensor,
        hidden: Sequence[Tensor],
        token_ids: Sequence[Sequence[int]],
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The training loss of whichever head(s) the model has, summed over the batch.

        Takes :meth:`forward`'s outputs. Returns ``(loss, parts)`` where ``parts`` holds the
        detached, batch-summed components ("ctc", "rnnt_simple", "rnnt_pruned") for logging.
        Transducer: ``simple_loss_scale * simple + pruned``; with both heads ``ctc_scale * ctc``
        is added.
        """
        parts: Dict[str, Tensor] = {}
        total = hidden[-1].new_zeros(())
        if self.transducer is not None:
            rnnt = self.transducer.loss(hidden[-1], lengths, token_ids)
            parts.update(loss_parts(rnnt))
            total = total + self.head.simple_loss_scale * rnnt.simple + rnnt.pruned
        if self.ctc is not None:
            if log_probs is None:
                raise ValueError("the model has a CTC head but no CTC log-probs were given")
            ctc = self.ctc_loss(log_probs, lengths, token_ids)
            parts["ctc"] = ctc.detach()
            total = total + (self.head.ctc_scale if self.transducer is not None else 1.0) * ctc
        return total, parts

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


def build_asr_model(
    model_cfg: Mapping[str, Any],
    vocab_size: int,
    head: Union[HeadConfig, Mapping[str, Any], None] = None,
) -> AsrModel:
    """Build an :class:`AsrModel` from plain dicts of :class:`EncoderConfig` and :class:`HeadConfig` options."""
    encoder = ConformerEncoder.from_config(EncoderConfig.from_dict(model_cfg))
    head_config = head if isinstance(head, HeadConfig) else HeadConfig.from_dict(head)
    return AsrModel(encoder, vocab_size, head_config)


__all__ = ["AsrModel", "build_asr_model"]
