"""The streaming student as a pure function of one chunk and its states, for export.

:class:`ChunkEncoder` wraps a causal, chunked :class:`~streamkd.model.ConformerEncoder` (and
its output heads) so that one call computes one chunk from tensors only, the form TorchScript
tracing and ONNX export need and the form streaming runtimes (sherpa-onnx and the like) drive:

inputs
    ``x`` (N, T, F) fbank frames with ``T = 4 * chunk_size + 3``: the chunk's own
    ``4 * chunk_size`` frames plus the 3 frames of front-end lookahead. Like icefall's
    streaming exports, the caller shifts its feature buffer by ``decode_chunk_len =
    4 * chunk_size`` frames per call, so the last 3 frames are read again by the next call.
    ``x_lens`` (N,) real frames in ``x`` (T except at the end of a stream: pad with zeros).
    ``cached_keys``, ``cached_values`` (num_layers, N, H, L, head_dim) attention caches,
    ``cached_conv`` (num_layers, N, d_model, conv_kernel - 1) convolution caches,
    ``processed_frames`` (N,) encoder frames each stream has emitted so far.

outputs
    ``encoder_out`` (N, chunk_size, d_model), ``encoder_out_lens`` (N,), the new states
    (same shapes, except that L grows by ``chunk_size`` per call when ``left_chunks = -1``),
    ``new_processed_frames``, then ``ctc_log_probs`` (N, C, V) for a CTC head and
    ``joiner_encoder_out`` (N, C, joiner_dim) for a transducer head.

With ``left_chunks >= 0`` the attention cache has a fixed size ``L = left_chunks * chunk_size``
from the first call on; slots not yet filled (``L - processed_frames`` of them) are masked.
Every block runs its own ``forward_cached`` (the code :class:`StreamingEncoder` runs), so the
exported arithmetic is the PyTorch streaming arithmetic.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from streamkd.model.asr import AsrModel
from streamkd.model.attention import AttentionCache
from streamkd.model.conformer import BlockCache
from streamkd.model.subsampling import (
    LOOKAHEAD_FRAMES,
    SUBSAMPLING_FACTOR,
    subsampled_lengths,
)

STATE_NAMES = ["cached_keys", "cached_values", "cached_conv", "processed_frames"]
INPUT_NAMES = ["x", "x_lens", *STATE_NAMES]
STATE_OUTPUT_NAMES = ["new_" + name for name in STATE_NAMES]


class ChunkEncoder(nn.Module):
    """One chunk + states in, encoder frames (+ head outputs) + new states out."""

    def __init__(self, model: AsrModel, chunk_size: Optional[int] = None, left_chunks: Optional[int] = None) -> None:
        super().__init__()
        encoder = model.encoder
        encoder.require_chunk_size(chunk_size, "export")
        chunk = encoder.chunk_size if chunk_size is None else chunk_size
        left = encoder.left_chunks if left_chunks is None else left_chunks
        if not encoder.config.causal or chunk is None or chunk < 1:
            raise ValueError("only a causal, chunked student can be exported for streaming")
        if left < -1:
            raise ValueError(f"left_chunks must be >= -1 (-1 = unlimited), got {left}")
        if model.training:
            raise ValueError("put the model in eval mode before exporting it")
        self.model = model
        self.chunk_size = chunk
        self.left_chunks = left
        self.cache_frames = None if left < 0 else left * chunk

    @property
    def input_frames(self) -> int:
        """T: the fbank frames of one call (the chunk plus the front-end lookahead)."""
        return SUBSAMPLING_FACTOR * self.chunk_size + LOOKAHEAD_FRAMES

    @property
    def shift_frames(self) -> int:
        """decode_chunk_len: how far the caller's feature buffer moves per call."""
        return SUBSAMPLING_FACTOR * self.chunk_size

    def output_names(self) -> List[str]:
        names = ["encoder_out", "encoder_out_lens", *STATE_OUTPUT_NAMES]
        if self.model.ctc is not None:
            names.append("ctc_log_probs")
        if self.model.transducer is not None:
            names.append("joiner_encoder_out")
        return names

    def initial_states(self, batch_size: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """States before a stream's first chunk (zeros; attention slots all masked)."""
        config = self.model.encoder.config
        head_dim = config.d_model // config.num_heads
        cached = 0 if self.cache_frames is None else self.cache_frames
        keys = torch.zeros(config.num_layers, batch_size, config.num_heads, cached, head_dim)
        conv = torch.zeros(config.num_layers, batch_size, config.d_model, config.conv_kernel - 1)
        return keys, keys.clone(), conv, torch.zeros(batch_size, dtype=torch.int64)

    def forward(
        self,
        x: Tensor,
        x_lens: Tensor,
        cached_keys: Tensor,
        cached_values: Tensor,
        cached_conv: Tensor,
        processed_frames: Tensor,
    ) -> Tuple[Tensor, ...]:
        encoder = self.model.encoder
        frames, _ = encoder.subsampling(encoder.cmvn(x), x_lens)
        chunk = torch.arange(self.chunk_size, device=x.device)
        out_lens = subsampled_lengths(x_lens).clamp(max=self.chunk_size)
        valid = chunk.unsqueeze(0) < out_lens.unsqueeze(1)
        positions = processed_frames.unsqueeze(1) + chunk.unsqueeze(0)  # (N, C) absolute frames
        # Slot j of a cache of L holds frame processed - L + j: valid once that frame exists.
        slots = torch.arange(cached_keys.size(3), device=x.device)
        cache_valid = slots.unsqueeze(0) >= (cached_keys.size(3) - processed_frames).unsqueeze(1)

        keys: List[Tensor] = []
        values: List[Tensor] = []
        convs: List[Tensor] = []
        for i, block in enumerate(encoder.blocks):
            cache = BlockCache(AttentionCache(cached_keys[i], cached_values[i], cache_valid), cached_conv[i])
            frames, cache = block.forward_cached(frames, valid, positions, cache, self.cache_frames)
            keys.append(cache.attention.keys)
            values.append(cache.attention.values)
            convs.append(cache.conv)
        outputs = [
            frames,
            out_lens,
            torch.stack(keys),
            torch.stack(values),
            torch.stack(convs),
            processed_frames + self.chunk_size,
        ]
        if self.model.ctc is not None:
            outputs.append(self.model.ctc(frames))
        if self.model.transducer is not None:
            outputs.append(self.model.transducer.project_encoder(frames))
        return tuple(outputs)

    def metadata(self, vocab_size: int, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """Everything a runtime needs to drive the exported encoder, as strings (ONNX metadata)."""
        config = self.model.encoder.config
        meta = {
            "model_type": "streamkd-conformer",
            "version": "1",
            "head": self.model.head.type,
            "vocab_size": vocab_size,
            "blank_id": 0,
            "num_encoder_layers": config.num_layers,
            "encoder_dim": config.d_model,
            "num_heads": config.num_heads,
            "cnn_module_kernel": config.conv_kernel,
            "chunk_size": self.chunk_size,
            "left_chunks": self.left_chunks,
            # -1: the attention cache grows by chunk_size per call (unlimited left context).
            "left_context": -1 if self.cache_frames is None else self.cache_frames,
            "decode_chunk_len": self.shift_frames,
            "T": self.input_frames,
            "pad_length": LOOKAHEAD_FRAMES,
            "subsampling_factor": SUBSAMPLING_FACTOR,
            "algorithmic_latency_ms": self.model.encoder.algorithmic_latency_ms(self.chunk_size),
            "feature_type": "fbank",
            "feature_dim": config.feat_dim,
            "sample_rate": 16000,
            "frame_shift_ms": 10,
            "frame_length_ms": 25,
            "feature_extractor": "lhotse.Fbank (log-mel, 80 bins by default)",
            "context_size": self.model.head.context_size if self.model.transducer is not None else 0,
        }
        if config.dynamic_chunk is not None:
            # A dynamic-chunk student: exported at chunk_size, one of (or beside) the sizes it trained at.
            meta["trained_chunk_sizes"] = ",".join(map(str, config.dynamic_chunk.chunk_sizes))
        meta.update(extra or {})
        return {key: str(value) for key, value in meta.items()}


__all__ = ["ChunkEncoder", "INPUT_NAMES", "STATE_NAMES", "STATE_OUTPUT_NAMES"]
