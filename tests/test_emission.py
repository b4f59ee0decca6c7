"""Reference alignments (k2) and emission delays, on posteriors whose timing is known by construction."""

import itertools
import math

import pytest
import torch

from streamkd.decode.align import (
    FRAME_MS,
    _rnnt_lattice,
    ctc_forced_alignment,
    frame_time_ms,
    transducer_forced_alignment,
)
from streamkd.decode.ctc import StreamingCtcSearch, build_ctc_topo
from streamkd.decode.emission import chunk_ready_ms, offline_pieces, stable_emission_times, track_emissions
from streamkd.decode.transducer import GreedySearch
from streamkd.decode.word_delay import ReferenceWords, summarise_delays, word_times
from streamkd.model.heads import HeadConfig
from streamkd.model.transducer import TransducerHead

VOCAB = 6
SPIKE, FLOOR = math.log(0.97), math.log(0.03 / (VOCAB - 1))


def spiky_log_probs(num_frames: int, spikes: dict) -> torch.Tensor:
    """(T, V) CTC log-posteriors: blank everywhere except ``spikes`` {frame: token}."""
    log_probs = torch.full((num_frames, VOCAB), FLOOR)
    for t in range(num_frames):
        log_probs[t, spikes.get(t, 0)] = SPIKE
    return log_probs


def collapse(path):
    out, prev = [], 0
    for label in path:
        if label != 0 and label != prev:
            out.append(label)
        prev = label
    return out


def token_start_frames(path):
    return [t for t, label in enumerate(path) if label != 0 and (t == 0 or path[t - 1] != label)]


def brute_force_ctc(log_probs: torch.Tensor, reference):
    """Best CTC path of ``reference`` by enumerating every label sequence of T frames."""
    best = None
    for path in itertools.product(range(VOCAB), repeat=log_probs.size(0)):
        if collapse(path) != list(reference):
            continue
        score = float(sum(log_probs[t, label] for t, label in enumerate(path)))
        if best is None or score > best[0]:
            best = (score, token_start_frames(path))
    return best


def test_ctc_forced_alignment_matches_brute_force_viterbi():
    torch.manual_seed(3)
    cases = [([2, 4], 5), ([3, 3], 5), ([1, 5, 2], 6), ([4], 4)]
    for reference, frames in cases:
        log_probs = torch.randn(frames, VOCAB).log_softmax(-1)
        (alignment,) = ctc_forced_alignment(log_probs.unsqueeze(0), torch.tensor([frames]), [reference])
        score, starts = brute_force_ctc(log_probs, reference)
        assert alignment.tokens == reference
        assert alignment.frames == starts, (reference, frames)
        assert alignment.score == pytest.approx(score, abs=1e-4)


def test_ctc_forced_alignment_in_a_batch_keeps_each_utterance_and_flags_the_impossible():
    short = spiky_log_probs(4, {1: 2})
    long = spiky_log_probs(9, {2: 3, 5: 1, 7: 3})
    padded = torch.stack([short.new_full((9, VOCAB), FLOOR).index_copy(0, torch.arange(4), short), long])
    # A repeated token needs a blank in between: 3 frames cannot hold [2, 2, 2] (5 frames needed).
    first, second = ctc_forced_alignment(padded, torch.tensor([4, 9]), [[2], [3, 1, 3]])
    assert first.frames == [1] and second.frames == [2, 5, 7]
    assert second.times_ms == [3 * FRAME_MS, 6 * FRAME_MS, 8 * FRAME_MS]
    (impossible,) = ctc_forced_alignment(spiky_log_probs(3, {}).unsqueeze(0), torch.tensor([3]), [[2, 2, 2]])
    assert impossible is None


def tiny_transducer(seed: int) -> TransducerHead:
    torch.manual_seed(seed)
    return TransducerHead(
        encoder_dim=4, vocab_size=4, config=HeadConfig(type="transducer", decoder_dim=4, joiner_dim=5, context_size=2)
    ).eval()


def brute_force_rnnt(head: TransducerHead, encoder_out: torch.Tensor, reference):
    """Best regular RNN-T path: every way to place U tokens on T frames (several per frame allowed)."""
    num_frames, num_tokens = encoder_out.size(0), len(reference)
    decoder = head.predictor_outputs(torch.tensor([reference]))[0]  # (U+1, D)
    log_probs = head.joiner(encoder_out.unsqueeze(1), decoder.unsqueeze(0)).log_softmax(-1)  # (T, U+1, V)
    best = None
    for frames in itertools.combinations_with_replacement(range(num_frames), num_tokens):
        score, u = 0.0, 0
        for t in range(num_frames):
            while u < num_tokens and frames[u] == t:
                score += float(log_probs[t, u, reference[u]])
                u += 1
            score += float(log_probs[t, u, 0])
        if best is None or score > best[0]:
            best = (score, list(frames))
    return best


