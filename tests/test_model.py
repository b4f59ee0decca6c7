"""Tests for the Conformer encoders, masks, front-end and CTC model (tiny, CPU, fast)."""

from typing import List, Optional

import pytest
import torch

from streamkd.model import (
    AsrModel,
    ConformerEncoder,
    Conv2dSubsampling,
    ConvModule,
    EncoderConfig,
    MultiHeadSelfAttention,
    algorithmic_latency_ms,
    build_asr_model,
    chunk_attention_mask,
    input_frames_needed,
    masked_attention,
    padding_mask,
    subsampled_lengths,
)

FEAT_DIM = 20
TINY = dict(feat_dim=FEAT_DIM, d_model=32, num_layers=2, num_heads=2, ff_dim=64, conv_kernel=5, dropout=0.0)


def tiny_encoder(causal: bool = False, chunk_size: Optional[int] = None, left_chunks: int = -1) -> ConformerEncoder:
    torch.manual_seed(0)
    return ConformerEncoder(**TINY, causal=causal, chunk_size=chunk_size, left_chunks=left_chunks).eval()


def all_outputs(encoder: ConformerEncoder, feats: torch.Tensor, lens: torch.Tensor) -> List[torch.Tensor]:
    with torch.no_grad():
        return encoder(feats, lens).hidden


# --- streaming guarantees -------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [3, 8])
@pytest.mark.parametrize("left_chunks", [-1, 1])
def test_student_ignores_input_after_chunk(chunk_size: int, left_chunks: int) -> None:
    torch.manual_seed(1)
    student = tiny_encoder(causal=True, chunk_size=chunk_size, left_chunks=left_chunks)
    teacher = tiny_encoder()
    num_in = 160
    feats = torch.randn(1, num_in, FEAT_DIM)
    lens = torch.tensor([num_in])
    assert subsampled_lengths(num_in) >= 3 * chunk_size + 1

    for boundary_chunk in (1, 2):
        frames = boundary_chunk * chunk_size  # encoder frames before the chunk boundary
        visible = input_frames_needed(frames)  # their input, front-end lookahead included
        changed = feats.clone()
        changed[:, visible:] = torch.randn(1, num_in - visible, FEAT_DIM)

        for before, after in zip(all_outputs(student, feats, lens), all_outputs(student, changed, lens)):
            torch.testing.assert_close(before[:, :frames], after[:, :frames], atol=1e-5, rtol=0)
            assert not torch.allclose(before[:, frames:], after[:, frames:], atol=1e-3)

        # The teacher sees the whole utterance, so the same frames must move.
        for before, after in zip(all_outputs(teacher, feats, lens), all_outputs(teacher, changed, lens)):
            assert (before[:, :frames] - after[:, :frames]).abs().max() > 1e-3


def test_visible_input_is_tight() -> None:
    # Changing the last input frame the boundary frames may see must change them, so
    # the region used above is not an over-generous estimate.
    student = tiny_encoder(causal=True, chunk_size=4)
    feats = torch.randn(1, 100, FEAT_DIM)
    lens = torch.tensor([100])
    frames = 4
    changed = feats.clone()
    changed[:, input_frames_needed(frames) - 1] += 1.0
    before, after = all_outputs(student, feats, lens)[-1], all_outputs(student, changed, lens)[-1]
    assert (before[:, frames - 1] - after[:, frames - 1]).abs().max() > 1e-4


@pytest.mark.parametrize("causal,chunk_size,left_chunks", [(False, None, -1), (True, 4, -1), (True, 4, 1)])
def test_padding_invariance(causal: bool, chunk_size: Optional[int], left_chunks: int) -> None:
    torch.manual_seed(2)
    encoder = tiny_encoder(causal, chunk_size, left_chunks)
    long_len, short_len = 150, 97
    feats = torch.randn(2, long_len, FEAT_DIM)  # random values in the padding on purpose
    lens = torch.tensor([long_len, short_len])
    with torch.no_grad():
        batched = encoder(feats, lens)
        alone = encoder(feats[1:, :short_len], lens[1:])
    n = int(subsampled_lengths(short_len))
    assert int(batched.lengths[1]) == n == alone.out.size(1)
    for b, a in zip(batched.hidden, alone.hidden):
        torch.testing.assert_close(b[1, :n], a[0], atol=1e-5, rtol=0)
    assert torch.equal(batched.out, batched.hidden[-1])
    assert len(batched.hidden) == TINY["num_layers"]


# --- masks ------------------------------------------------------------------------------


def test_chunk_mask_left_one() -> None:
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(chunk_attention_mask(6, 2, 1, "cpu"), expected)


def test_chunk_mask_unlimited_left() -> None:
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(chunk_attention_mask(6, 2, -1, "cpu"), expected)


@pytest.mark.parametrize("chunk_size", [None, 0, -1])
def test_chunk_mask_full(chunk_size: Optional[int]) -> None:
    assert bool(chunk_attention_mask(5, chunk_size, 1, "cpu").all())


def test_padding_mask() -> None:
    expected = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    assert torch.equal(padding_mask(torch.tensor([3, 1])), expected)
    assert padding_mask(torch.tensor([2]), 4).tolist() == [[True, True, False, False]]


def test_empty_attention_rows_are_zero_without_nan() -> None:
    q = torch.randn(1, 1, 3, 4, requires_grad=True)
    k, v = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    mask = torch.tensor([[True, False, False], [False, False, False], [True, True, True]])
    out = masked_attention(q, k, v, mask)
    assert torch.equal(out[0, 0, 1], torch.zeros(4))
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


# --- front-end --------------------------------------------------------------------------


