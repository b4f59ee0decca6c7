"""Stateless transducer head: pruned RNN-T loss, KD lattice access, and the three searches."""

import math
from typing import List

import pytest
import torch

from streamkd.decode.transducer import FastBeamSearch, GreedySearch, ModifiedBeamSearch
from streamkd.model import IMPOSSIBLE_LOG_PROB, HeadConfig, TransducerHead, build_asr_model

FEAT_DIM = 20
TINY = dict(feat_dim=FEAT_DIM, d_model=16, num_layers=1, num_heads=2, ff_dim=32, conv_kernel=3, dropout=0.0)
VOCAB = 7


def tiny_head(prune_range: int = 3, context_size: int = 2, seed: int = 0) -> TransducerHead:
    torch.manual_seed(seed)
    config = HeadConfig(
        type="transducer", decoder_dim=8, joiner_dim=8, context_size=context_size, prune_range=prune_range
    )
    return TransducerHead(16, VOCAB, config)


def reference_rnnt_loss(head: TransducerHead, encoder_out: torch.Tensor, tokens: List[int]) -> torch.Tensor:
    """-log P(tokens | frames) by the textbook forward recursion over the T x (U+1) lattice."""
    symbols = torch.tensor([tokens or [0]])
    decoder_out = head.predictor_outputs(symbols)[0, : len(tokens) + 1]
    log_probs = head.joiner(encoder_out.unsqueeze(1), decoder_out.unsqueeze(0)).log_softmax(-1)
    frames, rows = encoder_out.size(0), len(tokens) + 1
    alpha = [[-math.inf] * rows for _ in range(frames)]
    alpha[0][0] = 0.0
    for t in range(frames):
        for u in range(rows):
            if t == 0 and u == 0:
                continue
            terms = []
            if t > 0:
                terms.append(alpha[t - 1][u] + log_probs[t - 1, u, 0])
            if u > 0:
                terms.append(alpha[t][u - 1] + log_probs[t, u - 1, tokens[u - 1]])
            alpha[t][u] = torch.logsumexp(torch.stack([torch.as_tensor(x) for x in terms]), 0)
    return -(alpha[frames - 1][rows - 1] + log_probs[frames - 1, rows - 1, 0])


# --- loss -------------------------------------------------------------------------------


def test_unpruned_k2_loss_matches_forward_recursion() -> None:
    head = tiny_head()
    encoder_out, lens = torch.randn(2, 9, 16), torch.tensor([9, 6])
    targets = [[1, 2, 3, 4], [5, 6]]
    expected = sum(reference_rnnt_loss(head, encoder_out[b, : lens[b]], targets[b]) for b in range(2))
    torch.testing.assert_close(head.full_loss(encoder_out, lens, targets), expected, atol=1e-3, rtol=1e-5)


def test_pruned_loss_is_exact_when_the_band_covers_the_lattice() -> None:
    head = tiny_head(prune_range=5)  # 4 symbols: 5 rows, nothing pruned
    encoder_out, lens = torch.randn(2, 9, 16), torch.tensor([9, 6])
    targets = [[1, 2, 3, 4], [5, 6]]
    loss = head.loss(encoder_out, lens, targets)
    torch.testing.assert_close(loss.pruned, head.full_loss(encoder_out, lens, targets), atol=1e-3, rtol=1e-5)


def token_reading_head(scale: float, **options) -> TransducerHead:
    """A head whose joiner logits are ``scale`` times the (VOCAB-dim) encoder frame, the predictor ignored."""
    config = HeadConfig(type="transducer", decoder_dim=4, joiner_dim=VOCAB, **options)
    head = TransducerHead(VOCAB, VOCAB, config)
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
        head.joiner.encoder_proj.weight.copy_(torch.eye(VOCAB))
        head.joiner.output.weight.copy_(torch.eye(VOCAB) * scale)
    return head


def peaked_head(prune_range: int) -> TransducerHead:
    """Joiner and simple joiner both read the token off the encoder frame (no training needed).

    With frames that spell the transcript, the lattice's probability mass lies near one
    alignment, as in a trained model, so a narrow band keeps almost all of it.
    """
    head = token_reading_head(4.0, prune_range=prune_range)
    with torch.no_grad():
        head.simple_am_proj.weight.copy_(torch.eye(VOCAB) * 4 / 3)
    return head


def test_pruned_loss_is_close_to_the_full_loss_when_the_alignment_is_sharp() -> None:
    frames = [0, 1, 0, 0, 2, 0, 3, 0, 0, 4, 0, 5, 0, 0, 6, 0]
    targets = [[1, 2, 3, 4, 5, 6]]
    encoder_out = torch.zeros(1, len(frames), VOCAB)
    for t, token in enumerate(frames):
        encoder_out[0, t, token] = 3.0
    lens = torch.tensor([len(frames)])
    with torch.no_grad():
        full = peaked_head(3).full_loss(encoder_out, lens, targets)
        pruned = {r: peaked_head(r).loss(encoder_out, lens, targets).pruned for r in (2, 3, 4, 7)}
    # Pruning only removes paths: an upper bound that tightens as the band widens ...
    assert pruned[2] >= pruned[3] >= pruned[4] >= full - 1e-4
    # ... close to the full loss already for a band of 3 of the 7 rows, exact for all 7.
    assert float(pruned[3] - full) < 0.01 * float(full)
    torch.testing.assert_close(pruned[7], full, atol=1e-4, rtol=0)


