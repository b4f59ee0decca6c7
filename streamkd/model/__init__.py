"""Conformer encoders (non-streaming teacher, chunk-streaming student) and CTC model."""

from .asr import AsrModel, build_asr_model
from .attention import POSITIONAL_CHOICES, MultiHeadSelfAttention, masked_attention
from .conformer import ConformerBlock, ConvModule, FeedForward
from .ctc import BLANK_ID, CTCHead
from .encoder import ConformerEncoder, EncoderConfig, EncoderOutput
from .masks import attention_mask, chunk_attention_mask, padding_mask
from .rotary import RotaryEmbedding
from .subsampling import (
    INPUT_FRAME_SHIFT_MS,
    LOOKAHEAD_FRAMES,
    MIN_INPUT_FRAMES,
    RECEPTIVE_FIELD_FRAMES,
    RIGHT_CONTEXT_FRAMES,
    SUBSAMPLING_FACTOR,
    Conv2dSubsampling,
    algorithmic_latency_ms,
    input_frames_needed,
    subsampled_lengths,
)

__all__ = [
    "AsrModel",
    "build_asr_model",
    "POSITIONAL_CHOICES",
    "MultiHeadSelfAttention",
    "masked_attention",
    "ConformerBlock",
    "ConvModule",
    "FeedForward",
    "BLANK_ID",
    "CTCHead",
    "ConformerEncoder",
    "EncoderConfig",
    "EncoderOutput",
    "attention_mask",
    "chunk_attention_mask",
    "padding_mask",
    "RotaryEmbedding",
    "INPUT_FRAME_SHIFT_MS",
    "LOOKAHEAD_FRAMES",
    "MIN_INPUT_FRAMES",
    "RECEPTIVE_FIELD_FRAMES",
    "RIGHT_CONTEXT_FRAMES",
    "SUBSAMPLING_FACTOR",
    "Conv2dSubsampling",
    "algorithmic_latency_ms",
    "input_frames_needed",
    "subsampled_lengths",
]
