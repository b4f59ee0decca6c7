"""True streaming inference: a causal, chunked encoder fed features as they arrive.

:class:`StreamingEncoder` consumes fbank frames in pieces of any size and emits encoder
frames one chunk at a time, carrying between calls

- the subsampling front-end's input buffer (a chunk of ``C`` encoder frames needs input
  frames ``4s .. 4(s+C-1)+6``; the last 3 overlap the next chunk and are kept),
- every block's attention keys/values (the last ``left_chunks * C`` frames, or all), and
- every block's causal-convolution state (the last ``conv_kernel - 1`` gated frames).

Each chunk is computed exactly as the masked whole-utterance forward computes it, so the
outputs agree to float precision (tests/test_streaming.py). A batch holds independent
streams that advance in lockstep (one chunk for all at a time); a stream that has ended
contributes padding, masked out like padding in a batched whole-utterance forward.

Usage::

    stream = StreamingEncoder(model.encoder)
    state = stream.init_state(batch_size)
    for piece, piece_lens, ended in arriving_features:
        out, out_lens = stream.accept(state, piece, piece_lens, ended)   # 0 or more chunks
        ...  # search over out[b, :out_lens[b]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor

from .conformer import BlockCache
from .encoder import ConformerEncoder
from .subsampling import SUBSAMPLING_FACTOR, input_frames_needed, subsampled_lengths


@dataclass
class StreamingState:
    """Everything a batch of streams carries from one chunk to the next."""

    buffer: Tensor  # (B, n, F) input frames from global frame 4 * frames_done on
    received: Tensor  # (B,) input frames received so far per stream
    ended: Tensor  # (B,) bool: the stream's input is complete
    frames_done: int  # encoder frames emitted so far (the same for every stream)
    layers: List[BlockCache]

    @property
    def batch_size(self) -> int:
        return self.received.numel()

    def total_frames(self) -> Tensor:
        """Encoder frames each stream will have once its input is complete (meaningful when ended)."""
        return subsampled_lengths(self.received)

    @property
    def finished(self) -> bool:
        """Every stream has ended and every encoder frame has been emitted."""
        return bool(self.ended.all()) and self.frames_done >= int(self.total_frames().max())


class StreamingEncoder:
    """Chunk-by-chunk inference for a causal :class:`ConformerEncoder` with caches."""

    def __init__(
        self,
        encoder: ConformerEncoder,
        chunk_size: Optional[int] = None,
        left_chunks: Optional[int] = None,
    ) -> None:
        encoder.require_chunk_size(chunk_size, "streaming inference")
        chunk = encoder.chunk_size if chunk_size is None else chunk_size
        left = encoder.left_chunks if left_chunks is None else left_chunks
        if not encoder.config.causal:
            raise ValueError(
                "streaming inference needs a causal encoder (a student); this one has full-context convolutions"
            )
        if chunk is None or chunk < 1:
            raise ValueError(f"streaming inference needs a chunk size >= 1, got {chunk}")
        if left < -1:
            raise ValueError(f"left_chunks must be >= -1 (-1 = unlimited), got {left}")
        if encoder.training:
            raise ValueError("put the encoder in eval mode before streaming (dropout would differ per chunk)")
        self.encoder = encoder
        self.chunk_size = chunk
        self.left_chunks = left
        self.max_cached_frames = None if left < 0 else left * chunk
        # Input frames a chunk's front-end reads, and frames it moves forward by.
        self.window = input_frames_needed(chunk)
        self.stride = SUBSAMPLING_FACTOR * chunk

    def algorithmic_latency_ms(self) -> float:
        return self.encoder.algorithmic_latency_ms(self.chunk_size)

    def init_state(self, batch_size: int, device: Union[torch.device, str, None] = None) -> StreamingState:
        param = next(self.encoder.parameters())
        device = param.device if device is None else torch.device(device)
        feat_dim = self.encoder.config.feat_dim
        return StreamingState(
            buffer=torch.zeros(batch_size, 0, feat_dim, device=device, dtype=param.dtype),
            received=torch.zeros(batch_size, dtype=torch.int64, device=device),
            ended=torch.zeros(batch_size, dtype=torch.bool, device=device),
            frames_done=0,
            layers=[block.initial_cache(batch_size, device, param.dtype) for block in self.encoder.blocks],
        )

    @torch.no_grad()
    def accept(
        self,
        state: StreamingState,
        feats: Tensor,
        num_frames: Optional[Tensor] = None,
        ended: Union[Tensor, bool] = False,
    ) -> Tuple[Tensor, Tensor]:
        """Append input and compute every chunk that has become computable.

        feats: (B, n, F) new input frames (n may be 0); num_frames: (B,) how many of them are
        real for each stream (default n); ended: (B,) bool or a bool, True once a stream's
        input is complete (it may not receive frames afterwards).

        Returns ``(out (B, k * C, D), lengths (B,))``: the encoder frames of the k chunks
        computed now (k may be 0), global frames ``frames_done_before ..``; stream b's valid
        frames are ``out[b, :lengths[b]]``.
        """
        self._append(state, feats, num_frames, ended)
        outputs, lengths = [], torch.zeros_like(state.received)
        while self._chunk_ready(state):
            out, valid = self._chunk(state)
            outputs.append(out)
            lengths += valid.sum(dim=1)
        if not outputs:
            d_model = self.encoder.d_model
            return state.buffer.new_zeros(state.batch_size, 0, d_model), lengths
        return torch.cat(outputs, dim=1), lengths

    # -- internals ---------------------------------------------------------------------------

    def _append(self, state: StreamingState, feats: Tensor, num_frames: Optional[Tensor], ended) -> None:
        b = state.batch_size
        if feats.dim() != 3 or feats.size(0) != b or feats.size(2) != state.buffer.size(2):
            raise ValueError(f"expected ({b}, n, {state.buffer.size(2)}) features, got {tuple(feats.shape)}")
        n = feats.size(1)
        if num_frames is None:
            num_frames = torch.full((b,), n, dtype=torch.int64, device=state.received.device)
        num_frames = num_frames.to(state.received.device, torch.int64)
        if bool((num_frames < 0).any()) or bool((num_frames > n).any()):
            raise ValueError(f"num_frames must lie in [0, {n}], got {num_frames.tolist()}")
        if bool((state.ended & (num_frames > 0)).any()):
            raise ValueError("a stream received input after it had ended")
        # Frames of a stream are contiguous in the buffer: write each stream's new real frames
        # right after its previous ones (padding of an ended stream stays zero).
        start = state.received - SUBSAMPLING_FACTOR * state.frames_done
        needed = int((start + num_frames).max()) if b else 0
        if needed > state.buffer.size(1):
            grow = state.buffer.new_zeros(b, needed - state.buffer.size(1), state.buffer.size(2))
            state.buffer = torch.cat([state.buffer, grow], dim=1)
        for i in range(b):
            k = int(num_frames[i])
            if k:
                s = int(start[i])
                state.buffer[i, s : s + k] = feats[i, :k].to(state.buffer.dtype)
        state.received += num_frames
        ended_now = torch.as_tensor(ended, dtype=torch.bool, device=state.ended.device).expand(b)
        state.ended |= ended_now

    def _chunk_ready(self, state: StreamingState) -> bool:
        if state.finished:
            return False
        needed = input_frames_needed(state.frames_done + self.chunk_size)
        waiting = ~state.ended & (state.received < needed)
        return not bool(waiting.any())

    def _chunk(self, state: StreamingState) -> Tuple[Tensor, Tensor]:
        """Compute the next chunk for every stream; returns (out (B, C, D), valid (B, C))."""
        encoder, c = self.encoder, self.chunk_size
        window = state.buffer[:, : self.window]
        if window.size(1) < self.window:  # end of input: zeros never reach a valid frame
            pad = window.new_zeros(window.size(0), self.window - window.size(1), window.size(2))
            window = torch.cat([window, pad], dim=1)

        frame = state.frames_done + torch.arange(c, device=state.received.device)
        # Ended streams stop at their own length; running ones are complete up to the chunk end.
        valid = ~state.ended.unsqueeze(1) | (frame.unsqueeze(0) < state.total_frames().unsqueeze(1))
        lens = torch.full_like(state.received, self.window)
        x, _ = encoder.subsampling(encoder.cmvn(window), lens)  # per-frame normalisation: chunk-safe
        x = encoder.input_dropout(x)
        layers = []
        for block, cache in zip(encoder.blocks, state.layers):
            x, cache = block.forward_cached(x, valid, frame, cache, self.max_cached_frames)
            layers.append(cache)
        state.layers = layers
        state.buffer = state.buffer[:, self.stride :]
        state.frames_done += c
        return x, valid


__all__ = ["StreamingEncoder", "StreamingState"]
