"""When does a decoder emit each token and word?

Emission time: a search is fed its frames in the pieces a real-time system would get them
(chunk by chunk for a streaming student) and its best hypothesis is read after every piece.
A token of the final hypothesis is emitted at the time of the first piece from which on
every partial hypothesis starts with the final one up to that token: later revisions of the
hypothesis (beam search, CTC best-path changes) count, a token shown and withdrawn does not.

The time of a piece:

- streaming: when the chunk can be computed, i.e. when the last input frame it reads has
  been recorded. lhotse's fbank frames are centred on their 10 ms shift
  (``snip_edges=False``), so input frames ``0 .. n-1`` are complete at ``n * 10 + 7.5`` ms
  (:func:`streamkd.model.subsampling.input_frames_ready_ms`), or at the end of the audio if
  that comes first;
- offline (a full-context model): the end of the utterance, since the model needs all of
  it; the delay then is the real wait of an offline system (compute time not included).

Each emission record holds the hypothesis tokens with their times and its words with the
time of their first and last token, so that :mod:`streamkd.decode.word_delay` can compute
delays against any reference word times, now or later, without decoding again.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from streamkd.data.loaders import Batch, eval_dataloader, load_cuts, unpack_batch
from streamkd.decode.methods import STREAMING_SUFFIX, parse_method
from streamkd.decode.run import Decoder, SearchOptions, load_decoder, stream_chunks
from streamkd.decode.word_delay import (
    ReferenceWords,
    merge_references,
    references_from_cuts,
    references_from_teacher,
    summarise_delays,
    word_times,
)
from streamkd.model.streaming import StreamingEncoder
from streamkd.model.subsampling import input_frames_needed, input_frames_ready_ms
from streamkd.utils import atomic_path, write_json

log = logging.getLogger(__name__)

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


def chunk_ready_ms(frames_done: int, durations_ms: Sequence[float]) -> List[float]:
    """When encoder frames ``0 .. frames_done-1`` can be computed, per stream of the given durations."""
    ready = input_frames_ready_ms(input_frames_needed(frames_done))
    return [min(ready, float(d)) for d in durations_ms]


def streaming_pieces(stream: StreamingEncoder, batch: Batch, durations_ms: Sequence[float]) -> Iterator[Piece]:
    """The encoder chunks of chunk-by-chunk streaming, each with its arrival time."""
    for out, lengths, frames_done in stream_chunks(stream, batch):
        yield out, lengths, chunk_ready_ms(frames_done, durations_ms)


def offline_pieces(encoder_out: Tensor, lengths: Tensor, durations_ms: Sequence[float]) -> Iterator[Piece]:
    """A full-context model's frames: all of them at once, when the utterance has ended."""
    yield encoder_out, lengths, [float(d) for d in durations_ms]


def hypothesis_words(pieces: Sequence[str], times_ms: Sequence[float]) -> List[List[Any]]:
    """``[word, first-token ms, last-token ms]`` of every word of a hypothesis."""
    return [[w["word"], w["start_ms"], w["end_ms"]] for w in word_times(pieces, times_ms)]


def _batch_emissions(loaded, search_decoder: Decoder, batch: Batch, durations_ms: Sequence[float]):
    size = batch.feats.size(0)
    search = search_decoder.new_search(size)
    if loaded.stream is not None:
        return track_emissions(search, streaming_pieces(loaded.stream, batch, durations_ms), size)
    enc = loaded.model.encoder(batch.feats, batch.feat_lens, chunk_size=loaded.chunk_size)
    return track_emissions(search, offline_pieces(enc.out, enc.lengths, durations_ms), size)


def _incremental_decoder(loaded, options: SearchOptions) -> Decoder:
    """The decoder a token-level method reads partial results from (CTC 1-best: the online intersecter)."""
    method = loaded.method
    if method.head == "ctc" and method.search not in ("1best", "greedy"):
        raise ValueError(
            f"emission times need a token-level search; {method.name!r} searches a word graph, whose "
            "partial results are not tokens (use ctc-1best or ctc-greedy, -streaming for chunk by chunk)"
        )
    if method.head == "ctc" and method.search == "1best" and not method.streaming:
        incremental = parse_method(method.name + STREAMING_SUFFIX)
        return Decoder(loaded.model, incremental, loaded.tokenizer, loaded.graph, options)
    return loaded.decoder