def test_subsampled_lengths_match_conv() -> None:
    front = Conv2dSubsampling(FEAT_DIM, d_model=8, channels=2)
    with torch.no_grad():
        for t in range(7, 201):
            out, lens = front(torch.zeros(1, t, FEAT_DIM), torch.tensor([t]))
            assert out.size(1) == subsampled_lengths(t) == int(lens[0]), t
    assert subsampled_lengths(torch.tensor([3, 6, 7, 10, 11])).tolist() == [0, 0, 1, 1, 2]


def test_front_end_receptive_field() -> None:
    # Output frame i reads exactly input frames 4i .. 4i+6.
    front = Conv2dSubsampling(FEAT_DIM, d_model=8, channels=4)
    x = torch.randn(1, 60, FEAT_DIM, requires_grad=True)
    out, _ = front(x, torch.tensor([60]))
    i = 5
    out[0, i].sum().backward()
    touched = (x.grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist()
    assert touched == list(range(4 * i, 4 * i + 7))


def test_latency() -> None:
    assert algorithmic_latency_ms(4) == 4 * 40 + 30
    assert tiny_encoder(causal=True, chunk_size=8).algorithmic_latency_ms() == 8 * 40 + 30
    assert tiny_encoder(causal=True, chunk_size=8).algorithmic_latency_ms(2) == 2 * 40 + 30
    with pytest.raises(ValueError):
        tiny_encoder().algorithmic_latency_ms()


# --- convolution and attention -----------------------------------------------------------


def test_causal_conv_ignores_future() -> None:
    torch.manual_seed(3)
    conv = ConvModule(d_model=16, kernel_size=7, causal=True).eval()
    x = torch.randn(2, 30, 16)
    t = 12
    changed = x.clone()
    changed[:, t] += torch.randn(2, 16)
    with torch.no_grad():
        before, after = conv(x), conv(changed)
    torch.testing.assert_close(before[:, :t], after[:, :t], atol=0, rtol=0)
    assert (before[:, t] - after[:, t]).abs().max() > 1e-4

    symmetric = ConvModule(d_model=16, kernel_size=7, causal=False).eval()
    with torch.no_grad():
        assert (symmetric(x)[:, t - 1] - symmetric(changed)[:, t - 1]).abs().max() > 1e-4


def test_attention_positional_none_is_permutation_equivariant() -> None:
    torch.manual_seed(4)
    x = torch.randn(2, 10, 16)
    perm = torch.randperm(10)
    full = torch.ones(1, 10, 10, dtype=torch.bool)

    plain = MultiHeadSelfAttention(16, 2, dropout=0.0, positional="none").eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x, full)[:, perm], plain(x[:, perm], full), atol=1e-5, rtol=0)

    rotary = MultiHeadSelfAttention(16, 2, dropout=0.0, positional="relative").eval()
    with torch.no_grad():
        assert not torch.allclose(rotary(x, full)[:, perm], rotary(x[:, perm], full), atol=1e-3)


def test_rotary_attention_depends_on_offsets_only() -> None:
    # Shifting every absolute position (as a streaming cache does) leaves outputs unchanged.
    torch.manual_seed(5)
    attn = MultiHeadSelfAttention(16, 2, positional="relative").eval()
    x = torch.randn(1, 8, 16)
    with torch.no_grad():
        base = attn(x, positions=torch.arange(8))
        shifted = attn(x, positions=torch.arange(8) + 37)
    torch.testing.assert_close(base, shifted, atol=1e-4, rtol=0)


# --- CTC model and configuration ------------------------------------------------------


def test_ctc_overfits_tiny_batch() -> None:
    torch.manual_seed(6)
    model = build_asr_model(TINY, vocab_size=8)
    feats = torch.randn(2, 80, FEAT_DIM)
    lens = torch.tensor([80, 64])
    tokens = [[1, 2, 3, 4, 5], [6, 7, 1]]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        log_probs, out_lens, hidden = model(feats, lens)
        loss = model.ctc_loss(log_probs, out_lens, tokens)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert log_probs.shape == (2, 19, 8) and len(hidden) == TINY["num_layers"]
    assert losses[-1] < 0.5 * losses[0]


def test_ctc_loss_rejects_blank_token() -> None:
    model = build_asr_model(TINY, vocab_size=8)
    log_probs = torch.randn(1, 10, 8).log_softmax(-1)
    with pytest.raises(ValueError):
        model.ctc_loss(log_probs, torch.tensor([10]), [[0, 1]])


def test_encoder_config_rejects_unknown_key() -> None:
    with pytest.raises(ValueError, match="chunk_sise"):
        EncoderConfig.from_dict({"d_model": 64, "chunk_sise": 4})
    with pytest.raises(ValueError, match="chunk_sise"):
        build_asr_model({"chunk_sise": 4}, vocab_size=10)


def test_config_round_trip_rebuilds_identical_model() -> None:
    model = build_asr_model(dict(TINY, causal=True, chunk_size=4, left_chunks=2), vocab_size=12).eval()
    config = model.config
    assert EncoderConfig.from_dict(config["encoder"]) == model.encoder.config
    rebuilt = AsrModel.from_config(config).eval()
    rebuilt.load_state_dict(model.state_dict())  # strict: same parameter names and shapes
    assert rebuilt.encoder.streaming and not tiny_encoder().streaming
    feats, lens = torch.randn(1, 50, FEAT_DIM), torch.tensor([50])
    with torch.no_grad():
        torch.testing.assert_close(model(feats, lens)[0], rebuilt(feats, lens)[0])
    assert model.num_parameters() == rebuilt.num_parameters() > 0