def test_loss_accepts_empty_transcripts_and_rejects_blank_tokens() -> None:
    head = tiny_head()
    encoder_out, lens = torch.randn(2, 5, 16), torch.tensor([5, 4])
    loss = head.loss(encoder_out, lens, [[], []])
    assert torch.isfinite(loss.simple) and torch.isfinite(loss.pruned)
    expected = sum(reference_rnnt_loss(head, encoder_out[b, : lens[b]], []) for b in range(2))
    torch.testing.assert_close(loss.pruned, expected, atol=1e-3, rtol=1e-5)
    with pytest.raises(ValueError, match="0 is the blank"):
        head.loss(encoder_out, lens, [[0, 1], [2]])


def test_utterance_with_more_tokens_than_frames_is_left_out() -> None:
    head = tiny_head(prune_range=2)
    encoder_out, lens = torch.randn(2, 8, 16), torch.tensor([8, 3])
    targets = [[1, 2], [1, 2, 3, 4, 5]]
    loss = head.loss(encoder_out, lens, targets)
    alone = head.loss(encoder_out[:1], lens[:1], targets[:1])
    torch.testing.assert_close(loss.pruned, alone.pruned)
    only_infeasible = head.loss(encoder_out[1:], lens[1:], targets[1:])
    assert float(only_infeasible.pruned) == 0.0


def test_model_with_both_heads_trains_both() -> None:
    model = build_asr_model(
        TINY, VOCAB, {"type": "transducer+ctc", "decoder_dim": 8, "joiner_dim": 8, "ctc_scale": 0.5}
    )
    feats, lens = torch.randn(2, 40, FEAT_DIM), torch.tensor([40, 33])
    log_probs, enc_lens, hidden = model(feats, lens)
    assert log_probs is not None and log_probs.shape[:2] == hidden[-1].shape[:2]
    loss, parts = model.asr_loss(log_probs, enc_lens, hidden, [[1, 2], [3]])
    assert set(parts) == {"ctc", "rnnt_simple", "rnnt_pruned"}
    expected = 0.5 * parts["rnnt_simple"] + parts["rnnt_pruned"] + 0.5 * parts["ctc"]
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert model.ctc.proj.weight.grad.abs().sum() > 0
    assert model.transducer.joiner.output.weight.grad.abs().sum() > 0

    transducer_only = build_asr_model(TINY, VOCAB, {"type": "transducer"})
    assert transducer_only.ctc is None and transducer_only(feats, lens)[0] is None


# --- lattice access for token-level KD ---------------------------------------------------