@torch.no_grad()
def test_transducer_alignment_matches_brute_force_viterbi():
    for seed, (reference, frames) in enumerate([([1, 3], 3), ([2, 2, 1], 4), ([3], 5), ([1, 2, 3, 1], 3)]):
        head = tiny_transducer(seed)
        encoder_out = torch.randn(1, frames, 4) * 2
        (alignment,) = transducer_forced_alignment(head, encoder_out, torch.tensor([frames]), [reference])
        score, best_frames = brute_force_rnnt(head, encoder_out[0], reference)
        assert alignment.frames == best_frames
        assert alignment.score == pytest.approx(score, abs=1e-4)


def test_rnnt_lattice_has_every_path_once():
    # Regular RNN-T: C(T + U - 1, U) paths (U tokens placed on T frames, any number per frame).
    torch.manual_seed(0)
    px, py = torch.zeros(2, 3), torch.zeros(3, 3)
    lattice = _rnnt_lattice(px, py, [1, 2])
    import k2

    num_paths = float(k2.create_fsa_vec([lattice]).get_tot_scores(use_double_scores=True, log_semiring=True).exp())
    assert num_paths == pytest.approx(math.comb(3 + 2 - 1, 2))


def _ctc_search(batch_size: int) -> StreamingCtcSearch:
    return StreamingCtcSearch(build_ctc_topo(VOCAB), batch_size)


def frame_by_frame(log_probs: torch.Tensor, lengths: torch.Tensor):
    """Pieces of one encoder frame each, at the end of the frame's own span."""
    for t in range(log_probs.size(1)):
        yield log_probs[:, t : t + 1], (lengths > t).to(lengths.dtype), [frame_time_ms(t)] * log_probs.size(0)


def one_word_per_token(tokens, times):
    return [[f"w{token}", time, time] for token, time in zip(tokens, times)]


@pytest.mark.parametrize("shift", [0, 1, 3])
def test_spikes_shifted_by_k_frames_are_emitted_exactly_k_frames_late(shift):
    reference, spikes = [2, 4, 4, 1], {1: 2, 4: 4, 6: 4, 9: 1}
    frames = 12
    ref_log_probs = spiky_log_probs(frames, spikes)
    (alignment,) = ctc_forced_alignment(ref_log_probs.unsqueeze(0), torch.tensor([frames]), [reference])
    assert alignment.frames == [1, 4, 6, 9]

    shifted = spiky_log_probs(frames + shift, {t + shift: token for t, token in spikes.items()}).unsqueeze(0)
    lengths = torch.tensor([frames + shift])
    tokens, times = track_emissions(_ctc_search(1), frame_by_frame(shifted, lengths), 1)
    assert tokens == [reference]
    words = tuple((w, start, end) for w, start, end in one_word_per_token(reference, alignment.times_ms))
    row = {"id": "u", "words": one_word_per_token(tokens[0], times[0])}
    summary = summarise_delays([row], {"u": ReferenceWords("spikes", words)})
    assert (summary.mean_ms, summary.median_ms, summary.p90_ms) == (shift * FRAME_MS,) * 3
    assert summary.first_token_mean_ms == shift * FRAME_MS
    assert (summary.num_matched, summary.share_matched, summary.reference) == (4, 1.0, "spikes")


def test_chunked_emission_waits_for_the_last_fbank_window_of_the_chunk():
    reference, spikes, frames, chunk = [2, 4, 1], {1: 2, 4: 4, 6: 1}, 8, 4
    log_probs = spiky_log_probs(frames, spikes).unsqueeze(0)
    duration_ms = [10 * (4 * frames + 3)]  # enough audio for all 8 encoder frames
    pieces = [
        (log_probs[:, s : s + chunk], torch.tensor([chunk]), chunk_ready_ms(s + chunk, duration_ms))
        for s in range(0, frames, chunk)
    ]
    tokens, times = track_emissions(_ctc_search(1), pieces, 1)
    assert tokens == [reference]
    # Chunk 0 (encoder frames 0-3) reads input frames 0-18; lhotse's frame 18 (snip_edges=False)
    # ends at 18 * 10 + 17.5 ms. Chunk 1 reads up to input frame 34, whose window ends at
    # 357.5 ms, after the 350 ms of audio: it is ready when the audio ends.
    assert times[0] == [197.5, 350.0, 350.0]
    # The last chunk of a short utterance is ready when its audio ends.
    assert chunk_ready_ms(8, [300.0, 500.0]) == [300.0, 357.5]


def test_offline_model_emits_everything_when_the_utterance_ends():
    log_probs = spiky_log_probs(8, {1: 2, 4: 4}).unsqueeze(0).repeat(2, 1, 1)
    lengths = torch.tensor([8, 6])
    tokens, times = track_emissions(_ctc_search(2), offline_pieces(log_probs, lengths, [335.0, 250.0]), 2)
    assert tokens == [[2, 4], [2, 4]]
    assert times == [[335.0, 335.0], [250.0, 250.0]]


