"""Decode a cut set with a saved model and one decoding method; write hypotheses and statistics.

``hyps.jsonl``: one JSON line per utterance (id, ref, hyp), sorted by id.
``decode.json`` (optional): method, whether the encoder really streamed, real-time factor
(decoding wall time / audio duration, this process on this machine), the algorithmic latency
of a streaming student (chunk + front-end lookahead, ms; None for a full-context model) and
the chunk settings used.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor

from streamkd.data.loaders import Batch, eval_dataloader, load_cuts, unpack_batch
from streamkd.data.tokenizer import Tokenizer
from streamkd.decode.ctc_greedy import CtcGreedySearch
from streamkd.decode.methods import DecodingMethod, check_method, parse_method
from streamkd.k2_support import require_k2
from streamkd.model.asr import AsrModel
from streamkd.model.checkpoint import load_model
from streamkd.model.streaming import StreamingEncoder
from streamkd.model.subsampling import INPUT_FRAME_SHIFT_MS
from streamkd.utils import atomic_path, format_seconds, write_json

if TYPE_CHECKING:  # k2 and the modules built on it are imported only by the methods that need them
    import k2

    from streamkd.decode.ctc import CtcOneBestDecoder, StreamingCtcSearch
    from streamkd.lang.hlg import WordGraph

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOptions:
    """Beam settings of every search (each method reads the ones it uses)."""

    search_beam: float = 20.0  # CTC graph search (k2.intersect_dense_pruned)
    output_beam: float = 8.0
    beam: int = 4  # modified beam search: hypotheses kept per utterance
    fast_beam: float = 4.0  # fast_beam_search: score beam ...
    max_states: int = 32  # ... and its per-frame limits
    max_contexts: int = 8
    max_symbols_per_frame: int = 1  # greedy search

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class _WholeUtteranceCtc:
    """Adapter: collects CTC posteriors, decodes them with k2 when the utterances are complete."""

    def __init__(self, model: AsrModel, decoder: "CtcOneBestDecoder", batch_size: int):
        self.model, self.decoder = model, decoder
        self.result: List[List[int]] = [[] for _ in range(batch_size)]

    def advance(self, encoder_out: Tensor, lengths: Tensor) -> None:
        self.result = self.decoder(self.model.ctc(encoder_out), lengths)

    def finish(self) -> List[List[int]]:
        return self.result


class _IncrementalCtc:
    """Adapter: CTC posteriors of each chunk (or whole utterance) go straight to a search that keeps its state."""

    def __init__(self, model: AsrModel, search: Union["StreamingCtcSearch", CtcGreedySearch]):
        self.model, self.search = model, search

    def advance(self, encoder_out: Tensor, lengths: Tensor) -> None:
        if encoder_out.size(1):
            self.search.advance(self.model.ctc(encoder_out), lengths)

    def finish(self) -> List[List[int]]:
        return self.search.finish()


class Decoder:
    """Turns encoder frames into text for one model and one decoding method."""

    def __init__(
        self,
        model: AsrModel,
        method: DecodingMethod,
        tokenizer: Tokenizer,
        graph: Union["k2.Fsa", "WordGraph", None] = None,
        options: SearchOptions = SearchOptions(),
    ):
        self.model, self.method, self.tokenizer, self.options = model, method, tokenizer, options
        self.words = graph if method.graph == "hlg" else None
        self.fsa = graph.fsa if self.words is not None else graph
        if method.graph is not None and self.fsa is None:
            raise ValueError(f"decoding method {method.name!r} needs a graph")
        # The online intersecter takes an FsaVec: build it once, not per batch.
        if method.graph is not None and method.streaming:
            self.fsa_vec = require_k2(f"decoding method {method.name!r}").Fsa.from_fsas([self.fsa])
        else:
            self.fsa_vec = None

    def new_search(self, batch_size: int):
        o, m = self.options, self.method
        if m.needs_k2:
            require_k2(f"decoding method {m.name!r}")
        if m.head == "ctc":
            if m.search == "greedy":
                return _IncrementalCtc(self.model, CtcGreedySearch(batch_size))
            from streamkd.decode.ctc import CtcOneBestDecoder, PrefixCtcSearch, StreamingCtcSearch

            if m.streaming and m.search == "hlg":  # see PrefixCtcSearch: k2's online search drifts over HLG
                return _IncrementalCtc(self.model, PrefixCtcSearch(self.fsa, batch_size, o.search_beam, o.output_beam))
            if m.streaming:
                return _IncrementalCtc(
                    self.model, StreamingCtcSearch(self.fsa_vec, batch_size, o.search_beam, o.output_beam)
                )
            return _WholeUtteranceCtc(self.model, CtcOneBestDecoder(self.fsa, o.search_beam, o.output_beam), batch_size)
        from streamkd.decode.transducer import FastBeamSearch, GreedySearch, ModifiedBeamSearch

        head = self.model.transducer
        if m.search == "greedy":
            return GreedySearch(head, batch_size, o.max_symbols_per_frame)
        if m.search == "modified-beam":
            return ModifiedBeamSearch(head, batch_size, o.beam)
        return FastBeamSearch(head, batch_size, o.fast_beam, o.max_states, o.max_contexts)

    def to_text(self, ids: List[List[int]]) -> List[str]:
        if self.words is not None:
            return [self.words.to_text(seq) for seq in ids]
        return self.tokenizer.decode(ids)


def decode_whole(model: AsrModel, decoder: Decoder, batch: Batch, chunk_size: Optional[int]) -> List[List[int]]:
    """Whole utterances through the (masked, for a student) encoder, then the search."""
    enc = model.encoder(batch.feats, batch.feat_lens, chunk_size=chunk_size)
    search = decoder.new_search(batch.feats.size(0))
    search.advance(enc.out, enc.lengths)
    return search.finish()


def stream_chunks(stream: StreamingEncoder, batch: Batch) -> Iterator[Tuple[Tensor, Tensor, int]]:
    """Feed features as they would arrive (one chunk's worth at a time); yield every encoder chunk.

    Yields ``(frames (B, C, D), valid lengths (B,), encoder frames done after this chunk)``.
    """
    state = stream.init_state(batch.feats.size(0))
    lens = batch.feat_lens.to(state.received.device)
    piece, chunk = stream.stride, stream.chunk_size
    for start in range(0, int(lens.max()), piece):
        feats = batch.feats[:, start : start + piece]
        real = (lens - start).clamp(min=0, max=feats.size(1))
        out, out_lens = stream.accept(state, feats, real, ended=lens <= start + piece)
        # accept() may return several chunks at once (at the end of input): hand them out one by one.
        done_before = state.frames_done - out.size(1)
        for first in range(0, out.size(1), chunk):
            yield out[:, first : first + chunk], (out_lens - first).clamp(min=0, max=chunk), done_before + first + chunk
    if not state.finished:
        raise RuntimeError("streaming encoder did not flush every frame at the end of input")


def decode_streaming(stream: StreamingEncoder, decoder: Decoder, batch: Batch) -> List[List[int]]:
    """Search chunk by chunk as the streaming encoder produces the chunks."""
    search = decoder.new_search(batch.feats.size(0))
    for out, out_lens, _ in stream_chunks(stream, batch):
        search.advance(out, out_lens)
    return search.finish()


def load_decoding_graph(
    method: DecodingMethod, graph_path: Optional[Path], vocab_size: int
) -> Union["k2.Fsa", "WordGraph", None]:
    if method.needs_k2:  # before any other complaint: the graph alone would not help
        require_k2(f"decoding method {method.name!r}")
    if method.graph is None:
        return None
    if graph_path is None:
        raise ValueError(f"decoding method {method.name!r} needs --graph ({method.graph})")
    from streamkd.decode.ctc import load_graph
    from streamkd.lang.hlg import WordGraph

    if method.graph == "hlg":
        return WordGraph.load(graph_path, expected_vocab_size=vocab_size)
    fsa = load_graph(graph_path)
    max_label = int(fsa.labels.max())
    if max_label != vocab_size - 1:
        raise ValueError(
            f"{graph_path}: the CTC topology covers tokens up to {max_label}, the model has {vocab_size} tokens"
            " (a different BPE model?)"
        )
    return fsa


@dataclass
class LoadedDecoder:
    """A saved model, ready to decode with one method."""

    model: AsrModel
    method: DecodingMethod
    tokenizer: Tokenizer
    graph: Union["k2.Fsa", "WordGraph", None]
    decoder: Decoder
    stream: Optional[StreamingEncoder]  # for "-streaming" methods
    chunk_size: Optional[int]  # the chunk the encoder runs with (None: full context)
    streams_by_design: bool  # a causal encoder with a chunk: it can stream for real


def load_decoder(
    checkpoint: Path,
    bpe_model: Path,
    method: str,
    graph_path: Optional[Path] = None,
    chunk_size: Optional[int] = None,
    options: SearchOptions = SearchOptions(),
    device: str = "cpu",
) -> LoadedDecoder:
    """Load model, tokenizer and graph, and check that the model can be decoded with ``method``."""
    decoding = parse_method(method)
    tokenizer = Tokenizer(bpe_model)
    model, _ = load_model(checkpoint, expected_vocab_size=tokenizer.vocab_size)
    model.eval().to(device)
    encoder = model.encoder
    encoder.require_chunk_size(chunk_size, f"decoding {checkpoint}")
    effective_chunk = chunk_size if chunk_size is not None else encoder.chunk_size
    streams_by_design = bool(encoder.config.causal and effective_chunk is not None and effective_chunk > 0)
    check_method(decoding, model.head, streams_by_design, str(checkpoint))
    graph = load_decoding_graph(decoding, graph_path, tokenizer.vocab_size)
    if decoding.graph == "hlg":
        graph.fsa = graph.fsa.to(device)
    elif graph is not None:
        graph = graph.to(device)
    decoder = Decoder(model, decoding, tokenizer, graph, options)
    stream = StreamingEncoder(encoder, chunk_size=chunk_size) if decoding.streaming else None
    return LoadedDecoder(model, decoding, tokenizer, graph, decoder, stream, effective_chunk, streams_by_design)


def refuse_short_cuts(cuts, cuts_path: Path) -> None:
    """Cuts the front-end turns into no encoder frame would stop k2 with a bare assertion."""
    from streamkd.data.check import input_frames
    from streamkd.model.subsampling import MIN_INPUT_FRAMES

    short = [c.id for c in cuts if input_frames(c) < MIN_INPUT_FRAMES]
    if short:
        raise ValueError(
            f"{cuts_path}: {len(short)} cut(s) shorter than the front-end's {MIN_INPUT_FRAMES} input frames: "
            f"{', '.join(short[:10])}{' ...' if len(short) > 10 else ''} (streamkd check-data excludes or reports them)"
        )


@torch.no_grad()
def decode_cuts(
    checkpoint: Path,
    cuts_path: Path,
    bpe_model: Path,
    hyps_path: Path,
    method: str = "ctc-1best",
    graph_path: Optional[Path] = None,
    stats_path: Optional[Path] = None,
    chunk_size: Optional[int] = None,
    options: SearchOptions = SearchOptions(),
    max_duration: float = 120.0,
    device: str = "cpu",
) -> Dict[str, Any]:
    """Decode every cut of ``cuts_path`` with ``method``; returns (and optionally writes) statistics.

    ``chunk_size`` overrides a streaming student's chunk (simulated and streaming alike).
    """
    loaded = load_decoder(checkpoint, bpe_model, method, graph_path, chunk_size, options, device)
    model, decoding, decoder, stream = loaded.model, loaded.method, loaded.decoder, loaded.stream
    encoder, effective_chunk, streams_by_design = model.encoder, loaded.chunk_size, loaded.streams_by_design

    cuts = load_cuts(cuts_path)
    refuse_short_cuts(cuts, cuts_path)
    total_audio = sum(c.duration for c in cuts)
    rows, audio_done, start = [], 0.0, time.time()
    for raw in eval_dataloader(cuts, max_duration):
        batch = unpack_batch(raw).to(torch.device(device))
        if stream is not None:
            ids = decode_streaming(stream, decoder, batch)
        else:
            ids = decode_whole(model, decoder, batch, chunk_size)
        for cut_id, ref, hyp in zip(batch.cut_ids, batch.texts, decoder.to_text(ids)):
            rows.append({"id": cut_id, "ref": ref, "hyp": hyp})
        audio_done += float(batch.feat_lens.sum()) * INPUT_FRAME_SHIFT_MS / 1000
        elapsed = time.time() - start
        log.info(
            "%s: decoded %d utterances, %.0f/%.0f s of audio, RTF %.3f, ETA %s",
            decoding.name,
            len(rows),
            audio_done,
            total_audio,
            elapsed / audio_done,
            format_seconds(elapsed / audio_done * max(total_audio - audio_done, 0.0)),
        )
    if not rows:
        raise ValueError(f"{cuts_path}: no utterances to decode")
    elapsed = time.time() - start
    with atomic_path(hyps_path) as tmp:
        with open(tmp, "w") as f:
            for row in sorted(rows, key=lambda r: r["id"]):
                f.write(json.dumps(row) + "\n")

    stats = {
        "method": decoding.name,
        "streaming": decoding.streaming,
        "num_utterances": len(rows),
        "audio_seconds": round(audio_done, 2),
        "decode_seconds": round(elapsed, 2),
        "rtf": round(elapsed / audio_done, 4),
        "latency_ms": encoder.algorithmic_latency_ms(effective_chunk) if streams_by_design else None,
        "chunk_size": effective_chunk if streams_by_design else None,
        "left_chunks": encoder.left_chunks if streams_by_design else None,
        "search": options.to_dict(),
        "device": device,
        "threads": torch.get_num_threads(),
    }
    if stats_path is not None:
        write_json(stats_path, stats)
    return stats
