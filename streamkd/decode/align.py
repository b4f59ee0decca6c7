"""Reference token times: the best alignment of the reference transcript under a full-context model.

- CTC: the reference's CTC graph (``k2.ctc_graph``, the CTC topology restricted to the
  reference) intersected with the posteriors (``k2.intersect_dense``), best path by
  ``k2.shortest_path``. A token's frame is the first frame of its label run.
- Transducer: the regular RNN-T lattice of the reference (``T x (U+1)`` nodes; a blank moves
  to the next frame, a token stays on its frame; the path ends with a blank on the last
  frame) is built as a k2 FSA scored with the joiner's log-probs
  and searched with ``k2.shortest_path``. A token's frame is
  the frame it is emitted on.

Times are in ms: a frame's time is the end of its own 40 ms span, ``(t + 1) * 40``; this is
also when a decoder that sees frame ``t`` (and nothing after it) could show its token, so an
offline decode of the same posteriors has zero delay (see :mod:`streamkd.decode.emission`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import k2
import torch
from torch import Tensor

from streamkd.decode.word_delay import word_times
from streamkd.model.ctc import BLANK_ID
from streamkd.model.subsampling import ENCODER_FRAME_MS as FRAME_MS
from streamkd.model.subsampling import frame_time_ms
from streamkd.model.transducer import TransducerHead

log = logging.getLogger(__name__)


@dataclass
class Alignment:
    """One utterance: its reference tokens, the frame of each, and the path's log-probability."""

    tokens: List[int]
    frames: List[int]
    score: float

    @property
    def times_ms(self) -> List[float]:
        return [frame_time_ms(f) for f in self.frames]


def _path_token_frames(best: k2.Fsa, token_labels: Tensor) -> List[Optional[List[int]]]:
    """Per FSA of ``best``: the ``frame`` attribute of the arcs whose ``token_labels`` > 0.

    None where the FSA has no path (the reference could not be aligned).
    """
    shape = best.arcs.shape().remove_axis(1)
    frames = k2.RaggedTensor(shape, best.frame.to(torch.int32).contiguous()).tolist()
    labels = k2.RaggedTensor(shape, token_labels.to(torch.int32).contiguous()).tolist()
    out: List[Optional[List[int]]] = []
    for utt_frames, utt_labels in zip(frames, labels):
        out.append([f for f, lab in zip(utt_frames, utt_labels) if lab > 0] if utt_labels else None)
    return out


def ctc_forced_alignment(
    log_probs: Tensor, lengths: Tensor, references: Sequence[Sequence[int]], output_beam: float = 10.0
) -> List[Optional[Alignment]]:
    """Align each reference token sequence with its CTC log-posteriors (B, T, V).

    Returns one :class:`Alignment` per utterance, or None where the reference cannot fit its
    frames (more tokens, counting the blanks between repeats, than frames).
    """
    batch = log_probs.size(0)
    if len(references) != batch or lengths.numel() != batch:
        raise ValueError(f"{len(references)} references and {lengths.numel()} lengths for {batch} utterances")
    order = torch.argsort(lengths.cpu(), descending=True)  # k2 wants segments longest first
    segments = torch.stack(
        [order.to(torch.int32), torch.zeros(batch, dtype=torch.int32), lengths.cpu()[order].to(torch.int32)], dim=1
    )
    graphs = k2.ctc_graph([list(references[i]) for i in order.tolist()], modified=False, device=log_probs.device)
    dense = k2.DenseFsaVec(log_probs, segments)
    lattice = k2.intersect_dense(graphs, dense, output_beam=output_beam, frame_idx_name="frame")
    best = k2.shortest_path(lattice, use_double_scores=True)
    scores = best.get_tot_scores(use_double_scores=True, log_semiring=False).tolist()
    frames = _path_token_frames(best, best.aux_labels)
    out: List[Optional[Alignment]] = [None] * batch
    for position, utt in enumerate(order.tolist()):
        if frames[position] is not None:
            out[utt] = Alignment(list(references[utt]), frames[position], scores[position])
    return out


def _lattice_scores(log_probs: Tensor, symbols: Sequence[int]):
    """Token and blank scores of the lattice nodes from joiner log-probs (T, U+1, V).

    (k2.get_rnnt_logprobs_joint computes the same but refuses references longer than the
    utterance in frames, which the regular topology can still align.)
    """
    num_tokens = len(symbols)
    index = (
        torch.tensor(list(symbols), dtype=torch.int64).view(1, num_tokens, 1).expand(log_probs.size(0), num_tokens, 1)
    )
    px = torch.gather(log_probs[:, :num_tokens], 2, index).squeeze(2).t()  # (U, T)
    py = log_probs[..., BLANK_ID].t()  # (U+1, T)
    return px, py


def _rnnt_lattice(px: Tensor, py: Tensor, symbols: Sequence[int]) -> k2.Fsa:
    """The regular RNN-T lattice of one utterance as a k2 FSA (states ``t * (U+1) + u``).

    px: (U, T) log-prob of emitting token u+1 at node (t, u); py: (U+1, T) of a blank there.
    Arcs carry the frame they consume (``frame``) and the token (label) or 0 for a blank.
    """
    num_symbols, num_frames = px.size(0), py.size(1)
    rows = num_symbols + 1
    t = torch.arange(num_frames).repeat_interleave(rows)
    u = torch.arange(rows).repeat(num_frames)
    state = t * rows + u
    tokens = torch.tensor(list(symbols) + [0], dtype=torch.int64)
    emit = u < num_symbols
    blank = t < num_frames - 1
    last = (t == num_frames - 1) & (u == num_symbols)
    final_state = num_frames * rows
    src = torch.cat([state[emit], state[blank], state[last]])
    dst = torch.cat([state[emit] + 1, state[blank] + rows, torch.full((int(last.sum()),), final_state)])
    label = torch.cat(
        [tokens[u[emit]], torch.zeros(int(blank.sum()), dtype=torch.int64), torch.full((int(last.sum()),), -1)]
    )
    score = torch.cat([px[u[emit], t[emit]], py[u[blank], t[blank]], py[u[last], t[last]]])
    frame = torch.cat([t[emit], t[blank], t[last]])
    order = torch.sort(src, stable=True).indices  # k2 wants arcs grouped by source state
    arcs = torch.stack([src, dst, label, torch.zeros_like(src)], dim=1)[order].to(torch.int32)
    fsa = k2.Fsa(arcs)
    fsa.scores = score[order].float().contiguous()
    fsa.frame = frame[order].to(torch.int32)
    return fsa


