"""Transducer searches: greedy, modified beam search and k2's fast_beam_search.

Every search is incremental: :meth:`advance` consumes encoder frames (any number, e.g. one
streaming chunk or a whole utterance) and :meth:`finish` returns token ids per stream. The
whole-utterance decoder and the streaming decoder therefore run the same code.

All three emit at most one non-blank token per frame by default (``max_symbols_per_frame``
for greedy), the constraint modified beam search and k2's RNN-T decoding streams are built
on; with a stateless predictor a search state is just the last ``context_size`` tokens.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import k2
import torch
from torch import Tensor

from streamkd.model.ctc import BLANK_ID
from streamkd.model.transducer import TransducerHead


def _check_frames(encoder_out: Tensor, lengths: Tensor, batch_size: int) -> None:
    if encoder_out.dim() != 3 or encoder_out.size(0) != batch_size:
        raise ValueError(f"expected encoder frames of shape ({batch_size}, T, D), got {tuple(encoder_out.shape)}")
    if lengths.numel() != batch_size or bool((lengths > encoder_out.size(1)).any()):
        raise ValueError(f"lengths {lengths.tolist()} do not fit encoder frames of shape {tuple(encoder_out.shape)}")


def _log_add(a: float, b: float) -> float:
    high, low = (a, b) if a >= b else (b, a)
    return high + math.log1p(math.exp(low - high))


def _context(tokens: List[int], size: int) -> List[int]:
    """The predictor's input after ``tokens``: the last ``size`` ids, blank-padded on the left."""
    tail = tokens[-size:] if tokens else []
    return [BLANK_ID] * (size - len(tail)) + tail


