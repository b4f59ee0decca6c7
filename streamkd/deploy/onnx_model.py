"""Running an exported model folder with onnxruntime (no streamkd model code involved).

:class:`OnnxChunkEncoder` drives ``encoder.onnx`` the way a streaming runtime does: it keeps
the feature buffer and the states, calls the encoder whenever ``T`` frames are buffered and
moves the buffer by ``decode_chunk_len``. :class:`OnnxHeads` presents the exported heads
(CTC posteriors from the encoder, ``decoder.onnx`` and ``joiner.onnx``) under the names the
searches of :mod:`streamkd.decode` call, so the ONNX path shares every search with PyTorch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from streamkd.deploy.export import DECODER_ONNX, ENCODER_ONNX, JOINER_ONNX
from streamkd.model.subsampling import MIN_INPUT_FRAMES


def open_session(path: Path, threads: int = 1):
    import onnxruntime as ort

    if not Path(path).is_file():
        raise FileNotFoundError(f"exported model not found: {path} (run `streamkd export` first)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def read_metadata(session) -> Dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


class OnnxChunkEncoder:
    """One stream through ``encoder.onnx``: feed fbank frames as they arrive, get chunk outputs."""

    def __init__(self, session) -> None:
        self.session = session
        self.meta = read_metadata(session)
        self.T = int(self.meta["T"])
        self.shift = int(self.meta["decode_chunk_len"])
        self.chunk_size = int(self.meta["chunk_size"])
        self.outputs = [o.name for o in session.get_outputs()]
        self.reset()

    def reset(self) -> None:
        layers, heads = int(self.meta["num_encoder_layers"]), int(self.meta["num_heads"])
        dim, kernel = int(self.meta["encoder_dim"]), int(self.meta["cnn_module_kernel"])
        cached = max(int(self.meta["left_context"]), 0)
        keys = np.zeros((layers, 1, heads, cached, dim // heads), dtype=np.float32)
        self.states = [
            keys,
            keys.copy(),
            np.zeros((layers, 1, dim, kernel - 1), dtype=np.float32),
            np.zeros((1,), dtype=np.int64),
        ]
        self.buffer = np.zeros((0, int(self.meta["feature_dim"])), dtype=np.float32)
        self.ended = False

    def _run(self, x: np.ndarray, real: int) -> Dict[str, np.ndarray]:
        feeds = {"x": x[None], "x_lens": np.array([real], dtype=np.int64)}
        feeds.update(zip(("cached_keys", "cached_values", "cached_conv", "processed_frames"), self.states))
        result = dict(zip(self.outputs, self.session.run(None, feeds)))
        self.states = [
            result[n] for n in ("new_cached_keys", "new_cached_values", "new_cached_conv", "new_processed_frames")
        ]
        return result

    def accept(self, feats: np.ndarray, ended: bool = False) -> List[Dict[str, np.ndarray]]:
        """Append (n, F) frames; returns the outputs of every chunk that became computable."""
        if self.ended:
            raise ValueError("the stream received input after it had ended")
        self.buffer = np.concatenate([self.buffer, np.asarray(feats, dtype=np.float32)])
        self.ended = ended
        results = []
        while len(self.buffer) >= self.T:
            results.append(self._run(self.buffer[: self.T], self.T))
            self.buffer = self.buffer[self.shift :]
        # The last, partial chunk: zero padding never reaches a valid frame (x_lens masks it).
        if ended and len(self.buffer) >= MIN_INPUT_FRAMES:
            pad = np.zeros((self.T - len(self.buffer), self.buffer.shape[1]), dtype=np.float32)
            results.append(self._run(np.concatenate([self.buffer, pad]), len(self.buffer)))
            self.buffer = self.buffer[:0]
        return results


class OnnxHeads(nn.Module):
    """The exported heads, shaped like :class:`~streamkd.model.AsrModel` for the searches.

    ``ctc`` is the identity: the encoder already returns CTC log-posteriors, which the caller
    passes as the search's "encoder frames". ``transducer`` runs ``decoder.onnx`` and
    ``joiner.onnx``; its encoder frames are the encoder's ``joiner_encoder_out``.
    """

    def __init__(self, model_dir: Path, meta: Dict[str, str], threads: int = 1) -> None:
        super().__init__()
        head = meta["head"]
        self.ctc = nn.Identity() if "ctc" in head else None
        self.transducer = OnnxTransducerHead(model_dir, meta, threads) if "transducer" in head else None


class OnnxTransducerHead(nn.Module):
    def __init__(self, model_dir: Path, meta: Dict[str, str], threads: int = 1) -> None:
        super().__init__()
        self.decoder = open_session(Path(model_dir) / DECODER_ONNX, threads)
        self.joiner = open_session(Path(model_dir) / JOINER_ONNX, threads)
        self.vocab_size = int(meta["vocab_size"])
        self.context_size = int(meta["context_size"])
        # The searches ask the head for its device; an empty parameter says "cpu".
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def project_encoder(self, encoder_out: Tensor) -> Tensor:
        return encoder_out  # the encoder's joiner_encoder_out is already projected

    def predictor_step(self, contexts: Tensor) -> Tensor:
        (out,) = self.decoder.run(None, {"y": contexts.cpu().numpy().astype(np.int64)})
        return torch.from_numpy(out)

    def step_log_probs(self, projected_encoder: Tensor, projected_decoder: Tensor) -> Tensor:
        feeds = {
            "encoder_out": projected_encoder.float().contiguous().numpy(),
            "decoder_out": projected_decoder.float().contiguous().numpy(),
        }
        (logits,) = self.joiner.run(None, feeds)
        return torch.from_numpy(logits).log_softmax(-1)


class OnnxModel:
    """An exported model folder: encoder session, metadata and heads."""

    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        self.model_dir = Path(model_dir)
        self.session = open_session(self.model_dir / ENCODER_ONNX, threads)
        self.meta = read_metadata(self.session)
        self.heads = OnnxHeads(self.model_dir, self.meta, threads)

    def new_stream(self) -> OnnxChunkEncoder:
        return OnnxChunkEncoder(self.session)

    def search_frames(self, result: Dict[str, np.ndarray], head: str) -> Tuple[Tensor, Tensor]:
        """What the search of ``head`` ("ctc" or "transducer") consumes from one chunk's outputs."""
        name = "ctc_log_probs" if head == "ctc" else "joiner_encoder_out"
        return torch.from_numpy(result[name]), torch.from_numpy(result["encoder_out_lens"])


__all__ = ["OnnxModel", "OnnxChunkEncoder", "OnnxHeads", "open_session", "read_metadata"]