@torch.no_grad()
def transducer_forced_alignment(
    head: TransducerHead, encoder_out: Tensor, lengths: Tensor, references: Sequence[Sequence[int]]
) -> List[Optional[Alignment]]:
    """The best regular RNN-T path of each reference (one token per arc, any number per frame).

    None where the utterance has no frames.
    """
    out: List[Optional[Alignment]] = []
    for b, reference in enumerate(references):
        num_frames = int(lengths[b])
        if num_frames == 0:
            out.append(None)
            continue
        symbols = torch.tensor([list(reference)], dtype=torch.int64, device=encoder_out.device)
        decoder_out = head.predictor_outputs(symbols)[0]  # (U+1, D)
        log_probs = (
            head.joiner(encoder_out[b, :num_frames].unsqueeze(1), decoder_out.unsqueeze(0)).float().log_softmax(-1)
        )
        px, py = _lattice_scores(log_probs.cpu(), list(reference))
        lattice = _rnnt_lattice(px, py, list(reference))
        best = k2.shortest_path(k2.create_fsa_vec([lattice]), use_double_scores=True)
        score = float(best.get_tot_scores(use_double_scores=True, log_semiring=False)[0])
        frames = _path_token_frames(best, best.labels)[0]
        out.append(None if frames is None else Alignment(list(reference), frames, score))
    return out


HEADS = ("ctc", "transducer")


def _align_batch(model, head: str, batch, references: List[List[int]]) -> List[Optional[Alignment]]:
    enc = model.encoder(batch.feats, batch.feat_lens)
    if head == "ctc":
        return ctc_forced_alignment(model.ctc(enc.out), enc.lengths, references)
    return transducer_forced_alignment(model.transducer, enc.out, enc.lengths, references)


@torch.no_grad()
def align_cuts(
    checkpoint: Path,
    cuts_path: Path,
    bpe_model: Path,
    out_path: Path,
    head: str = "ctc",
    max_duration: float = 120.0,
    device: str = "cpu",
) -> Dict[str, int]:
    """Reference token and word times of every cut of ``cuts_path`` under a full-context model.

    Writes one JSON line per utterance (sorted by id): ``tokens``, ``pieces``, ``frames``,
    ``times_ms`` (None when the reference could not be aligned), ``words`` (each with
    ``start_ms``/``end_ms``) and the path's log-probability ``score``. Returns counts.
    """
    from streamkd.data.loaders import eval_dataloader, load_cuts, unpack_batch
    from streamkd.data.tokenizer import Tokenizer
    from streamkd.model.checkpoint import load_model
    from streamkd.utils import atomic_path

    if head not in HEADS:
        raise ValueError(f"unknown head {head!r} for reference alignment; expected one of {', '.join(HEADS)}")
    tokenizer = Tokenizer(bpe_model)
    model, _ = load_model(checkpoint, expected_vocab_size=tokenizer.vocab_size)
    model.eval().to(device)
    if (model.ctc if head == "ctc" else model.transducer) is None:
        raise ValueError(f"{checkpoint}: the model has no {head} head (its head is {model.head.type!r})")
    if model.encoder.config.causal:
        log.warning(
            "%s: aligning with a streaming (causal) model; reference times are meant to come from the full-context teacher",
            checkpoint,
        )
    rows = []
    for raw in eval_dataloader(load_cuts(cuts_path), max_duration):
        batch = unpack_batch(raw).to(torch.device(device))
        references = tokenizer.encode(list(batch.texts))
        for utt, text, ref, alignment in zip(
            batch.cut_ids, batch.texts, references, _align_batch(model, head, batch, references)
        ):
            pieces = [tokenizer.sp.id_to_piece(t) for t in ref]
            row = {
                "id": utt,
                "ref": text,
                "tokens": ref,
                "pieces": pieces,
                "frames": None,
                "times_ms": None,
                "words": None,
                "score": None,
            }
            if alignment is not None:
                row.update(
                    frames=alignment.frames,
                    times_ms=alignment.times_ms,
                    words=word_times(pieces, alignment.times_ms),
                    score=round(alignment.score, 4),
                )
            rows.append(row)
    if not rows:
        raise ValueError(f"{cuts_path}: no utterances to align")
    with atomic_path(out_path) as tmp:
        with open(tmp, "w") as f:
            for row in sorted(rows, key=lambda r: r["id"]):
                f.write(json.dumps(row) + "\n")
    unaligned = sum(r["frames"] is None for r in rows)
    if unaligned:
        log.warning(
            "%s: %d of %d references could not be aligned (too many tokens for their frames)",
            cuts_path,
            unaligned,
            len(rows),
        )
    return {"utterances": len(rows), "unaligned": unaligned, "tokens": sum(len(r["tokens"]) for r in rows)}


__all__ = [
    "HEADS",
    "align_cuts",
    "FRAME_MS",
    "Alignment",
    "frame_time_ms",
    "ctc_forced_alignment",
    "transducer_forced_alignment",
    "word_times",
]
