"""`streamkd export`: a model folder a user (or a streaming runtime) can run on its own.

The folder holds

- ``model.pt`` (the checkpoint) and ``bpe.model``, which ``streamkd transcribe --model-dir``
  reads, and ``tokens.txt`` (``piece id`` per line, as sherpa-onnx reads tokens),
- ``ctc_topo.pt`` for a CTC head (where k2 is installed; ``ctc-greedy`` needs no graph) and
  ``HLG.pt`` when one is given, so CTC methods need no path,
- ``encoder.onnx`` and ``encoder.torchscript.pt``: :class:`ChunkEncoder` (one chunk + states in,
  frames + new states out) with its metadata embedded (ONNX ``metadata_props``; TorchScript
  extra file ``metadata.json``),
- for a transducer head, ``decoder.onnx`` (token contexts -> projected predictor output) and
  ``joiner.onnx`` (projected encoder and predictor frames -> logits), icefall's split,
- ``export.json``: the metadata and the list of files.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from streamkd.data.tokenizer import Tokenizer
from streamkd.deploy.chunk_encoder import INPUT_NAMES, ChunkEncoder
from streamkd.k2_support import k2_available, require_k2
from streamkd.model.checkpoint import load_model
from streamkd.utils import atomic_path, write_json, write_text

log = logging.getLogger(__name__)

ONNX_OPSET = 17  # LayerNormalization is a single operator from opset 17 on
MODEL_FILE, BPE_FILE, TOKENS_FILE = "model.pt", "bpe.model", "tokens.txt"
CTC_TOPO_FILE, HLG_FILE = "ctc_topo.pt", "HLG.pt"
ENCODER_ONNX, DECODER_ONNX, JOINER_ONNX = "encoder.onnx", "decoder.onnx", "joiner.onnx"
ENCODER_TORCHSCRIPT, EXPORT_JSON = "encoder.torchscript.pt", "export.json"
TORCHSCRIPT_METADATA = "metadata.json"


class _Predictor(nn.Module):
    """(N, context_size) token ids -> (N, joiner_dim), the transducer's projected predictor step."""

    def __init__(self, head) -> None:
        super().__init__()
        self.head = head

    def forward(self, y: Tensor) -> Tensor:
        return self.head.predictor_step(y)


class _Joiner(nn.Module):
    """Projected encoder and predictor frames (N, joiner_dim) -> logits (N, vocab_size)."""

    def __init__(self, head) -> None:
        super().__init__()
        self.head = head

    def forward(self, encoder_out: Tensor, decoder_out: Tensor) -> Tensor:
        return self.head.joiner(encoder_out, decoder_out, project_input=False)


def _example_inputs(chunk: ChunkEncoder, batch_size: int = 1) -> Tuple[Tensor, ...]:
    feat_dim = chunk.model.encoder.config.feat_dim
    x = torch.randn(batch_size, chunk.input_frames, feat_dim)
    x_lens = torch.full((batch_size,), chunk.input_frames, dtype=torch.int64)
    return (x, x_lens, *chunk.initial_states(batch_size))


def _dynamic_axes(chunk: ChunkEncoder) -> Dict[str, Dict[int, str]]:
    """Batch is dynamic everywhere; the attention cache length only with unlimited left context."""
    cache = {1: "N", 3: "L"} if chunk.cache_frames is None else {1: "N"}
    axes = {
        "x": {0: "N"},
        "x_lens": {0: "N"},
        "cached_keys": cache,
        "cached_values": cache,
        "cached_conv": {1: "N"},
        "processed_frames": {0: "N"},
    }
    axes.update(
        {"new_" + name: axes[name] for name in ("cached_keys", "cached_values", "cached_conv", "processed_frames")}
    )
    for name in ("encoder_out", "encoder_out_lens", "ctc_log_probs", "joiner_encoder_out"):
        axes[name] = {0: "N"}
    return axes


def onnx_export(module: nn.Module, args: Tuple[Tensor, ...], path: str, **options) -> None:
    """``torch.onnx.export`` with the TorchScript-based exporter on every torch version: from
    torch 2.9 on the default is the torch.export-based one, which needs onnxscript and traces
    the cached-attention code differently; the graphs here are checked against PyTorch with the
    TorchScript-based one."""
    import inspect

    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, args, path, **options)


def _add_onnx_metadata(path: Path, metadata: Dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def export_encoder_onnx(chunk: ChunkEncoder, path: Path, metadata: Dict[str, str]) -> None:
    outputs = chunk.output_names()
    axes = {k: v for k, v in _dynamic_axes(chunk).items() if k in INPUT_NAMES or k in outputs}
    with atomic_path(path) as tmp:
        onnx_export(
            chunk,
            _example_inputs(chunk),
            str(tmp),
            input_names=INPUT_NAMES,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
        )
        _add_onnx_metadata(tmp, metadata)


def export_encoder_torchscript(chunk: ChunkEncoder, path: Path, metadata: Dict[str, str]) -> None:
    # Tracing records one chunk's arithmetic; every shape it depends on is fixed per export
    # (T, chunk size, cache size) except batch and, for unlimited context, the cache length.
    traced = torch.jit.trace(chunk, _example_inputs(chunk), check_trace=False)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_METADATA: json.dumps(metadata)})


