"""Boolean masks for self-attention. Convention: True means "may attend / is valid"."""

from typing import Optional, Union

import torch
from torch import Tensor


def chunk_attention_mask(
    num_frames: int,
    chunk_size: Optional[int],
    left_chunks: int = -1,
    device: Union[torch.device, str, None] = None,
) -> Tensor:
    """(T, T) mask: query frame ``t`` may attend to key frame ``s``.

    Frames are grouped into chunks of ``chunk_size``; frame ``t`` in chunk
    ``c = t // chunk_size`` sees every frame of chunks ``c - left_chunks .. c`` and
    nothing later than its own chunk. ``left_chunks < 0`` keeps all earlier chunks.
    ``chunk_size`` None or <= 0 means full (non-streaming) attention.
    """
    if chunk_size is None or chunk_size <= 0:
        return torch.ones(num_frames, num_frames, dtype=torch.bool, device=device)
    chunk = torch.arange(num_frames, device=device) // chunk_size
    query, key = chunk.unsqueeze(1), chunk.unsqueeze(0)
    allowed = key <= query
    if left_chunks >= 0:
        allowed &= key >= query - left_chunks
    return allowed


def padding_mask(lengths: Tensor, max_len: Optional[int] = None) -> Tensor:
    """(B, T) mask, True on the first ``lengths[b]`` frames of each row."""
    if max_len is None:
        max_len = int(lengths.max().item()) if lengths.numel() else 0
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def attention_mask(
    lengths: Tensor,
    max_len: int,
    chunk_size: Optional[int] = None,
    left_chunks: int = -1,
) -> Tensor:
    """(B, T, T) mask combining chunk structure with key padding.

    Query rows of padded frames are left as they are: their outputs are never read, and
    :func:`~streamkd.model.attention.masked_attention` copes with rows that allow no key.
    """
    chunks = chunk_attention_mask(max_len, chunk_size, left_chunks, lengths.device)
    keys = padding_mask(lengths, max_len)
    return chunks.unsqueeze(0) & keys.unsqueeze(1)


__all__ = ["chunk_attention_mask", "padding_mask", "attention_mask"]
