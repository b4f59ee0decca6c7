import torch

from streamkd.decode.ctc import CtcOneBestDecoder, build_ctc_topo
from streamkd.decode.ctc_greedy import CtcGreedySearch

from helpers import CTC_VOCAB as VOCAB
from helpers import ctc_batch as batch


def test_one_best_collapses_repeats_and_removes_blanks():
    decoder = CtcOneBestDecoder(build_ctc_topo(VOCAB))
    log_probs, lengths = batch([0, 3, 3, 0, 3, 2, 2, 0], [5, 5, 0, 1], [0, 0, 0])
    assert decoder(log_probs, lengths) == [[3, 3, 2], [5, 1], []]


def test_batch_order_is_preserved_when_lengths_are_unsorted():
    decoder = CtcOneBestDecoder(build_ctc_topo(VOCAB))
    log_probs, lengths = batch([4, 0], [1, 2, 0, 2, 3, 0, 5])
    assert decoder(log_probs, lengths) == [[4], [1, 2, 2, 3, 5]]


def test_padding_frames_are_ignored():
    decoder = CtcOneBestDecoder(build_ctc_topo(VOCAB))
    log_probs, _ = batch([2, 0, 4, 4, 1])
    assert decoder(log_probs, torch.tensor([3])) == [[2, 4]]


def argmax_and_collapse(log_probs: torch.Tensor) -> list:
    """Best path of the plain CTC topology, by hand: per-frame argmax, merge repeats, drop blanks."""
    best = log_probs.argmax(-1).tolist()
    return [token for t, token in enumerate(best) if token != 0 and (t == 0 or best[t - 1] != token)]


def test_one_best_equals_argmax_and_collapse_on_random_posteriors():
    """Any frame labelling is a path of the plain CTC topology, so Viterbi 1-best is the argmax path."""
    generator = torch.Generator().manual_seed(11)
    decoder = CtcOneBestDecoder(build_ctc_topo(VOCAB), search_beam=50.0, output_beam=50.0)
    lengths = torch.randint(1, 40, (16,), generator=generator)
    # Flat-ish posteriors: many frames where blank does not dominate and repeats occur.
    log_probs = (0.8 * torch.randn(16, int(lengths.max()), VOCAB, generator=generator)).log_softmax(-1)
    got = decoder(log_probs, lengths)
    expected = [argmax_and_collapse(log_probs[i, : int(n)]) for i, n in enumerate(lengths)]
    assert got == expected
    assert sum(len(h) for h in expected) > 100  # the case is not trivially empty


def test_greedy_equals_one_best_on_random_posteriors():
    """ctc-greedy (torch alone) and ctc-1best (k2 over the plain topology) find the same path."""
    generator = torch.Generator().manual_seed(5)
    lengths = torch.randint(1, 50, (12,), generator=generator)
    log_probs = (0.8 * torch.randn(12, int(lengths.max()), VOCAB, generator=generator)).log_softmax(-1)
    greedy = CtcGreedySearch(12)
    greedy.advance(log_probs, lengths)
    one_best = CtcOneBestDecoder(build_ctc_topo(VOCAB), search_beam=50.0, output_beam=50.0)
    assert greedy.finish() == one_best(log_probs, lengths)
    assert sum(len(h) for h in greedy.finish()) > 100