def export_transducer_onnx(chunk: ChunkEncoder, out_dir: Path, metadata: Dict[str, str]) -> None:
    head = chunk.model.transducer
    contexts = torch.zeros(1, head.context_size, dtype=torch.int64)
    joiner_dim = head.joiner.output.in_features
    frames = torch.randn(1, joiner_dim)
    with atomic_path(out_dir / DECODER_ONNX) as tmp:
        onnx_export(
            _Predictor(head),
            (contexts,),
            str(tmp),
            input_names=["y"],
            output_names=["decoder_out"],
            dynamic_axes={"y": {0: "N"}, "decoder_out": {0: "N"}},
            opset_version=ONNX_OPSET,
        )
        _add_onnx_metadata(tmp, {"context_size": str(head.context_size), "vocab_size": metadata["vocab_size"]})
    with atomic_path(out_dir / JOINER_ONNX) as tmp:
        onnx_export(
            _Joiner(head),
            (frames, frames),
            str(tmp),
            input_names=["encoder_out", "decoder_out"],
            output_names=["logit"],
            opset_version=ONNX_OPSET,
            dynamic_axes={"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}},
        )
        _add_onnx_metadata(tmp, {"joiner_dim": str(joiner_dim), "vocab_size": metadata["vocab_size"]})


def _write_tokens(tokenizer: Tokenizer, path: Path) -> None:
    sp = tokenizer.sp
    write_text(path, "".join(f"{sp.id_to_piece(i)} {i}\n" for i in range(sp.get_piece_size())))


def check_hlg_head(model, checkpoint: Path, hlg: Optional[Path]) -> None:
    """An HLG graph is only of use to a model with a CTC head: refuse it before writing anything."""
    if hlg is not None and model.ctc is None:
        raise ValueError(f"{checkpoint}: HLG decoding needs a CTC head; the model's head is {model.head.type!r}")


def export_model_dir(
    checkpoint: Path,
    bpe_model: Path,
    out_dir: Path,
    hlg: Optional[Path] = None,
    chunk_size: Optional[int] = None,
    left_chunks: Optional[int] = None,
    onnx: bool = True,
    torchscript: bool = True,
) -> Dict[str, object]:
    """Write the model folder described in the module docstring; returns export.json's content."""
    tokenizer = Tokenizer(bpe_model)
    model, meta = load_model(checkpoint, expected_vocab_size=tokenizer.vocab_size)
    model.eval()
    check_hlg_head(model, checkpoint, hlg)
    chunk = ChunkEncoder(model, chunk_size, left_chunks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: List[str] = [MODEL_FILE, BPE_FILE, TOKENS_FILE]
    for source, name in ((checkpoint, MODEL_FILE), (bpe_model, BPE_FILE)):
        if Path(source).resolve() != (out_dir / name).resolve():
            with atomic_path(out_dir / name) as tmp:
                shutil.copyfile(source, tmp)
    _write_tokens(tokenizer, out_dir / TOKENS_FILE)
    if hlg is not None:
        require_k2("shipping an HLG graph with the model")
    if model.ctc is not None and k2_available():  # without k2 the folder decodes with ctc-greedy
        from streamkd.decode.ctc import build_ctc_topo, save_graph
        from streamkd.lang.hlg import WordGraph

        save_graph(build_ctc_topo(tokenizer.vocab_size), out_dir / CTC_TOPO_FILE)
        files.append(CTC_TOPO_FILE)
        if hlg is not None:
            WordGraph.load(hlg, expected_vocab_size=tokenizer.vocab_size)  # checked before it is shipped
            with atomic_path(out_dir / HLG_FILE) as tmp:
                shutil.copyfile(hlg, tmp)
            files.append(HLG_FILE)

    metadata = chunk.metadata(
        tokenizer.vocab_size, {"source_checkpoint": Path(checkpoint).name, "role": str(meta.get("role", ""))}
    )
    with warnings.catch_warnings():
        # Tracing warns about every shape it records as a constant; each one is fixed per export.
        warnings.simplefilter("ignore")
        _export_networks(chunk, out_dir, metadata, files, onnx, torchscript)
    summary = {"metadata": metadata, "files": files, "bytes": {name: (out_dir / name).stat().st_size for name in files}}
    write_json(out_dir / EXPORT_JSON, summary)
    log.info("exported %s -> %s (%s)", checkpoint, out_dir, ", ".join(files))
    return summary


def _export_networks(
    chunk: ChunkEncoder, out_dir: Path, metadata: Dict[str, str], files: List[str], onnx: bool, torchscript: bool
) -> None:
    if onnx:
        export_encoder_onnx(chunk, out_dir / ENCODER_ONNX, metadata)
        files.append(ENCODER_ONNX)
        if chunk.model.transducer is not None:
            export_transducer_onnx(chunk, out_dir, metadata)
            files += [DECODER_ONNX, JOINER_ONNX]
    if torchscript:
        export_encoder_torchscript(chunk, out_dir / ENCODER_TORCHSCRIPT, metadata)
        files.append(ENCODER_TORCHSCRIPT)


__all__ = ["export_model_dir", "export_encoder_onnx", "export_encoder_torchscript", "export_transducer_onnx"]
