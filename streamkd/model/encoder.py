"""Conformer encoder shared by the non-streaming teacher and the streaming student.

Teacher: ``causal=False, chunk_size=None`` (full attention, symmetric convolution).
Student: ``causal=True, chunk_size=C, left_chunks=L`` (chunk-wise attention mask,
left-padded convolution). ``C`` is counted in encoder frames of 40 ms.
Dynamic-chunk student: ``causal=True, chunk_size=None, dynamic_chunk=...`` samples ``C`` (and
optionally ``L``) per training forward (:mod:`streamkd.dynamic_chunk`); outside training
every call must name its chunk size.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..dynamic_chunk import DynamicChunk
from ..schema import config_default
from . import subsampling
from .conformer import ConformerBlock
from .masks import attention_mask, padding_mask
from .normalization import GlobalCmvn
from .subsampling import Conv2dSubsampling


@dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to rebuild a :class:`ConformerEncoder` (stored in checkpoints)."""

    feat_dim: int = 80
    d_model: int = 144
    num_layers: int = 6
    num_heads: int = 4
    ff_dim: int = 576
    conv_kernel: int = 15
    dropout: float = config_default("model.student.dropout")  # the config schema's
    causal: bool = False
    chunk_size: Optional[int] = None
    left_chunks: int = config_default("model.left_chunks")
    # Channels of the convolutional front-end (default: d_model). Fewer channels make the
    # front-end, which dominates CPU time at small widths, several times cheaper.
    subsampling_channels: Optional[int] = None
    # A dynamic-chunk student's chunk-size distribution (chunk_size is then None).
    dynamic_chunk: Optional[DynamicChunk] = None

    def __post_init__(self) -> None:
        if self.dynamic_chunk is not None and not isinstance(self.dynamic_chunk, DynamicChunk):
            object.__setattr__(self, "dynamic_chunk", DynamicChunk.from_dict(self.dynamic_chunk))
        if self.dynamic_chunk is not None and (not self.causal or self.chunk_size is not None):
            raise ValueError(
                "a dynamic-chunk encoder must be causal and have chunk_size None "
                f"(got causal={self.causal}, chunk_size={self.chunk_size})"
            )
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by num_heads={self.num_heads}")
        if (self.d_model // self.num_heads) % 2:
            raise ValueError("d_model // num_heads must be even for rotary position embeddings")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if not self.causal and self.conv_kernel % 2 == 0:
            raise ValueError(f"a non-causal encoder needs an odd conv_kernel, got {self.conv_kernel}")
        if self.chunk_size is not None and self.chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive int or None, got {self.chunk_size}")
        if self.left_chunks < -1:
            raise ValueError(f"left_chunks must be >= -1 (-1 = unlimited), got {self.left_chunks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        # Fixed-chunk and full-context encoders keep the dict (and config hash) they always had.
        out.pop("dynamic_chunk")
        if self.dynamic_chunk is not None:
            out["dynamic_chunk"] = self.dynamic_chunk.to_dict()
        return out

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "EncoderConfig":
        """Build from a plain dict; unknown keys are an error, so typos never pass silently."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"unknown encoder option(s): {', '.join(unknown)}; valid options: {', '.join(sorted(known))}"
            )
        return cls(**options)


class EncoderOutput(NamedTuple):
    """Encoder result. Frames at or past ``lengths[b]`` hold undefined values."""

    out: Tensor  # (B, T', D), equal to hidden[-1]
    lengths: Tensor  # (B,) valid encoder frames
    hidden: List[Tensor]  # every block's output, num_layers tensors of (B, T', D)


class ConformerEncoder(nn.Module):
    """Conv2d subsampling (x4) followed by a stack of Conformer blocks."""

    def __init__(
        self,
        feat_dim: int = 80,
        d_model: int = 144,
        num_layers: int = 6,
        num_heads: int = 4,
        ff_dim: int = 576,
        conv_kernel: int = 15,
        dropout: float = EncoderConfig.dropout,
        causal: bool = False,
        chunk_size: Optional[int] = None,
        left_chunks: int = EncoderConfig.left_chunks,
        subsampling_channels: Optional[int] = None,
        dynamic_chunk: Union[DynamicChunk, Mapping[str, Any], None] = None,
    ) -> None:
        super().__init__()
        self.config = EncoderConfig(
            feat_dim=feat_dim,
            d_model=d_model,
            num_layers=num_layers,
            num_heads=num_heads,
            ff_dim=ff_dim,
            conv_kernel=conv_kernel,
            dropout=dropout,
            causal=causal,
            chunk_size=chunk_size,
            left_chunks=left_chunks,
            subsampling_channels=subsampling_channels,
            dynamic_chunk=dynamic_chunk,
        )
        # The chunk size a dynamic-chunk encoder uses in eval mode when a call names none (the
        # trainer's dev loss); None: such a call is an error (decoding must name its chunk).
        self.eval_chunk_size: Optional[int] = None
        self.cmvn = GlobalCmvn(feat_dim)
        self.subsampling = Conv2dSubsampling(feat_dim, d_model, channels=subsampling_channels)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            ConformerBlock(d_model, num_heads, ff_dim, conv_kernel, dropout, causal) for _ in range(num_layers)
        )

    @classmethod
    def from_config(cls, config: Union[EncoderConfig, Mapping[str, Any]]) -> "ConformerEncoder":
        if not isinstance(config, EncoderConfig):
            config = EncoderConfig.from_dict(config)
        return cls(**config.to_dict())

    @property
    def d_model(self) -> int:
        return self.config.d_model

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def chunk_size(self) -> Optional[int]:
        return self.config.chunk_size

    @property
    def left_chunks(self) -> int:
        return self.config.left_chunks

    @property
    def dynamic_chunk(self) -> Optional[DynamicChunk]:
        """The chunk-size distribution of a dynamic-chunk student, else None."""
        return self.config.dynamic_chunk

    @property
    def streaming(self) -> bool:
        """True when no output frame depends on input past its chunk (plus front-end lookahead)."""
        return self.config.causal and (self.config.chunk_size is not None or self.config.dynamic_chunk is not None)

    def require_chunk_size(self, chunk_size: Optional[int], what: str) -> None:
        """Refuse ``what`` (decoding, export, ...) of a dynamic-chunk encoder without a chunk size."""
        if chunk_size is None and self.config.dynamic_chunk is not None:
            sizes = ", ".join(map(str, self.config.dynamic_chunk.chunk_sizes))
            raise ValueError(
                f"{what}: this is a dynamic-chunk student (trained at chunk sizes {sizes}), which has no "
                "single chunk size: give one explicitly (--chunk-size N, N encoder frames of 40 ms)"
            )

    def algorithmic_latency_ms(self, chunk_size: Optional[int] = None) -> float:
        """``chunk_size * 40`` ms plus the front-end lookahead of 30 ms.

        The subsampling front-end reads input frames up to 60 ms past the start of an
        encoder frame, i.e. 3 frames (30 ms) beyond the end of a chunk; see
        :mod:`streamkd.model.subsampling`. ``chunk_size`` defaults to the configured one.
        Raises ValueError for a non-streaming encoder (latency = whole utterance).
        """
        self.require_chunk_size(chunk_size, "algorithmic latency")
        chunk = self.config.chunk_size if chunk_size is None else chunk_size
        if not self.config.causal or chunk is None or chunk <= 0:
            raise ValueError("algorithmic latency is only defined for a causal, chunked encoder")
        return subsampling.algorithmic_latency_ms(chunk)

    def forward(
        self,
        feats: Tensor,
        feat_lens: Tensor,
        chunk_size: Optional[int] = None,
        left_chunks: Optional[int] = None,
    ) -> EncoderOutput:
        """feats: (B, T, feat_dim) fbank; feat_lens: (B,) valid input frames.

        ``chunk_size`` / ``left_chunks`` override the configured values for this call
        (e.g. decoding a student with another chunk); ``chunk_size <= 0`` forces full
        attention. Overrides leave the convolution's causality unchanged. A dynamic-chunk
        encoder samples the chunk size (and left context, when configured) of a training call
        that names none.
        """
        if chunk_size is None and self.config.dynamic_chunk is not None:
            chunk_size, sampled_left = self._dynamic_chunk_size()
            if left_chunks is None:
                left_chunks = sampled_left
        chunk = self.config.chunk_size if chunk_size is None else chunk_size
        left = self.config.left_chunks if left_chunks is None else left_chunks

        x, lengths = self.subsampling(self.cmvn(feats), feat_lens)
        x = self.input_dropout(x)
        num_frames = x.size(1)
        valid = padding_mask(lengths, num_frames)
        mask = attention_mask(lengths, num_frames, chunk, left)
        positions = torch.arange(num_frames, device=x.device)

        hidden: List[Tensor] = []
        for block in self.blocks:
            x = block(x, mask, valid, positions)
            hidden.append(x)
        return EncoderOutput(out=x, lengths=lengths, hidden=hidden)

    def _dynamic_chunk_size(self) -> Tuple[int, Optional[int]]:
        dynamic = self.config.dynamic_chunk
        assert dynamic is not None
        if self.training:
            return dynamic.sample()
        if self.eval_chunk_size is not None:
            return self.eval_chunk_size, None
        self.require_chunk_size(None, "encoder forward in eval mode")
        raise AssertionError("unreachable")


__all__ = ["EncoderConfig", "EncoderOutput", "ConformerEncoder"]
