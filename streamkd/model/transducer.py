"""Stateless transducer head: an embedding predictor with a short left context and a joiner.

The predictor ("decoder" in RNN-T papers) has no recurrence: it embeds the last
``context_size`` emitted tokens and mixes them with a depthwise 1-D convolution. That makes
decoding states tiny (a tuple of token ids), lets beam search merge hypotheses that share a
context, and is what k2's ``fast_beam_search`` (``RnntDecodingStreams``) assumes.

Training uses k2's pruned RNN-T loss: a "simple" loss whose joiner is a sum of two linear
projections (cheap enough for the whole T x U lattice) yields, through its gradients, a
band of ``prune_range`` symbols per frame; the real joiner is then evaluated on that band
only. Token 0 is the blank, as for CTC.
"""

from __future__ import annotations

import logging
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamkd.k2_support import require_k2

from .ctc import BLANK_ID
from .heads import HeadConfig

log = logging.getLogger(__name__)

# Log-probability used for "impossible" entries of the collapsed KD distribution: finite, so
# a KL term over it stays finite (0 * log 0 is taken as 0 by torch's kl_div only for target 0).
IMPOSSIBLE_LOG_PROB = -1e4


def _k2():
    return require_k2("a transducer head (the pruned RNN-T loss)")


class StatelessPredictor(nn.Module):
    """Token ids (N, U) -> predictor output (N, U, decoder_dim), each from its last ``context_size`` tokens."""

    def __init__(self, vocab_size: int, decoder_dim: int, context_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.decoder_dim = decoder_dim
        self.context_size = context_size
        # padding_idx keeps the blank's embedding at zero, so the zero left-padding used in
        # training is exactly the "blank, blank, ..." context decoding starts from.
        self.embedding = nn.Embedding(vocab_size, decoder_dim, padding_idx=BLANK_ID)
        self.context_conv = (
            nn.Conv1d(decoder_dim, decoder_dim, kernel_size=context_size, groups=decoder_dim, bias=False)
            if context_size > 1
            else None
        )

    def forward(self, tokens: Tensor, need_pad: bool = True) -> Tensor:
        """``need_pad=True``: (N, U) sequences, output u sees tokens u-context+1..u (blank before 0).

        ``need_pad=False``: (N, context_size) contexts as decoding holds them; returns (N, 1, D).
        """
        emb = self.embedding(tokens.clamp(min=0))
        if self.context_conv is not None:
            emb = emb.transpose(1, 2)
            if need_pad:
                emb = F.pad(emb, (self.context_size - 1, 0))
            elif emb.size(-1) != self.context_size:
                raise ValueError(f"expected contexts of {self.context_size} tokens, got {tokens.size(-1)}")
            emb = self.context_conv(emb).transpose(1, 2)
        return F.relu(emb)


class Joiner(nn.Module):
    """Combines encoder and predictor frames into logits over the vocabulary."""

    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.decoder_proj = nn.Linear(decoder_dim, joiner_dim)
        self.output = nn.Linear(joiner_dim, vocab_size)

    def forward(self, encoder: Tensor, decoder: Tensor, project_input: bool = True) -> Tensor:
        """Broadcasting sum of the two inputs; ``project_input=False`` when both are already projected."""
        if project_input:
            encoder, decoder = self.encoder_proj(encoder), self.decoder_proj(decoder)
        return self.output(torch.tanh(encoder + decoder))


class TransducerLoss(NamedTuple):
    simple: Tensor  # summed over the batch
    pruned: Tensor  # summed over the batch


class PaddedTargets(NamedTuple):
    symbols: Tensor  # (B, S) int64, blank-padded, S >= 1
    lengths: Tensor  # (B,) int64
    boundary: Tensor  # (B, 4) int64: [0, 0, U_b, T_b] as k2 wants it


class TransducerHead(nn.Module):
    """Predictor + joiner, and the two linear "simple" projections the pruned loss needs."""

    def __init__(self, encoder_dim: int, vocab_size: int, config: HeadConfig) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must include blank and at least one token, got {vocab_size}")
        _k2()  # fail when the model is built, not at its first loss
        self.vocab_size = vocab_size
        self.config = config
        self.predictor = StatelessPredictor(vocab_size, config.decoder_dim, config.context_size)
        self.joiner = Joiner(encoder_dim, config.decoder_dim, config.joiner_dim, vocab_size)
        self.simple_am_proj = nn.Linear(encoder_dim, vocab_size)
        self.simple_lm_proj = nn.Linear(config.decoder_dim, vocab_size)

    @property
    def context_size(self) -> int:
        return self.config.context_size

    # -- targets ---------------------------------------------------------------------------

    def pad_targets(self, targets: Sequence[Sequence[int]], encoder_lens: Tensor) -> PaddedTargets:
        device = encoder_lens.device
        if len(targets) != encoder_lens.numel():
            raise ValueError(f"{len(targets)} transcripts for a batch of {encoder_lens.numel()}")
        flat = [t for seq in targets for t in seq]
        if any(t == BLANK_ID or not 0 <= t < self.vocab_size for t in flat):
            raise ValueError(f"token ids must lie in [1, {self.vocab_size}) (0 is the blank)")
        lengths = torch.tensor([len(seq) for seq in targets], dtype=torch.int64, device=device)
        # At least one column: k2's prune-range computation needs S >= 1 even for a batch of
        # empty transcripts (the boundary keeps the padding out of the loss).
        width = max(1, int(lengths.max()) if len(targets) else 1)
        symbols = torch.full((len(targets), width), BLANK_ID, dtype=torch.int64, device=device)
        for b, seq in enumerate(targets):
            if seq:
                symbols[b, : len(seq)] = torch.as_tensor(seq, dtype=torch.int64, device=device)
        boundary = torch.zeros(len(targets), 4, dtype=torch.int64, device=device)
        boundary[:, 2] = lengths
        boundary[:, 3] = encoder_lens.to(torch.int64)
        return PaddedTargets(symbols, lengths, boundary)

    def predictor_outputs(self, symbols: Tensor) -> Tensor:
        """(B, S) targets -> (B, S+1, decoder_dim): the predictor before each of S+1 lattice rows."""
        with_start = F.pad(symbols, (1, 0), value=BLANK_ID)
        return self.predictor(with_start)

    # -- loss ------------------------------------------------------------------------------

    def _simple_loss(self, encoder_out: Tensor, decoder_out: Tensor, padded: PaddedTargets, return_grad: bool):
        return _k2().rnnt_loss_smoothed(
            lm=self.simple_lm_proj(decoder_out).float(),
            am=self.simple_am_proj(encoder_out).float(),
            symbols=padded.symbols,
            termination_symbol=BLANK_ID,
            lm_only_scale=self.config.lm_scale,
            am_only_scale=self.config.am_scale,
            boundary=padded.boundary,
            reduction="sum",
            return_grad=return_grad,
        )

    @staticmethod
    def _prunable(padded: PaddedTargets, num_frames: int) -> bool:
        """k2's losses and prune ranges need at least as many frames as symbols (padded sizes)."""
        return num_frames >= padded.symbols.size(1)

    @staticmethod
    def full_ranges(batch: int, num_frames: int, num_symbols: int, device) -> Tensor:
        """Ranges that keep the whole lattice: every frame sees rows 0..S."""
        rows = torch.arange(num_symbols + 1, dtype=torch.int64, device=device)
        return rows.expand(batch, num_frames, num_symbols + 1).contiguous()

    def loss(self, encoder_out: Tensor, encoder_lens: Tensor, targets: Sequence[Sequence[int]]) -> TransducerLoss:
        """Simple and pruned RNN-T losses, each summed over the batch.

        encoder_out: (B, T, D) with ``T == max(encoder_lens)`` or more (extra frames are cut).
        """
        encoder_out = encoder_out[:, : int(encoder_lens.max())]
        token_lens = torch.tensor([len(seq) for seq in targets], device=encoder_lens.device)
        feasible = token_lens <= encoder_lens
        if not bool(feasible.all()):
            # k2 needs at least as many frames as tokens. Such utterances (very fast speech or
            # a bad transcript) contribute no loss, as infeasible ones do under CTC.
            keep = feasible.nonzero().flatten()
            log.warning(
                "%d utterance(s) with more tokens than frames left out of the RNN-T loss", int((~feasible).sum())
            )
            if keep.numel() == 0:
                zero = encoder_out.sum() * 0.0
                return TransducerLoss(simple=zero, pruned=zero)
            return self.loss(encoder_out[keep], encoder_lens[keep], [targets[i] for i in keep.tolist()])
        padded = self.pad_targets(targets, encoder_lens)
        decoder_out = self.predictor_outputs(padded.symbols)
        simple, (px_grad, py_grad) = self._simple_loss(encoder_out, decoder_out, padded, return_grad=True)
        ranges = _k2().get_rnnt_prune_ranges(px_grad, py_grad, padded.boundary, self.config.prune_range)
        logits = self.pruned_logits(encoder_out, decoder_out, ranges)
        pruned = _k2().rnnt_loss_pruned(
            logits=logits.float(),
            symbols=padded.symbols,
            ranges=ranges,
            termination_symbol=BLANK_ID,
            boundary=padded.boundary,
            reduction="sum",
        )
        return TransducerLoss(simple=simple, pruned=pruned)

    def full_loss(self, encoder_out: Tensor, encoder_lens: Tensor, targets: Sequence[Sequence[int]]) -> Tensor:
        """The unpruned RNN-T loss over the whole T x (U+1) lattice (k2.rnnt_loss); for checks and tiny models."""
        encoder_out = encoder_out[:, : int(encoder_lens.max())]
        padded = self.pad_targets(targets, encoder_lens)
        decoder_out = self.predictor_outputs(padded.symbols)
        logits = self.joiner(encoder_out.unsqueeze(2), decoder_out.unsqueeze(1))
        return _k2().rnnt_loss(
            logits=logits.float(),
            symbols=padded.symbols,
            termination_symbol=BLANK_ID,
            boundary=padded.boundary,
            reduction="sum",
        )

    # -- lattice access (decoding and token-level KD) ----------------------------------------

    def pruned_logits(self, encoder_out: Tensor, decoder_out: Tensor, ranges: Tensor) -> Tensor:
        """Joiner logits (B, T, R, V) on the lattice nodes (t, ranges[b, t, r])."""
        am, lm = _k2().do_rnnt_pruning(
            am=self.joiner.encoder_proj(encoder_out), lm=self.joiner.decoder_proj(decoder_out), ranges=ranges
        )
        return self.joiner(am, lm, project_input=False)

    @torch.no_grad()
    def prune_ranges(self, encoder_out: Tensor, encoder_lens: Tensor, targets: Sequence[Sequence[int]]) -> Tensor:
        """(B, T, R) lattice rows to keep per frame, as the pruned loss chooses them (no gradient).

        Pass the same ranges to two models' :meth:`collapsed_log_probs` to compare them on the
        same lattice nodes.
        """
        encoder_out = encoder_out[:, : int(encoder_lens.max())]
        padded = self.pad_targets(targets, encoder_lens)
        b, t, s = encoder_out.size(0), encoder_out.size(1), padded.symbols.size(1)
        if not self._prunable(padded, t):
            return self.full_ranges(b, t, s, encoder_out.device)
        decoder_out = self.predictor_outputs(padded.symbols)
        _, (px_grad, py_grad) = self._simple_loss(encoder_out, decoder_out, padded, return_grad=True)
        return _k2().get_rnnt_prune_ranges(px_grad, py_grad, padded.boundary, self.config.prune_range)

    def collapsed_log_probs(
        self,
        encoder_out: Tensor,
        encoder_lens: Tensor,
        targets: Sequence[Sequence[int]],
        ranges: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Collapsed output distribution on lattice nodes, for token-level KD on a transducer.

        At node (t, u) the joiner's distribution over V tokens is collapsed to three classes:
        ``[blank, correct, rest]`` where *correct* is the next reference token y[u+1] and *rest*
        is everything else (Panchapagesan et al., 2021). This keeps the KD cost independent of
        V and concentrates it on what the RNN-T loss depends on.

        Nodes are those of the pruned lattice region: ``ranges`` (B, T, R) from
        :meth:`prune_ranges` of either model; None uses the whole lattice (R = U_max + 1; only
        for short targets). Returns ``(log_probs (B, T, R, 3), valid (B, T, R) bool)``; valid
        is False for padded frames and rows past U_b. On the last row (u = U_b) there is no
        next token: *correct* is :data:`IMPOSSIBLE_LOG_PROB` and *rest* excludes only the blank.
        Differentiable w.r.t. this model (detach the teacher's side).

        Recommended token KD: ``ranges`` from the student's :meth:`prune_ranges`, then
        ``sum(valid * KL(teacher || student))`` over the three classes, per frame-node.
        """
        encoder_out = encoder_out[:, : int(encoder_lens.max())]
        padded = self.pad_targets(targets, encoder_lens)
        b, t = encoder_out.shape[:2]
        if ranges is None:
            ranges = self.full_ranges(b, t, padded.symbols.size(1), encoder_out.device)
        if ranges.shape[:2] != (b, t):
            raise ValueError(f"ranges of shape {tuple(ranges.shape)} do not fit {b} utterances of {t} frames")
        decoder_out = self.predictor_outputs(padded.symbols)
        log_probs = self.pruned_logits(encoder_out, decoder_out, ranges).float().log_softmax(-1)  # (B,T,R,V)

        # The next reference token at each node (blank-padded past U_b).
        next_tokens = F.pad(padded.symbols, (0, 1), value=BLANK_ID)  # (B, S+1)
        correct_ids = torch.gather(next_tokens.unsqueeze(1).expand(b, t, -1), 2, ranges)  # (B,T,R)
        has_next = ranges < padded.lengths.view(b, 1, 1)

        blank = log_probs[..., BLANK_ID]
        correct = torch.gather(log_probs, 3, correct_ids.unsqueeze(-1)).squeeze(-1)
        correct = torch.where(has_next, correct, torch.full_like(correct, IMPOSSIBLE_LOG_PROB))
        excluded = F.one_hot(correct_ids, self.vocab_size).bool() & has_next.unsqueeze(-1)
        excluded[..., BLANK_ID] = True
        rest = log_probs.masked_fill(excluded, float("-inf")).logsumexp(-1)
        rest = rest.clamp(min=IMPOSSIBLE_LOG_PROB)  # V == 2 on the last row leaves nothing

        frame_valid = torch.arange(t, device=encoder_out.device).view(1, t, 1) < encoder_lens.view(b, 1, 1)
        valid = frame_valid & (ranges <= padded.lengths.view(b, 1, 1))
        return torch.stack([blank, correct, rest], dim=-1), valid

    # -- decoding helpers --------------------------------------------------------------------

    def predictor_step(self, contexts: Tensor) -> Tensor:
        """(N, context_size) token contexts -> projected predictor outputs (N, joiner_dim)."""
        out = self.predictor(contexts, need_pad=False).squeeze(1)
        return self.joiner.decoder_proj(out)

    def project_encoder(self, encoder_out: Tensor) -> Tensor:
        return self.joiner.encoder_proj(encoder_out)

    def step_log_probs(self, projected_encoder: Tensor, projected_decoder: Tensor) -> Tensor:
        """Log-probs (N, V) from already projected encoder (N, J) and predictor (N, J) frames."""
        return self.joiner(projected_encoder, projected_decoder, project_input=False).log_softmax(-1)


def loss_parts(loss: TransducerLoss) -> Dict[str, Tensor]:
    return {"rnnt_simple": loss.simple.detach(), "rnnt_pruned": loss.pruned.detach()}


__all__ = [
    "IMPOSSIBLE_LOG_PROB",
    "StatelessPredictor",
    "Joiner",
    "TransducerHead",
    "TransducerLoss",
    "PaddedTargets",
    "loss_parts",
]
