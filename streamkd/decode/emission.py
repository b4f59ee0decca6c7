"""When does a decoder emit each token, and how late is that against the reference times?

Emission time: a search is fed its frames in the pieces a real-time system would get them
(chunk by chunk for a streaming student, frame by frame for an offline model), and its best
hypothesis is read after every piece. A token of the final hypothesis is emitted at the time
of the first piece from which on every partial hypothesis starts with the final one up to
that token: later revisions of the hypothesis (beam search, CTC best-path changes) count, a
token shown and withdrawn does not.

The time of a piece:

- streaming: when the chunk can be computed, ``input_frames_needed(F) * 10 ms`` for the
  encoder frames ``0 .. F-1`` done after it, i.e. the chunk's end plus the 30 ms the
  front-end reads ahead, or the end of the audio if that comes first;
- offline (a full-context model, not streaming): the end of the frame itself,
  ``(t + 1) * 40 ms``, the convention of the reference times (:mod:`streamkd.decode.align`),
  so the teacher decoding its own posteriors shows near-zero delay.

Delay: hypothesis tokens are matched to reference tokens through the edit-distance
alignment (kaldialign); each correctly recognised token contributes ``emission time -
reference time``. Substituted, inserted and deleted tokens have no delay.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import kaldialign
import numpy as np
import torch
from torch import Tensor

from streamkd.data.loaders import Batch, eval_dataloader, load_cuts, unpack_batch
from streamkd.decode.methods import STREAMING_SUFFIX, parse_method
from streamkd.decode.run import Decoder, SearchOptions, load_decoder, stream_chunks
from streamkd.model.streaming import StreamingEncoder
from streamkd.model.subsampling import INPUT_FRAME_SHIFT_MS, frame_time_ms, input_frames_needed
from streamkd.utils import atomic_path, write_json

log = logging.getLogger(__name__)

EPS = -1  # kaldialign's gap symbol: no token id is negative

# A piece of frames for a search: (frames (B, n, ...), valid lengths (B,), time of each stream's piece in ms).
Piece = Tuple[Tensor, Tensor, List[float]]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def stable_emission_times(snapshots: Sequence[Tuple[float, Sequence[int]]], final: Sequence[int]) -> List[float]:
    """Emission time of every token of ``final`` from time-ordered partial hypotheses.

    Token i is emitted at the earliest snapshot from which on every snapshot starts with
    ``final[: i + 1]``. The last snapshot must be ``final`` itself.
    """
    if not snapshots or list(snapshots[-1][1]) != list(final):
        raise ValueError("the last partial hypothesis must be the final one")
    stable = [_common_prefix(tokens, final) for _, tokens in snapshots]
    for c in range(len(stable) - 2, -1, -1):  # shortest prefix kept from snapshot c on
        stable[c] = min(stable[c], stable[c + 1])
    times, c = [], 0
    for i in range(len(final)):
        while stable[c] < i + 1:
            c += 1
        times.append(float(snapshots[c][0]))
    return times


def track_emissions(search, pieces: Iterable[Piece], batch_size: int) -> Tuple[List[List[int]], List[List[float]]]:
    """Run ``search`` (advance/finish) over ``pieces``; returns final tokens and their emission times."""
    snapshots: List[List[Tuple[float, List[int]]]] = [[] for _ in range(batch_size)]
    for frames, lengths, times in pieces:
        search.advance(frames, lengths)
        partial = search.finish()
        for b in range(batch_size):
            if int(lengths[b]) > 0:
                snapshots[b].append((times[b], list(partial[b])))
    final = search.finish()
    for b in range(batch_size):
        if not snapshots[b] or snapshots[b][-1][1] != list(final[b]):
            snapshots[b].append((snapshots[b][-1][0] if snapshots[b] else 0.0, list(final[b])))
    return final, [stable_emission_times(snapshots[b], final[b]) for b in range(batch_size)]


def chunk_ready_ms(frames_done: int, input_frames: Tensor) -> List[float]:
    """When encoder frames ``0 .. frames_done-1`` can be computed, per stream of ``input_frames`` total."""
    needed = input_frames_needed(frames_done)
    return [min(needed, int(n)) * INPUT_FRAME_SHIFT_MS for n in input_frames.tolist()]


def streaming_pieces(stream: StreamingEncoder, batch: Batch) -> Iterator[Piece]:
    """The encoder chunks of chunk-by-chunk streaming, each with its arrival time."""
    for out, lengths, frames_done in stream_chunks(stream, batch):
        yield out, lengths, chunk_ready_ms(frames_done, batch.feat_lens)


def offline_pieces(encoder_out: Tensor, lengths: Tensor) -> Iterator[Piece]:
    """Whole-utterance encoder frames handed out one at a time, each at the end of its own span."""
    for t in range(encoder_out.size(1)):
        yield encoder_out[:, t : t + 1], (lengths > t).to(lengths.dtype), [frame_time_ms(t)] * encoder_out.size(0)


def token_delays(
    ref_tokens: Sequence[int], ref_times: Sequence[float], hyp_tokens: Sequence[int], hyp_times: Sequence[float]
) -> List[float]:
    """``hyp time - ref time`` of every correctly recognised token, in reference order."""
    if len(ref_tokens) != len(ref_times) or len(hyp_tokens) != len(hyp_times):
        raise ValueError("every token needs a time")
    delays, i, j = [], 0, 0
    for ref, hyp in kaldialign.align(list(ref_tokens), list(hyp_tokens), EPS):
        if ref != EPS and ref == hyp:
            delays.append(float(hyp_times[j]) - float(ref_times[i]))
        i += ref != EPS
        j += hyp != EPS
    return delays


@dataclass
class DelaySummary:
    """Emission delay over every correctly recognised token of a test set, in ms."""

    mean_ms: Optional[float]
    median_ms: Optional[float]
    p90_ms: Optional[float]
    min_ms: Optional[float]
    max_ms: Optional[float]
    num_matched: int  # tokens with a delay (correct and aligned)
    num_reference: int  # reference tokens of the aligned utterances
    num_hypothesis: int
    num_utterances: int
    num_unaligned: int  # utterances without reference times (left out)

    @classmethod
    def from_delays(cls, delays: Sequence[float], **counts: int) -> "DelaySummary":
        if not len(delays):
            return cls(None, None, None, None, None, 0, **counts)
        values = np.asarray(delays, dtype=np.float64)
        stats = [
            float(np.mean(values)),
            float(np.median(values)),
            float(np.percentile(values, 90)),
            float(values.min()),
            float(values.max()),
        ]
        return cls(*[round(v, 3) for v in stats], num_matched=len(values), **counts)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def read_reference_times(path: Path) -> Dict[str, Optional[Dict[str, Any]]]:
    """Reference alignments by utterance id (None for an utterance that could not be aligned)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference alignments not found: {path}")
    out: Dict[str, Optional[Dict[str, Any]]] = {}
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
                utt = str(row["id"])
                if row["times_ms"] is None:
                    out[utt] = None
                    continue
                tokens, times = [int(t) for t in row["tokens"]], [float(t) for t in row["times_ms"]]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{line_no}: not a reference alignment ({e})") from e
            if len(tokens) != len(times):
                raise ValueError(f"{path}:{line_no}: {len(tokens)} tokens but {len(times)} times")
            out[utt] = {"tokens": tokens, "times_ms": times}
    return out


