import torch

from streamkd.decode.ctc import CtcOneBestDecoder, build_ctc_topo

VOCAB = 6


def posteriors(frames):
    """Log-posteriors that put (almost) all mass on the given token per frame."""
    logits = torch.full((len(frames), VOCAB), -8.0)
    for t, token in enumerate(frames):
        logits[t, token] = 4.0
    return logits.log_softmax(-1)


def batch(*utterances):
    max_len = max(len(u) for u in utterances)
    x = torch.full((len(utterances), max_len, VOCAB), -8.0).log_softmax(-1)
    for i, u in enumerate(utterances):
        x[i, : len(u)] = posteriors(u)
    return x, torch.tensor([len(u) for u in utterances])


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