def reference_words_for(cuts, teacher_alignment: Optional[Path]) -> Dict[str, Optional[ReferenceWords]]:
    """The supervisions' word times, and the teacher's alignment only where those are absent."""
    references = references_from_cuts(cuts)
    if teacher_alignment is not None and any(r is None for r in references.values()):
        teacher = references_from_teacher(teacher_alignment)
        missing = [utt for utt, r in references.items() if r is None and utt not in teacher]
        if missing:
            raise ValueError(f"{teacher_alignment}: no reference alignment for utterance {missing[0]!r}")
        references = merge_references(references, teacher)
    return references


@torch.no_grad()
def measure_emission_delay(
    checkpoint: Path,
    cuts_path: Path,
    bpe_model: Path,
    emissions_path: Path,
    summary_path: Path,
    teacher_alignment: Optional[Path] = None,
    method: str = "ctc-1best-streaming",
    graph_path: Optional[Path] = None,
    chunk_size: Optional[int] = None,
    options: SearchOptions = SearchOptions(),
    max_duration: float = 120.0,
    device: str = "cpu",
) -> Dict[str, Any]:
    """Decode ``cuts_path`` tracking emission times; write the emission records and the delay summary.

    A ``-streaming`` method runs the student chunk by chunk; any other method runs the encoder
    over whole utterances, which are only complete when the utterance ends. Reference word
    times are the cuts' word alignments, or ``teacher_alignment`` where a cut has none.
    """
    loaded = load_decoder(checkpoint, bpe_model, method, graph_path, chunk_size, options, device)
    search_decoder = _incremental_decoder(loaded, options)
    cuts = load_cuts(cuts_path).to_eager()
    durations_ms = {cut.id: cut.duration * 1000.0 for cut in cuts}
    references = reference_words_for(cuts, teacher_alignment)
    rows = []
    for raw in eval_dataloader(cuts, max_duration):
        batch = unpack_batch(raw).to(torch.device(device))
        durations = [durations_ms[c] for c in batch.cut_ids]
        tokens, times = _batch_emissions(loaded, search_decoder, batch, durations)
        for utt, duration, hyp, hyp_times in zip(batch.cut_ids, durations, tokens, times):
            pieces = [loaded.tokenizer.sp.id_to_piece(t) for t in hyp]
            rows.append(
                {
                    "id": utt,
                    "duration_ms": round(duration, 3),
                    "tokens": hyp,
                    "emission_ms": [round(t, 3) for t in hyp_times],
                    "words": hypothesis_words(pieces, hyp_times),
                }
            )
    if not rows:
        raise ValueError(f"{cuts_path}: no utterances to decode")
    rows.sort(key=lambda r: r["id"])
    with atomic_path(emissions_path) as tmp:
        with open(tmp, "w") as f:
            for row in rows:
                f.write(json.dumps(row, separators=(",", ":")) + "\n")
    summary = summarise_delays(rows, references, where=str(cuts_path)).to_dict()
    summary.update(
        method=loaded.method.name,
        mode="streaming" if loaded.stream is not None else "offline",
        chunk_size=loaded.chunk_size if loaded.streams_by_design else None,
        latency_ms=loaded.model.encoder.algorithmic_latency_ms(loaded.chunk_size) if loaded.streams_by_design else None,
    )
    write_json(summary_path, summary)
    if summary["mean_ms"] is None or math.isnan(summary["mean_ms"]):
        log.warning("%s: no correctly recognised word, so no emission delay", method)
    return summary


__all__ = [
    "stable_emission_times",
    "track_emissions",
    "chunk_ready_ms",
    "streaming_pieces",
    "offline_pieces",
    "hypothesis_words",
    "reference_words_for",
    "measure_emission_delay",
]