def _batch_emissions(loaded, search_decoder: Decoder, batch: Batch) -> Tuple[List[List[int]], List[List[float]]]:
    size = batch.feats.size(0)
    search = search_decoder.new_search(size)
    if loaded.stream is not None:
        return track_emissions(search, streaming_pieces(loaded.stream, batch), size)
    enc = loaded.model.encoder(batch.feats, batch.feat_lens, chunk_size=loaded.chunk_size)
    return track_emissions(search, offline_pieces(enc.out, enc.lengths), size)


def _incremental_decoder(loaded, options: SearchOptions) -> Decoder:
    """The decoder a token-level method reads partial results from (CTC: the online intersecter)."""
    method = loaded.method
    if method.head == "ctc" and method.search != "1best":
        raise ValueError(f"emission times need token-level decoding; {method.name!r} outputs words")
    if method.head == "ctc" and not method.streaming:
        incremental = parse_method(method.name + STREAMING_SUFFIX)
        return Decoder(loaded.model, incremental, loaded.tokenizer, loaded.graph, options)
    return loaded.decoder


@torch.no_grad()
def measure_emission_delay(
    checkpoint: Path,
    cuts_path: Path,
    bpe_model: Path,
    reference_path: Path,
    emissions_path: Path,
    summary_path: Path,
    method: str = "ctc-1best-streaming",
    graph_path: Optional[Path] = None,
    chunk_size: Optional[int] = None,
    options: SearchOptions = SearchOptions(),
    max_duration: float = 120.0,
    device: str = "cpu",
) -> Dict[str, Any]:
    """Decode ``cuts_path`` tracking emission times; write per-utterance times and the delay summary.

    A ``-streaming`` method runs the student chunk by chunk; any other method runs the encoder
    over whole utterances and times each token by its frame (the offline reference point).
    """
    loaded = load_decoder(checkpoint, bpe_model, method, graph_path, chunk_size, options, device)
    search_decoder = _incremental_decoder(loaded, options)
    references = read_reference_times(reference_path)
    rows, all_delays = [], []
    counts = {"num_reference": 0, "num_hypothesis": 0, "num_utterances": 0, "num_unaligned": 0}
    for raw in eval_dataloader(load_cuts(cuts_path), max_duration):
        batch = unpack_batch(raw).to(torch.device(device))
        tokens, times = _batch_emissions(loaded, search_decoder, batch)
        for utt, hyp, hyp_times in zip(batch.cut_ids, tokens, times):
            if utt not in references:
                raise ValueError(f"{reference_path}: no reference alignment for utterance {utt!r} of {cuts_path}")
            ref = references[utt]
            counts["num_utterances"] += 1
            counts["num_hypothesis"] += len(hyp)
            row: Dict[str, Any] = {"id": utt, "tokens": hyp, "emission_ms": hyp_times, "delays_ms": None}
            if ref is None:
                counts["num_unaligned"] += 1
            else:
                counts["num_reference"] += len(ref["tokens"])
                row["delays_ms"] = token_delays(ref["tokens"], ref["times_ms"], hyp, hyp_times)
                all_delays.extend(row["delays_ms"])
            rows.append(row)
    if not rows:
        raise ValueError(f"{cuts_path}: no utterances to decode")
    with atomic_path(emissions_path) as tmp:
        with open(tmp, "w") as f:
            for row in sorted(rows, key=lambda r: r["id"]):
                f.write(json.dumps(row) + "\n")
    summary = DelaySummary.from_delays(all_delays, **counts).to_dict()
    summary.update(
        method=loaded.method.name,
        mode="streaming" if loaded.stream is not None else "offline",
        chunk_size=loaded.chunk_size if loaded.streams_by_design else None,
        latency_ms=loaded.model.encoder.algorithmic_latency_ms(loaded.chunk_size) if loaded.streams_by_design else None,
    )
    write_json(summary_path, summary)
    if summary["mean_ms"] is None or math.isnan(summary["mean_ms"]):
        log.warning("%s: no correctly recognised token, so no emission delay", method)
    return summary


__all__ = [
    "DelaySummary",
    "stable_emission_times",
    "track_emissions",
    "chunk_ready_ms",
    "streaming_pieces",
    "offline_pieces",
    "token_delays",
    "read_reference_times",
    "measure_emission_delay",
]