def test_emission_counts_revisions_of_the_best_hypothesis():
    snapshots = [(40.0, [3]), (80.0, [2]), (120.0, [2, 5]), (160.0, [2, 5, 1]), (200.0, [2, 5, 1])]
    assert stable_emission_times(snapshots, [2, 5, 1]) == [80.0, 120.0, 160.0]
    # A token shown, withdrawn and shown again is emitted when it comes back for good.
    assert stable_emission_times([(40.0, [2, 5]), (80.0, [2]), (120.0, [2, 5])], [2, 5]) == [40.0, 120.0]
    with pytest.raises(ValueError, match="final"):
        stable_emission_times([(40.0, [2])], [2, 5])


@torch.no_grad()
def test_greedy_transducer_emission_is_the_frame_it_emits_on():
    head = tiny_transducer(1)
    encoder_out = torch.randn(2, 7, 4) * 3
    lengths = torch.tensor([7, 5])
    tokens, times = track_emissions(GreedySearch(head, 2), frame_by_frame(encoder_out, lengths), 2)
    # Re-run greedily frame by frame and note the frame of each emitted token.
    for b in range(2):
        search, frames = GreedySearch(head, 1), []
        for t in range(int(lengths[b])):
            before = len(search.hyps[0])
            search.advance(encoder_out[b : b + 1, t : t + 1], torch.tensor([1]))
            frames += [t] * (len(search.hyps[0]) - before)
        assert tokens[b] == search.hyps[0]
        assert times[b] == [frame_time_ms(t) for t in frames]


def test_word_delays_only_for_correct_words_in_edit_distance_order():
    ref = ReferenceWords("synth", (("A", 0.0, 40.0), ("B", 40.0, 80.0), ("C", 80.0, 120.0), ("D", 120.0, 160.0)))
    # B substituted by X, Y inserted: A, C and D are matched.
    hyp = [["A", 30.0, 60.0], ["X", 90.0, 90.0], ["C", 150.0, 200.0], ["Y", 205.0, 210.0], ["D", 300.0, 400.0]]
    summary = summarise_delays([{"id": "u", "words": hyp}, {"id": "v", "words": []}], {"u": ref, "v": ref})
    assert summary.mean_ms == pytest.approx((20.0 + 80.0 + 240.0) / 3, abs=1e-3)  # last token minus word end
    assert summary.first_token_mean_ms == pytest.approx((30.0 + 70.0 + 180.0) / 3, abs=1e-3)  # first token minus start
    assert (summary.num_matched, summary.num_reference, summary.share_matched) == (3, 8, 0.375)
    assert summary.num_hypothesis == 5 and summary.num_utterances == 2
    with pytest.raises(ValueError, match="no reference word times for utterance 'w'"):
        summarise_delays([{"id": "w", "words": []}], {"u": ref})


def test_word_times_group_pieces_at_word_boundaries():
    words = word_times(["\u2581the", "\u2581ca", "t", "\u2581", "s"], [40.0, 120.0, 160.0, 200.0, 240.0])
    assert words == [
        {"word": "the", "start_ms": 40.0, "end_ms": 40.0},
        {"word": "cat", "start_ms": 120.0, "end_ms": 160.0},
        {"word": "s", "start_ms": 200.0, "end_ms": 240.0},
    ]


@torch.no_grad()
def test_streaming_pieces_arrive_with_their_last_fbank_window_and_match_the_masked_forward():
    from streamkd.data.loaders import Batch
    from streamkd.decode.emission import streaming_pieces
    from streamkd.model import ConformerEncoder, StreamingEncoder, subsampled_lengths

    torch.manual_seed(0)
    encoder = ConformerEncoder(
        feat_dim=20,
        d_model=16,
        num_layers=1,
        num_heads=2,
        ff_dim=32,
        conv_kernel=3,
        dropout=0.0,
        causal=True,
        chunk_size=3,
        left_chunks=-1,
    ).eval()
    lens = torch.tensor([83, 50])  # 20 and 11 encoder frames
    assert subsampled_lengths(lens).tolist() == [20, 11]
    batch = Batch(torch.randn(2, 83, 20), lens, ["", ""], ["a", "b"])
    pieces = list(streaming_pieces(StreamingEncoder(encoder), batch, [830.0, 500.0]))
    assert len(pieces) == 7  # ceil(20 / 3) chunks of 3 frames
    for k, (_, lengths, times) in enumerate(pieces):
        ready = (3 * (k + 1) * 4 + 2) * 10.0 + 17.5  # the end of the chunk's last fbank window
        assert times == [min(ready, 830.0), min(ready, 500.0)]
        assert lengths.tolist() == [min(3, max(0, n - 3 * k)) for n in (20, 11)]
    masked = encoder(batch.feats, lens).out
    streamed = torch.cat([frames for frames, _, _ in pieces], dim=1)
    assert torch.allclose(streamed[0, :20], masked[0, :20], atol=1e-5)
    assert torch.allclose(streamed[1, :11], masked[1, :11], atol=1e-5)
