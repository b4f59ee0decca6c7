"""True streaming inference: caches must reproduce the masked whole-utterance forward."""

from typing import List

import pytest
import torch

from streamkd.model import ConformerEncoder, StreamingEncoder, subsampled_lengths

FEAT_DIM = 20
TINY = dict(feat_dim=FEAT_DIM, d_model=32, num_layers=2, num_heads=2, ff_dim=64, conv_kernel=5, dropout=0.0)


def student(chunk_size: int, left_chunks: int, seed: int = 0) -> ConformerEncoder:
    torch.manual_seed(seed)
    return ConformerEncoder(**TINY, causal=True, chunk_size=chunk_size, left_chunks=left_chunks).eval()


def stream_in_pieces(
    stream: StreamingEncoder, feats: torch.Tensor, lens: torch.Tensor, piece: int
) -> List[torch.Tensor]:
    """Feed ``piece`` input frames per call, as audio would arrive; collect each stream's frames."""
    batch = feats.size(0)
    state = stream.init_state(batch)
    outputs: List[List[torch.Tensor]] = [[] for _ in range(batch)]
    start = 0
    while not state.finished:
        chunk = feats[:, start : start + piece]
        real = (lens - start).clamp(min=0, max=chunk.size(1))
        out, out_lens = stream.accept(state, chunk, real, ended=lens <= start + piece)
        for b in range(batch):
            outputs[b].append(out[b, : out_lens[b]])
        start += piece
        assert start < 10 * feats.size(1), "the stream never finished"
    return [torch.cat(o) for o in outputs]


@pytest.mark.parametrize(
    "chunk_size, left_chunks, piece",
    # piece: input frames per call; 7 is irregular, 4 * chunk_size one chunk's worth.
    [(1, -1, 4), (3, -1, 7), (3, 1, 12), (4, 0, 7), (5, 2, 20), (8, 1, 7)],
)
def test_streaming_equals_masked_forward(chunk_size: int, left_chunks: int, piece: int) -> None:
    encoder = student(chunk_size, left_chunks)
    torch.manual_seed(1)
    # 121 input frames -> 29 encoder frames: not a multiple of any chunk size above but 1.
    lens = torch.tensor([121, 98, 57])
    feats = torch.randn(3, 121, FEAT_DIM)
    with torch.no_grad():
        masked = encoder(feats, lens)
    streamed = stream_in_pieces(StreamingEncoder(encoder), feats, lens, piece)
    for b in range(3):
        n = int(subsampled_lengths(lens[b]))
        assert streamed[b].shape == (n, TINY["d_model"])
        torch.testing.assert_close(streamed[b], masked.out[b, :n], atol=1e-4, rtol=0)


def test_streaming_with_overridden_chunk() -> None:
    encoder = student(chunk_size=4, left_chunks=1)
    feats, lens = torch.randn(1, 130, FEAT_DIM), torch.tensor([130])
    with torch.no_grad():
        masked = encoder(feats, lens, chunk_size=6, left_chunks=2)
    streamed = stream_in_pieces(StreamingEncoder(encoder, chunk_size=6, left_chunks=2), feats, lens, 24)
    torch.testing.assert_close(streamed[0], masked.out[0], atol=1e-4, rtol=0)


def test_chunk_is_emitted_only_when_its_input_and_lookahead_arrived() -> None:
    encoder = student(chunk_size=4, left_chunks=-1)
    stream = StreamingEncoder(encoder)
    state = stream.init_state(1)
    feats = torch.randn(1, 40, FEAT_DIM)
    # A chunk of 4 frames needs 4 * 4 + 3 = 19 input frames.
    out, lens = stream.accept(state, feats[:, :18])
    assert out.size(1) == 0 and int(lens[0]) == 0
    out, lens = stream.accept(state, feats[:, 18:19])
    assert int(lens[0]) == 4
    assert stream.algorithmic_latency_ms() == 4 * 40 + 30


def test_streaming_refuses_full_context_encoder_and_late_input() -> None:
    torch.manual_seed(0)
    teacher = ConformerEncoder(**TINY).eval()
    with pytest.raises(ValueError, match="causal"):
        StreamingEncoder(teacher)
    stream = StreamingEncoder(student(chunk_size=2, left_chunks=-1))
    state = stream.init_state(1)
    stream.accept(state, torch.randn(1, 20, FEAT_DIM), ended=True)
    with pytest.raises(ValueError, match="after it had ended"):
        stream.accept(state, torch.randn(1, 5, FEAT_DIM))


def test_streaming_refuses_training_mode() -> None:
    encoder = student(chunk_size=2, left_chunks=-1).train()
    with pytest.raises(ValueError, match="eval mode"):
        StreamingEncoder(encoder)


DYNAMIC_CHUNK = {"chunk_sizes": [2, 5, 8], "probabilities": [0.25, 0.5, 0.25]}


@pytest.mark.parametrize("chunk_size, piece", [(2, 7), (5, 20)])
def test_dynamic_chunk_checkpoint_streams_at_every_chunk_size(tmp_path, chunk_size: int, piece: int) -> None:
    """One dynamic-chunk checkpoint, two chunk sizes: chunk-by-chunk streaming equals the masked
    whole-utterance forward at each."""
    from streamkd.model import build_asr_model
    from streamkd.model.checkpoint import load_model, save_model

    torch.manual_seed(0)
    trained = build_asr_model({**TINY, "causal": True, "left_chunks": 2, "dynamic_chunk": DYNAMIC_CHUNK}, 10)
    trained.train()
    trained(torch.randn(2, 90, FEAT_DIM), torch.tensor([90, 70]))  # a training forward samples its chunk
    save_model(tmp_path / "model.pt", trained)
    encoder = load_model(tmp_path / "model.pt")[0].eval().encoder
    assert encoder.dynamic_chunk is not None and encoder.chunk_size is None
    torch.manual_seed(1)
    lens = torch.tensor([121, 98, 57])
    feats = torch.randn(3, 121, FEAT_DIM)
    with torch.no_grad():
        masked = encoder(feats, lens, chunk_size=chunk_size)
    stream = StreamingEncoder(encoder, chunk_size=chunk_size)
    assert stream.algorithmic_latency_ms() == chunk_size * 40 + 30
    streamed = stream_in_pieces(stream, feats, lens, piece)
    for b in range(3):
        n = int(subsampled_lengths(lens[b]))
        torch.testing.assert_close(streamed[b], masked.out[b, :n], atol=1e-4, rtol=0)


def test_dynamic_chunk_encoder_needs_an_explicit_chunk_size_outside_training() -> None:
    torch.manual_seed(0)
    encoder = ConformerEncoder(**TINY, causal=True, dynamic_chunk=DYNAMIC_CHUNK).eval()
    feats, lens = torch.randn(1, 60, FEAT_DIM), torch.tensor([60])
    for call in (
        lambda: StreamingEncoder(encoder),
        lambda: encoder(feats, lens),
        lambda: encoder.algorithmic_latency_ms(),
    ):
        with pytest.raises(ValueError, match=r"dynamic-chunk student \(trained at chunk sizes 2, 5, 8\).*--chunk-size"):
            call()
    assert encoder(feats, lens, chunk_size=5).out.shape == (1, 14, TINY["d_model"])