class GreedySearch:
    """Arg-max joiner output per frame; a non-blank token updates the predictor context."""

    def __init__(self, head: TransducerHead, batch_size: int, max_symbols_per_frame: int = 1) -> None:
        if max_symbols_per_frame < 1:
            raise ValueError(f"max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
        self.head = head
        self.max_symbols = max_symbols_per_frame
        self.hyps: List[List[int]] = [[] for _ in range(batch_size)]
        device = next(head.parameters()).device
        contexts = torch.full((batch_size, head.context_size), BLANK_ID, dtype=torch.int64, device=device)
        self.decoder_out = head.predictor_step(contexts)  # (B, J)

    @torch.no_grad()
    def advance(self, encoder_out: Tensor, lengths: Tensor) -> None:
        _check_frames(encoder_out, lengths, len(self.hyps))
        projected = self.head.project_encoder(encoder_out)
        lengths = lengths.to(encoder_out.device)
        for t in range(encoder_out.size(1)):
            rows = (lengths > t).nonzero().flatten()
            for _ in range(self.max_symbols):
                if rows.numel() == 0:
                    break
                best = self.head.step_log_probs(projected[rows, t], self.decoder_out[rows]).argmax(-1)
                emitted = best != BLANK_ID
                rows, tokens = rows[emitted], best[emitted]
                if rows.numel() == 0:
                    break
                for row, token in zip(rows.tolist(), tokens.tolist()):
                    self.hyps[row].append(token)
                contexts = torch.tensor(
                    [_context(self.hyps[r], self.head.context_size) for r in rows.tolist()],
                    dtype=torch.int64,
                    device=encoder_out.device,
                )
                self.decoder_out[rows] = self.head.predictor_step(contexts)

    def finish(self) -> List[List[int]]:
        return [list(h) for h in self.hyps]


class ModifiedBeamSearch:
    """Beam search with at most one token per frame (icefall's "modified beam search").

    Each stream keeps up to ``beam`` hypotheses (token sequence, log-probability). On every
    frame each hypothesis is extended by every token (blank keeps the sequence), the ``beam``
    best extensions survive, and extensions that spell the same sequence are merged by
    adding their probabilities.
    """

    def __init__(self, head: TransducerHead, batch_size: int, beam: int = 4) -> None:
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        self.head = head
        self.beam = beam
        self.device = next(head.parameters()).device
        self.beams: List[Dict[Tuple[int, ...], float]] = [{(): 0.0} for _ in range(batch_size)]

    @torch.no_grad()
    def advance(self, encoder_out: Tensor, lengths: Tensor) -> None:
        _check_frames(encoder_out, lengths, len(self.beams))
        projected = self.head.project_encoder(encoder_out)
        vocab = self.head.vocab_size
        for t in range(encoder_out.size(1)):
            active = [b for b in range(len(self.beams)) if int(lengths[b]) > t]
            if not active:
                continue
            hyp_rows: List[Tuple[int, Tuple[int, ...]]] = [(b, seq) for b in active for seq in self.beams[b]]
            contexts = torch.tensor(
                [_context(list(seq), self.head.context_size) for _, seq in hyp_rows],
                dtype=torch.int64,
                device=self.device,
            )
            stream_rows = torch.tensor([b for b, _ in hyp_rows], device=self.device)
            log_probs = self.head.step_log_probs(projected[stream_rows, t], self.head.predictor_step(contexts))
            prior = torch.tensor([self.beams[b][seq] for b, seq in hyp_rows], device=self.device, dtype=log_probs.dtype)
            scores = (log_probs + prior.unsqueeze(1)).cpu()

            start = 0
            for b in active:
                count = len(self.beams[b])
                block = scores[start : start + count].flatten()
                top = block.topk(min(self.beam, block.numel()))
                extended: Dict[Tuple[int, ...], float] = {}
                for score, flat in zip(top.values.tolist(), top.indices.tolist()):
                    seq = hyp_rows[start + flat // vocab][1]
                    token = flat % vocab
                    new_seq = seq if token == BLANK_ID else seq + (token,)
                    # Two extensions that spell the same sequence are one hypothesis.
                    extended[new_seq] = _log_add(extended[new_seq], score) if new_seq in extended else score
                self.beams[b] = extended
                start += count

    def finish(self) -> List[List[int]]:
        return [list(max(hyps.items(), key=lambda item: item[1])[0]) for hyps in self.beams]


class FastBeamSearch:
    """k2's fast_beam_search: RNN-T decoding streams constrained by a graph (default: trivial).

    The search state lives in one ``k2.RnntDecodingStream`` per utterance, so it resumes
    across calls like the other searches; the best path of the lattice is taken at the end.
    """

    def __init__(
        self,
        head: TransducerHead,
        batch_size: int,
        beam: float = 4.0,
        max_states: int = 32,
        max_contexts: int = 8,
        graph: Optional[k2.Fsa] = None,
    ) -> None:
        self.head = head
        device = next(head.parameters()).device
        if graph is None:
            graph = k2.trivial_graph(head.vocab_size - 1, device=device)
        self.graph = graph
        self.streams = [k2.RnntDecodingStream(graph) for _ in range(batch_size)]
        self.config = k2.RnntDecodingConfig(
            vocab_size=head.vocab_size,
            decoder_history_len=head.context_size,
            beam=beam,
            max_states=max_states,
            max_contexts=max_contexts,
        )
        self.frames = [0] * batch_size
        # k2 formats a lattice only from the decoding object that was flushed last.
        self._flushed: Optional[k2.RnntDecodingStreams] = None

    @torch.no_grad()
    def advance(self, encoder_out: Tensor, lengths: Tensor) -> None:
        _check_frames(encoder_out, lengths, len(self.streams))
        if encoder_out.size(1) == 0:
            return
        projected = self.head.project_encoder(encoder_out)
        decoding = k2.RnntDecodingStreams(self.streams, self.config)
        # Every stream advances over the padded frames too (k2 steps all streams together);
        # format_output later keeps only each stream's real frames.
        for t in range(encoder_out.size(1)):
            shape, contexts = decoding.get_contexts()
            stream_of_context = shape.row_ids(1).to(torch.int64)
            decoder_out = self.head.predictor_step(contexts.to(torch.int64))
            log_probs = self.head.step_log_probs(projected[stream_of_context, t], decoder_out)
            decoding.advance(log_probs.float())
        decoding.terminate_and_flush_to_streams()
        self._flushed = decoding
        for b, n in enumerate(lengths.tolist()):
            self.frames[b] += int(n)

    def finish(self) -> List[List[int]]:
        if self._flushed is None:
            return [[] for _ in self.streams]
        # A path must end with a blank on the last frame to reach a final state. If the beam
        # pruned every such path (a model sure of a token on the last frame), fall back to
        # treating the last frame's states as final rather than return nothing.
        complete = self._best_tokens(self._flushed.format_output(self.frames))
        partial: Optional[List[List[int]]] = None
        for b, tokens in enumerate(complete):
            if tokens is None:
                if partial is None:
                    partial = self._best_tokens(self._flushed.format_output(self.frames, allow_partial=True))
                complete[b] = partial[b] or []
        return complete

    @staticmethod
    def _best_tokens(lattice: k2.Fsa) -> List[Optional[List[int]]]:
        """Token ids of each stream's best path; None where the lattice has no complete path."""
        best = k2.shortest_path(lattice, use_double_scores=True)
        labels = k2.RaggedTensor(best.arcs.shape().remove_axis(1), best.labels.contiguous())
        arcs_per_stream = labels.tolist()
        tokens = labels.remove_values_leq(0).tolist()
        return [t if arcs else None for t, arcs in zip(tokens, arcs_per_stream)]


__all__ = ["GreedySearch", "ModifiedBeamSearch", "FastBeamSearch"]
