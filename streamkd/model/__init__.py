"""Conformer encoders (non-streaming teacher, chunk-streaming student), CTC and transducer heads."""

from .asr import AsrModel, build_asr_model
from .attention import POSITIONAL_CHOICES, AttentionCache, MultiHeadSelfAttention, masked_attention
from .conformer import BlockCache, ConformerBlock, ConvModule, FeedForward
from .ctc import BLANK_ID, CTCHead
from .encoder import ConformerEncoder, EncoderConfig, EncoderOutput
from .heads import HEAD_TYPES, HeadConfig
from .masks import attention_mask, chunk_attention_mask, padding_mask
from .rotary import RotaryEmbedding
from .streaming import StreamingEncoder, StreamingState
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
from .transducer import IMPOSSIBLE_LOG_PROB, Joiner, StatelessPredictor, TransducerHead

__all__ = [
    "AsrModel",
    "build_asr_model",
    "POSITIONAL_CHOICES",
    "AttentionCache",
    "MultiHeadSelfAttention",
    "masked_attention",
    "BlockCache",
    "ConformerBlock",
    "ConvModule",
    "FeedForward",
    "BLANK_ID",
    "CTCHead",
    "ConformerEncoder",
    "EncoderConfig",
    "EncoderOutput",
    "HEAD_TYPES",
    "HeadConfig",
    "attention_mask",
    "chunk_attention_mask",
    "padding_mask",
    "RotaryEmbedding",
    "StreamingEncoder",
    "StreamingState",
    "IMPOSSIBLE_LOG_PROB",
    "Joiner",
    "StatelessPredictor",
    "TransducerHead",
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
