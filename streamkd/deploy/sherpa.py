"""`streamkd export --format sherpa-onnx`: the streaming student in a form sherpa-onnx loads.

sherpa-onnx binds an online model's inputs and states by position and sizes them from the
model's metadata. Our encoder's arithmetic fits two of its existing contracts unchanged, so a
thin wrapper around :class:`ChunkEncoder` only renames, reshapes and reorders the states:

CTC head -> ``model.onnx``, the **zipformer2 CTC** contract
    inputs ``x (N, T, 80)``; per layer ``cached_key (L, N, H*d)``, ``cached_nonlin_attn
    (1, N, L, 3D/4)``, ``cached_val1 (L, N, H*d)``, ``cached_val2 (L, N, H*d)``,
    ``cached_conv1 (N, D, K-1)``, ``cached_conv2 (N, D, K-1)``; then ``embed_states
    (N, 128, 3, 19)`` and ``processed_lens (N,)``. Output 0 is the CTC log-probs, then every
    state in input order. Our keys and values go into ``cached_key`` and ``cached_val1``, our
    convolution cache into ``cached_conv1``; ``nonlin_attn``, ``val2``, ``conv2`` and
    ``embed_states`` are fillers returned unchanged (the exporter would drop an unused input
    and shift every position after it). One stack; ``cnn_module_kernels = 2 (K - 1)``, since
    sherpa-onnx allocates ``kernel / 2`` convolution frames.
Transducer head -> ``encoder.onnx`` + ``decoder.onnx`` + ``joiner.onnx``, the **ebranchformer**
    transducer contract: per layer ``cached_key (N, H, L, d)``, ``cached_value (N, H, L, d)``,
    ``cached_conv (N, D, K-1)`` and a one-frame filler ``cached_conv_fusion (N, 2D, 1)``, then
    ``processed_lens``; output 0 is the joiner-projected encoder output. ``intermediate_size =
    2D`` and ``csgu_kernel_size = K`` make sherpa-onnx allocate exactly our convolution cache.
    The decoder and joiner are streamkd's own (every transducer family shares them).

Every window is ``T = 4C + 3`` feature frames and moves by ``decode_chunk_len = 4C``; the left
context is fixed (``left_context_len = left_chunks * C``), so unlimited left context cannot be
exported. sherpa-onnx never decodes a partial last window: pad the audio's end (see
:data:`TAIL_PADDING_SECONDS`). Features are kaldi-native-fbank's with sherpa-onnx's defaults
(80 bins, high_freq -400, snip_edges false, dither 0), which match lhotse's Fbank.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from streamkd.data.tokenizer import Tokenizer
from streamkd.deploy.chunk_encoder import ChunkEncoder
from streamkd.deploy.export import (
    DECODER_ONNX,
    ENCODER_ONNX,
    JOINER_ONNX,
    ONNX_OPSET,
    TOKENS_FILE,
    _add_onnx_metadata,
    _write_tokens,
    check_hlg_head,
    export_transducer_onnx,
    onnx_export,
)
from streamkd.model.checkpoint import load_model
from streamkd.utils import atomic_path, write_json

log = logging.getLogger(__name__)

CTC_MODEL_ONNX = "model.onnx"
HLG_FST = "HLG.fst"
SHERPA_JSON = "sherpa-onnx.json"
EMBED_STATES_SHAPE = (128, 3, 19)  # zipformer2's front-end cache: a filler here
# Zeros after the audio so that sherpa-onnx decodes the last real frames: it never decodes a
# partial window, so at least one window's worth (T frames) must follow them.
TAIL_PADDING_SECONDS = 0.5
FRAME_SHIFT_SAMPLES = 160  # 10 ms at 16 kHz


def padded_length(num_samples: int, chunk_size: int, min_padding_seconds: float = TAIL_PADDING_SECONDS) -> int:
    """Samples to pad 16 kHz audio to, so that sherpa-onnx and streamkd's own streaming decode
    see exactly the same windows.

    With ``snip_edges=false`` a stream of S samples has ``(S + 80) // 160`` feature frames.
    sherpa-onnx decodes window k (``4C`` frames further each time, ``4C + 3`` long) only while
    ``processed + 4C + 3 < frames``; padding to ``4Ck + 4`` frames makes it decode k whole
    windows, the same ``Ck`` encoder frames streamkd's front-end makes of ``4Ck + 4`` frames.
    k is the smallest that leaves at least ``min_padding_seconds`` of zeros.
    """
    step = 4 * chunk_size
    needed = (num_samples + int(min_padding_seconds * 16000) + 80) // FRAME_SHIFT_SAMPLES
    windows = max(1, -(-(needed - 4) // step))
    return (step * windows + 4) * FRAME_SHIFT_SAMPLES


class SherpaExportError(ValueError):
    """The model or the options cannot give what sherpa-onnx loads."""


class _Dims:
    def __init__(self, chunk: ChunkEncoder) -> None:
        config = chunk.model.encoder.config
        self.layers, self.heads, self.d_model = config.num_layers, config.num_heads, config.d_model
        self.head_dim = config.d_model // config.num_heads
        self.kernel = config.conv_kernel
        self.cache = chunk.cache_frames


class Zipformer2CtcWrapper(nn.Module):
    """ChunkEncoder behind sherpa-onnx's zipformer2-CTC inputs and outputs."""

    def __init__(self, chunk: ChunkEncoder) -> None:
        super().__init__()
        self.chunk = chunk
        self.dims = _Dims(chunk)

    def _ours(self, flat: Tensor) -> Tensor:  # (L, N, H*d) -> (N, H, L, d)
        d = self.dims
        return flat.reshape(d.cache, -1, d.heads, d.head_dim).permute(1, 2, 0, 3)

    def _theirs(self, ours: Tensor) -> Tensor:  # (N, H, L, d) -> (L, N, H*d)
        d = self.dims
        return ours.permute(2, 0, 1, 3).reshape(d.cache, -1, d.heads * d.head_dim)

    def forward(self, x: Tensor, *states: Tensor) -> Tuple[Tensor, ...]:
        d = self.dims
        per_layer = [states[6 * i : 6 * i + 6] for i in range(d.layers)]
        embed_states, processed = states[6 * d.layers], states[6 * d.layers + 1]
        keys = torch.stack([self._ours(s[0]) for s in per_layer])
        values = torch.stack([self._ours(s[2]) for s in per_layer])
        convs = torch.stack([s[4] for s in per_layer])
        x_lens = torch.full_like(processed, x.size(1))  # sherpa-onnx feeds whole windows only
        out = self.chunk(x, x_lens, keys, values, convs, processed)
        new_keys, new_values, new_convs, new_processed, log_probs = out[2], out[3], out[4], out[5], out[6]
        new_states: List[Tensor] = []
        for i, (_, nonlin, _, val2, _, conv2) in enumerate(per_layer):
            new_states += [self._theirs(new_keys[i]), nonlin.clone(), self._theirs(new_values[i])]
            new_states += [val2.clone(), new_convs[i], conv2.clone()]
        return (log_probs, *new_states, embed_states.clone(), new_processed)

    def example_inputs(self, batch: int = 1) -> Tuple[Tensor, ...]:
        d = self.dims
        x = torch.randn(batch, self.chunk.input_frames, self.chunk.model.encoder.config.feat_dim)
        states: List[Tensor] = []
        for _ in range(d.layers):
            kv = torch.zeros(d.cache, batch, d.heads * d.head_dim)
            conv = torch.zeros(batch, d.d_model, d.kernel - 1)
            states += [kv, torch.zeros(1, batch, d.cache, 3 * d.d_model // 4), kv.clone(), kv.clone(), conv]
            states.append(conv.clone())
        states += [torch.zeros(batch, *EMBED_STATES_SHAPE), torch.zeros(batch, dtype=torch.int64)]
        return (x, *states)

    def names(self) -> Tuple[List[str], List[str]]:
        kinds = ["cached_key", "cached_nonlin_attn", "cached_val1", "cached_val2", "cached_conv1", "cached_conv2"]
        states = [f"{kind}_{i}" for i in range(self.dims.layers) for kind in kinds] + ["embed_states", "processed_lens"]
        return ["x", *states], ["log_probs", *("new_" + s for s in states)]

    def metadata(self) -> Dict[str, str]:
        d, chunk = self.dims, self.chunk
        return {
            "model_type": "zipformer2",
            "encoder_dims": str(d.d_model),
            "query_head_dims": str(d.head_dim),
            "value_head_dims": str(d.head_dim),
            "num_heads": str(d.heads),
            "num_encoder_layers": str(d.layers),
            "cnn_module_kernels": str(2 * (d.kernel - 1)),
            "left_context_len": str(d.cache),
            "T": str(chunk.input_frames),
            "decode_chunk_len": str(chunk.shift_frames),
        }


class EbranchformerEncoderWrapper(nn.Module):
    """ChunkEncoder behind sherpa-onnx's ebranchformer transducer-encoder inputs and outputs."""

    def __init__(self, chunk: ChunkEncoder) -> None:
        super().__init__()
        self.chunk = chunk
        self.dims = _Dims(chunk)

    def forward(self, x: Tensor, *states: Tensor) -> Tuple[Tensor, ...]:
        d = self.dims
        per_layer = [states[4 * i : 4 * i + 4] for i in range(d.layers)]
        processed = states[4 * d.layers]
        keys = torch.stack([s[0] for s in per_layer])
        values = torch.stack([s[1] for s in per_layer])
        convs = torch.stack([s[2] for s in per_layer])
        x_lens = torch.full_like(processed, x.size(1))
        out = self.chunk(x, x_lens, keys, values, convs, processed)
        new_keys, new_values, new_convs, new_processed, projected = out[2], out[3], out[4], out[5], out[-1]
        new_states: List[Tensor] = []
        for i, layer in enumerate(per_layer):
            new_states += [new_keys[i], new_values[i], new_convs[i], layer[3].clone()]
        return (projected, *new_states, new_processed)

    def example_inputs(self, batch: int = 1) -> Tuple[Tensor, ...]:
        d = self.dims
        x = torch.randn(batch, self.chunk.input_frames, self.chunk.model.encoder.config.feat_dim)
        states: List[Tensor] = []
        for _ in range(d.layers):
            kv = torch.zeros(batch, d.heads, d.cache, d.head_dim)
            states += [kv, kv.clone(), torch.zeros(batch, d.d_model, d.kernel - 1)]
            states.append(torch.zeros(batch, 2 * d.d_model, 1))
        return (x, *states, torch.zeros(batch, dtype=torch.int64))

    def names(self) -> Tuple[List[str], List[str]]:
        kinds = ["cached_key", "cached_value", "cached_conv", "cached_conv_fusion"]
        states = [f"{kind}_{i}" for i in range(self.dims.layers) for kind in kinds] + ["processed_lens"]
        return ["x", *states], ["encoder_out", *("new_" + s for s in states)]

    def metadata(self) -> Dict[str, str]:
        d, chunk = self.dims, self.chunk
        return {
            "model_type": "ebranchformer",
            "decode_chunk_len": str(chunk.shift_frames),
            "T": str(chunk.input_frames),
            "num_hidden_layers": str(d.layers),
            "hidden_size": str(d.d_model),
            "intermediate_size": str(2 * d.d_model),
            "csgu_kernel_size": str(d.kernel),
            "merge_conv_kernel": "2",
            "left_context_len": str(d.cache),
            "num_heads": str(d.heads),
            "head_dim": str(d.head_dim),
        }


def _export(wrapper, path: Path, extra: Dict[str, str]) -> None:
    inputs, outputs = wrapper.names()
    axes = {name: {0: "N"} for name in ("x", "processed_lens", "embed_states", outputs[0])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warns about every shape it fixes per export
        with atomic_path(path) as tmp:
            onnx_export(
                wrapper,
                wrapper.example_inputs(),
                str(tmp),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=ONNX_OPSET,
            )
            _add_onnx_metadata(tmp, {**wrapper.metadata(), **extra})


def check_exportable(
    trained_chunk: Union[int, Tuple[int, ...], None], trained_left: int, chunk: int, left: int, where: str
) -> List[str]:
    """Refuse unlimited left context; return warnings where the export differs from training."""
    if left < 0:
        raise SherpaExportError(
            f"{where}: sherpa-onnx needs a fixed left context, and this export has unlimited left context "
            f"(left_chunks={left}); give --left-chunks N (N chunks of {chunk} encoder frames are kept)"
        )
    notes = []
    if isinstance(trained_chunk, tuple):  # a dynamic-chunk student: the sizes it sampled
        if chunk not in trained_chunk:
            sizes = ", ".join(map(str, trained_chunk))
            notes.append(f"the export's chunk size {chunk} is none of the sizes {sizes} the model was trained with")
    elif trained_chunk is not None and chunk != trained_chunk:
        notes.append(f"the export's chunk size {chunk} differs from the {trained_chunk} the model was trained with")
    if left != trained_left:
        trained = "unlimited" if trained_left < 0 else str(trained_left)
        notes.append(f"the export's left context of {left} chunks differs from the {trained} it was trained with")
    return notes


def export_sherpa_onnx(
    checkpoint: Path,
    bpe_model: Path,
    out_dir: Path,
    chunk_size: Optional[int] = None,
    left_chunks: Optional[int] = None,
    hlg: Optional[Path] = None,
) -> Dict[str, object]:
    """Write the files sherpa-onnx's OnlineRecognizer loads; returns what was written.

    With ``hlg`` (a CTC head only) ``HLG.fst`` is written too, for sherpa-onnx's ``ctc_graph``.
    """
    tokenizer = Tokenizer(bpe_model)
    model, _ = load_model(checkpoint, expected_vocab_size=tokenizer.vocab_size)
    model.eval()
    encoder = model.encoder
    check_hlg_head(model, checkpoint, hlg)
    chunk = ChunkEncoder(model, chunk_size, left_chunks)
    trained = encoder.dynamic_chunk.chunk_sizes if encoder.dynamic_chunk is not None else encoder.chunk_size
    for note in check_exportable(trained, encoder.left_chunks, chunk.chunk_size, chunk.left_chunks, str(checkpoint)):
        log.warning("%s: %s", checkpoint, note)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_tokens(tokenizer, out_dir / TOKENS_FILE)
    files = [TOKENS_FILE]
    extra = {"vocab_size": str(tokenizer.vocab_size), "source": "streamkd", "chunk_size": str(chunk.chunk_size)}
    if model.ctc is not None:
        _export(Zipformer2CtcWrapper(chunk), out_dir / CTC_MODEL_ONNX, extra)
        files.append(CTC_MODEL_ONNX)
        if hlg is not None:
            export_hlg_fst(hlg, out_dir / HLG_FST, tokenizer.vocab_size)
            files.append(HLG_FST)
    if model.transducer is not None:
        _export(EbranchformerEncoderWrapper(chunk), out_dir / ENCODER_ONNX, extra)
        export_transducer_onnx(chunk, out_dir, {"vocab_size": str(tokenizer.vocab_size)})
        files += [ENCODER_ONNX, DECODER_ONNX, JOINER_ONNX]
    summary = {
        "format": "sherpa-onnx",
        "files": files,
        "chunk_size": chunk.chunk_size,
        "left_chunks": chunk.left_chunks,
        "left_context_frames": chunk.cache_frames,
        "algorithmic_latency_ms": encoder.algorithmic_latency_ms(chunk.chunk_size),
        "tail_padding_seconds": TAIL_PADDING_SECONDS,
    }
    if encoder.dynamic_chunk is not None:
        summary["trained_chunk_sizes"] = list(encoder.dynamic_chunk.chunk_sizes)
    write_json(out_dir / SHERPA_JSON, summary)
    log.info("exported %s for sherpa-onnx -> %s (%s)", checkpoint, out_dir, ", ".join(files))
    return summary


def hlg_to_openfst_text(fsa) -> str:
    """A k2 HLG (token ids in, ragged word ids out) in OpenFst's text format, as sherpa-onnx's CTC
    FST decoder reads it: input label = token id + 1 (OpenFst keeps 0 for epsilon, so the blank
    is 1), output label = word id, weight = -score; k2's final arcs (label -1) become final
    weights of their source states."""
    import k2

    fsa = fsa.clone()
    labels = fsa.labels.clone()
    labels[labels >= 0] += 1
    fsa.labels = labels
    fsa = k2.expand_ragged_attributes(fsa)  # one word id per arc; added arcs read epsilon (0)
    arcs = fsa.arcs.values()[:, :3].tolist()
    scores = fsa.scores.tolist()
    words = fsa.aux_labels.tolist()
    lines, finals = [], {}
    for (src, dst, label), score, word in sorted(zip(arcs, scores, words), key=lambda arc: arc[0][0]):
        if label == -1:
            finals[src] = min(finals.get(src, float("inf")), -score)
            continue
        lines.append(f"{src} {dst} {label} {max(word, 0)} {-score:.6g}")
    lines += [f"{state} {weight:.6g}" for state, weight in sorted(finals.items())]
    return "\n".join(lines) + "\n"


def export_hlg_fst(hlg: Path, out: Path, vocab_size: int) -> Path:
    """``HLG.pt`` (``streamkd compile-hlg``) as ``HLG.fst`` for sherpa-onnx's ``ctc_graph``."""
    import kaldifst

    from streamkd.lang.hlg import WordGraph

    graph = WordGraph.load(hlg, expected_vocab_size=vocab_size)
    fst = kaldifst.compile(hlg_to_openfst_text(graph.fsa), acceptor=False)
    kaldifst.arcsort(fst, sort_type="ilabel")
    with atomic_path(out) as tmp:
        fst.write(str(tmp))
    return Path(out)
