"""`streamkd transcribe`: audio files to text with a model folder, in PyTorch or onnxruntime.

Backends
    PyTorch: the checkpoint; whole utterances through the (masked) encoder, or chunk by chunk
    through :class:`~streamkd.model.StreamingEncoder` for ``-streaming`` methods.
    onnxruntime (``onnx=True``): ``encoder.onnx`` (and ``decoder.onnx``/``joiner.onnx``),
    always chunk by chunk, the way an exported model runs.

Streaming (``stream=True``) feeds each file in pieces of ``piece_ms`` as a microphone would
deliver them and prints the partial hypothesis whenever it changes. Latency is measured on a
clock that advances with the audio: piece ``i`` becomes available when its last sample would
have been recorded; processing starts then (or when the previous piece is done, if the machine
is slower than real time) and a chunk's latency is the time from its completing piece's
availability to its partial result. Features are computed per file before streaming (fbank is
frame-local, so this gives the same frames); their cost is not in the latency.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from streamkd.data.loaders import Batch
from streamkd.data.tokenizer import Tokenizer
from streamkd.decode.methods import DecodingMethod, check_method, parse_method
from streamkd.decode.run import (
    Decoder,
    SearchOptions,
    decode_whole,
    load_decoding_graph,
)
from streamkd.deploy.audio import (
    SAMPLE_RATE,
    AudioError,
    fbank,
    find_audio_files,
    load_audio,
)
from streamkd.deploy.export import BPE_FILE, CTC_TOPO_FILE, HLG_FILE, MODEL_FILE
from streamkd.model.streaming import StreamingEncoder
from streamkd.model.subsampling import INPUT_FRAME_SHIFT_MS, algorithmic_latency_ms
from streamkd.utils import atomic_path

log = logging.getLogger(__name__)

SAMPLES_PER_FRAME = int(SAMPLE_RATE * INPUT_FRAME_SHIFT_MS / 1000)
WINDOW_SAMPLES = 400  # 25 ms fbank window: frame j ends at sample 160 j + 400

Chunks = List[Tuple[Tensor, Tensor]]  # (frames for the search (1, n, D), lengths (1,)) per chunk


@dataclass
class ModelPaths:
    """Where the checkpoint, tokenizer and graphs of one model are; the folder supplies defaults."""

    checkpoint: Optional[Path]
    bpe_model: Path
    graph: Optional[Path]
    model_dir: Optional[Path]

    @classmethod
    def resolve(
        cls,
        method: DecodingMethod,
        model_dir: Optional[Path] = None,
        checkpoint: Optional[Path] = None,
        bpe_model: Optional[Path] = None,
        graph: Optional[Path] = None,
    ) -> "ModelPaths":
        def default(given: Optional[Path], name: str) -> Optional[Path]:
            if given is not None or model_dir is None:
                return given
            path = Path(model_dir) / name
            return path if path.is_file() else None

        if model_dir is None and (checkpoint is None or bpe_model is None):
            raise ValueError("give --model-dir, or --checkpoint and --bpe-model")
        graph_file = {"hlg": HLG_FILE, "ctc_topo": CTC_TOPO_FILE}.get(method.graph or "")
        graph = default(graph, graph_file) if graph_file else graph
        bpe = default(bpe_model, BPE_FILE)
        if bpe is None:
            raise FileNotFoundError(f"{model_dir}: no {BPE_FILE} in the model folder (give --bpe-model)")
        if method.graph is not None and graph is None:
            where = f"{model_dir}/{graph_file}" if model_dir else "a graph"
            raise FileNotFoundError(f"decoding method {method.name!r} needs {where} (give --graph)")
        return cls(default(checkpoint, MODEL_FILE), bpe, graph, Path(model_dir) if model_dir else None)


@dataclass
class FileResult:
    path: Path
    text: Optional[str] = None
    error: Optional[str] = None
    audio_seconds: float = 0.0
    compute_seconds: float = 0.0
    chunk_latencies_ms: List[float] = field(default_factory=list)
    partials: List[Tuple[float, str]] = field(default_factory=list)  # (audio time s, text)

    def to_dict(self) -> Dict[str, object]:
        row: Dict[str, object] = {"path": str(self.path), "text": self.text}
        if self.error is not None:
            row["error"] = self.error
        else:
            row["rtf"] = round(self.compute_seconds / self.audio_seconds, 4)
        if self.chunk_latencies_ms:
            row["latency_ms"] = {
                "mean": round(sum(self.chunk_latencies_ms) / len(self.chunk_latencies_ms), 2),
                "max": round(max(self.chunk_latencies_ms), 2),
            }
        return row


class _TorchChunks:
    """One stream through the PyTorch :class:`StreamingEncoder`."""

    def __init__(self, stream: StreamingEncoder) -> None:
        self.stream = stream
        self.state = stream.init_state(1)

    def accept(self, feats: Tensor, ended: bool) -> Chunks:
        out, lens = self.stream.accept(self.state, feats.unsqueeze(0), ended=ended)
        return [(out, lens)] if out.size(1) else []


class _OnnxChunks:
    """One stream through ``encoder.onnx``."""

    def __init__(self, onnx_model, head: str) -> None:
        self.model, self.head = onnx_model, head
        self.stream = onnx_model.new_stream()

    def accept(self, feats: Tensor, ended: bool) -> Chunks:
        return [self.model.search_frames(r, self.head) for r in self.stream.accept(feats.numpy(), ended)]


class Transcriber:
    """One model, one decoding method, one backend; :meth:`transcribe` takes a file."""

    def __init__(
        self,
        paths: ModelPaths,
        method: str,
        onnx: bool = False,
        stream: bool = False,
        chunk_size: Optional[int] = None,
        options: SearchOptions = SearchOptions(),
        threads: int = 1,
        piece_ms: float = 40.0,
        channel: Optional[int] = None,
    ) -> None:
        decoding = parse_method(method)
        if stream and not decoding.streaming:
            decoding = parse_method(method + "-streaming")  # --stream always runs chunk by chunk
        self.method, self.onnx, self.stream, self.channel = decoding, onnx, stream, channel
        self.piece_frames = max(1, round(piece_ms / INPUT_FRAME_SHIFT_MS))
        self.tokenizer = Tokenizer(paths.bpe_model)
        graph = load_decoding_graph(decoding, paths.graph, self.tokenizer.vocab_size)
        if onnx:
            self._init_onnx(paths, decoding, chunk_size, threads)
        else:
            self._init_torch(paths, decoding, chunk_size)
        self.decoder = Decoder(self.heads, decoding, self.tokenizer, graph, options)

    def _init_torch(self, paths: ModelPaths, decoding: DecodingMethod, chunk_size: Optional[int]) -> None:
        from streamkd.model.checkpoint import load_model

        if paths.checkpoint is None:
            raise FileNotFoundError(f"{paths.model_dir}: no {MODEL_FILE} in the model folder (give --checkpoint)")
        model, _ = load_model(paths.checkpoint, expected_vocab_size=self.tokenizer.vocab_size)
        self.model = self.heads = model.eval()
        encoder = model.encoder
        encoder.require_chunk_size(chunk_size, f"transcribing with {paths.checkpoint}")
        chunk = chunk_size if chunk_size is not None else encoder.chunk_size
        streams = encoder.config.causal and chunk is not None and chunk > 0
        check_method(decoding, model.head, streams, str(paths.checkpoint))
        self.chunk_size = chunk if streams else None
        self.latency_ms = encoder.algorithmic_latency_ms(chunk) if streams else None
        self.streamer = StreamingEncoder(encoder, chunk_size=chunk_size) if decoding.streaming else None

    def _init_onnx(self, paths: ModelPaths, decoding: DecodingMethod, chunk_size: Optional[int], threads: int) -> None:
        from streamkd.deploy.onnx_model import OnnxModel
        from streamkd.model.heads import HeadConfig

        if paths.model_dir is None:
            raise ValueError("--onnx needs --model-dir (a folder written by `streamkd export`)")
        self.model = OnnxModel(paths.model_dir, threads)
        meta = self.model.meta
        if int(meta["vocab_size"]) != self.tokenizer.vocab_size:
            raise ValueError(
                f"{paths.model_dir}: encoder.onnx has {meta['vocab_size']} tokens, "
                f"{paths.bpe_model} has {self.tokenizer.vocab_size}"
            )
        if chunk_size is not None and chunk_size != int(meta["chunk_size"]):
            raise ValueError(
                f"{paths.model_dir}: exported with chunk size {meta['chunk_size']}, not {chunk_size}; export again"
            )
        check_method(decoding, HeadConfig(type=meta["head"]), True, str(paths.model_dir / "encoder.onnx"))
        self.heads = self.model.heads
        self.chunk_size = int(meta["chunk_size"])
        self.latency_ms = algorithmic_latency_ms(self.chunk_size)

    # -- decoding ------------------------------------------------------------------------------

    def _new_chunks(self):
        if self.onnx:
            return _OnnxChunks(self.model, self.method.head)
        return _TorchChunks(self.streamer)

    def _decode_whole(self, feats: Tensor) -> List[int]:
        batch = Batch(feats.unsqueeze(0), torch.tensor([feats.size(0)]), [""], [""])
        return decode_whole(self.model, self.decoder, batch, self.chunk_size)[0]

    def _decode_chunks(
        self, feats: Tensor, result: FileResult, on_partial: Optional[Callable[[FileResult, float, str], None]]
    ) -> List[int]:
        """Pieces of ``piece_frames`` through the chunk encoder; partial results when streaming."""
        chunks, search = self._new_chunks(), self.decoder.new_search(1)
        collected: Chunks = []
        clock, previous = 0.0, ""
        total = feats.size(0)
        piece = self.piece_frames if self.stream else total  # offline: no reason to wait for pieces
        for start in range(0, total, piece):
            end = min(start + piece, total)
            available = (
                min((end - 1) * SAMPLES_PER_FRAME + WINDOW_SAMPLES, result.audio_seconds * SAMPLE_RATE) / SAMPLE_RATE
            )
            began = time.perf_counter()
            produced = chunks.accept(feats[start:end], ended=end == total)
            if self.method.streaming:
                for frames, lens in produced:
                    search.advance(frames, lens)
                text = self.decoder.to_text(search.finish())[0] if produced else previous
            else:
                collected += produced
            spent = time.perf_counter() - began
            clock = max(clock, available) + spent
            if produced and self.stream:
                result.chunk_latencies_ms.append((clock - available) * 1000)
                if text != previous:
                    result.partials.append((available, text))
                    if on_partial is not None:
                        on_partial(result, available, text)
                    previous = text
        if not self.method.streaming and collected:
            search.advance(torch.cat([f for f, _ in collected], dim=1), sum(n for _, n in collected))
        return search.finish()[0]

    def transcribe(
        self, path: Path, on_partial: Optional[Callable[[FileResult, float, str], None]] = None
    ) -> FileResult:
        result = FileResult(Path(path))
        try:
            samples = load_audio(path, self.channel)
        except AudioError as e:
            result.error = str(e)
            return result
        result.audio_seconds = len(samples) / SAMPLE_RATE
        feats = fbank(samples)
        began = time.perf_counter()
        with torch.no_grad():
            if self.onnx or self.method.streaming:
                ids = self._decode_chunks(feats, result, on_partial)
            else:
                ids = self._decode_whole(feats)
        result.compute_seconds = time.perf_counter() - began
        result.text = self.decoder.to_text([ids])[0]
        return result


def transcribe_files(
    transcriber: Transcriber,
    inputs: Sequence[Path],
    on_result: Optional[Callable[[FileResult], None]] = None,
    on_partial: Optional[Callable[[FileResult, float, str], None]] = None,
) -> List[FileResult]:
    """Every audio file of ``inputs`` (files or folders), in order; one file's error stops no other."""
    files = find_audio_files(inputs)
    if not files:
        raise ValueError(f"no audio files in {', '.join(map(str, inputs))}")
    results = []
    for path in files:
        result = transcriber.transcribe(path, on_partial)
        if on_result is not None:
            on_result(result)
        results.append(result)
    return results


def write_results(path: Path, results: Sequence[FileResult]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in results))


__all__ = ["ModelPaths", "FileResult", "Transcriber", "transcribe_files", "write_results"]