def test_collapsed_distribution_on_the_pruned_region() -> None:
    head = tiny_head(prune_range=3)
    encoder_out, lens = torch.randn(2, 9, 16), torch.tensor([9, 6])
    targets = [[1, 2, 3, 4], [5, 6]]
    ranges = head.prune_ranges(encoder_out, lens, targets)
    assert ranges.shape == (2, 9, 3)
    log_probs, valid = head.collapsed_log_probs(encoder_out, lens, targets, ranges)
    assert log_probs.shape == (2, 9, 3, 3) and valid.shape == (2, 9, 3)
    torch.testing.assert_close(log_probs.exp().sum(-1)[valid], torch.ones(int(valid.sum())), atol=1e-4, rtol=0)
    assert not valid[1, 6:].any()  # padded frames of the shorter utterance

    full, full_valid = head.collapsed_log_probs(encoder_out, lens, targets)  # whole lattice
    assert full.shape == (2, 9, 5, 3)
    assert int(full_valid.sum()) == 9 * 5 + 6 * 3
    # On the last row there is no next token: "correct" is impossible.
    assert torch.all(full[0, :, 4, 1] == IMPOSSIBLE_LOG_PROB)
    # Blank and the next token agree with the joiner's own distribution.
    decoder_out = head.predictor_outputs(torch.tensor([targets[0]]))
    joint = head.joiner(encoder_out[:1].unsqueeze(2), decoder_out.unsqueeze(1)).log_softmax(-1)
    torch.testing.assert_close(full[0, :, :4, 0], joint[0, :, :4, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(full[0, 2, 1, 1], joint[0, 2, 1, targets[0][1]], atol=1e-5, rtol=0)


# --- searches ----------------------------------------------------------------------------


def oracle_head(context_size: int = 2) -> TransducerHead:
    """A head whose output depends only on the encoder frame: frame = one-hot(token) * 10.

    The answer is then unambiguous: every search must emit the frames' non-blank tokens.
    """
    head = token_reading_head(10.0, context_size=context_size)
    with torch.no_grad():
        # Blank wins on an all-zero frame.
        head.joiner.output.bias[0] = 1.0
    return head.eval()


def frames_for(tokens_per_frame: List[int], length: int) -> torch.Tensor:
    frames = torch.zeros(length, VOCAB)
    for t, token in enumerate(tokens_per_frame):
        if token:
            frames[t, token] = 10.0
    return frames


def searches(head: TransducerHead, batch: int):
    return {
        "greedy": GreedySearch(head, batch),
        "modified-beam": ModifiedBeamSearch(head, batch, beam=4),
        "fast-beam": FastBeamSearch(head, batch),
    }


@pytest.mark.parametrize("context_size", [1, 2])
def test_all_searches_agree_on_an_unambiguous_model(context_size: int) -> None:
    head = oracle_head(context_size)
    # A transducer ends an utterance with a blank on its last frame.
    utterances = [[0, 3, 0, 3, 5, 0, 2, 0], [4, 4, 0, 1, 0], [0, 0, 0]]
    length = max(len(u) for u in utterances)
    encoder_out = torch.stack([frames_for(u, length) for u in utterances])
    lens = torch.tensor([len(u) for u in utterances])
    expected = [[3, 3, 5, 2], [4, 4, 1], []]
    for name, search in searches(head, 3).items():
        search.advance(encoder_out, lens)
        assert search.finish() == expected, name


def test_searches_resume_across_chunks() -> None:
    head = oracle_head()
    tokens = [1, 0, 2, 2, 0, 3, 4, 0, 6, 0]
    encoder_out = frames_for(tokens, len(tokens)).unsqueeze(0)
    for name, search in searches(head, 1).items():
        for start in range(0, len(tokens), 4):
            piece = encoder_out[:, start : start + 4]
            search.advance(piece, torch.tensor([piece.size(1)]))
        assert search.finish() == [[1, 2, 2, 3, 4, 6]], name


def test_fast_beam_search_without_final_blank_keeps_the_earlier_tokens() -> None:
    # No path that ends with a blank survives the beam: the partial lattice is used, whose
    # last frame is its end (so the last frame's token is lost, not the whole hypothesis).
    search = FastBeamSearch(oracle_head(), 1)
    search.advance(frames_for([1, 2, 3], 3).unsqueeze(0), torch.tensor([3]))
    assert search.finish() == [[1, 2]]


def test_all_blank_output_gives_empty_hypotheses() -> None:
    head = oracle_head()
    encoder_out = torch.zeros(2, 6, VOCAB)
    for name, search in searches(head, 2).items():
        search.advance(encoder_out, torch.tensor([6, 2]))
        assert search.finish() == [[], []], name
    for name, search in searches(head, 1).items():  # no frames at all
        assert search.finish() == [[]], name


def exhaustive_sequence_log_probs(head: TransducerHead, encoder_out: torch.Tensor) -> dict:
    """log P(token sequence) with at most one token per frame, summed over every alignment.

    Each frame emits exactly one symbol (blank leaves the sequence as it is); the predictor and
    joiner are evaluated through the loss's path (predictor_outputs, joiner), not the search's.
    """

    def frame_log_probs(seq, t):
        decoder_out = head.predictor_outputs(torch.tensor([list(seq) or [0]]))[0, len(seq)]
        return head.joiner(encoder_out[t], decoder_out).log_softmax(-1)

    states = {(): 0.0}
    for t in range(encoder_out.size(0)):
        extended = {}
        for seq, score in states.items():
            log_probs = frame_log_probs(seq, t).tolist()
            for token, lp in enumerate(log_probs):
                new_seq = seq if token == 0 else seq + (token,)
                extended.setdefault(new_seq, []).append(score + lp)
        states = {
            seq: torch.logsumexp(torch.tensor(scores, dtype=torch.float64), 0).item()
            for seq, scores in extended.items()
        }
    return states


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_modified_beam_search_with_an_unlimited_beam_is_exhaustive_search(seed: int) -> None:
    head = tiny_head(seed=seed).eval()
    generator = torch.Generator().manual_seed(seed)
    encoder_out = 2.0 * torch.randn(4, 16, generator=generator)
    with torch.no_grad():
        exhaustive = exhaustive_sequence_log_probs(head, encoder_out)
    search = ModifiedBeamSearch(head, 1, beam=VOCAB**4)
    search.advance(encoder_out.unsqueeze(0), torch.tensor([4]))
    assert set(search.beams[0]) == set(exhaustive)
    for seq, score in exhaustive.items():
        assert search.beams[0][seq] == pytest.approx(score, abs=1e-4), seq
    assert search.finish() == [list(max(exhaustive, key=exhaustive.get))]
    # The probabilities of all sequences sum to one: nothing was lost or counted twice.
    assert torch.logsumexp(torch.tensor(list(exhaustive.values())), 0).item() == pytest.approx(0.0, abs=1e-4)
