"""Greedy CTC decoding (torch alone): whole utterances and chunk by chunk give the same tokens."""

import torch

from streamkd.decode.ctc_greedy import CtcGreedySearch

from helpers import ctc_batch as batch


def test_greedy_fed_chunk_by_chunk_equals_whole_utterances():
    """A token whose frames straddle two chunks is emitted once; a blank between repeats keeps both."""
    log_probs, lengths = batch([3, 3, 3, 0, 3, 2, 2, 2, 5], [1, 1, 0, 1, 4], [2])
    whole = CtcGreedySearch(3)
    whole.advance(log_probs, lengths)
    assert whole.finish() == [[3, 3, 2, 5], [1, 1, 4], [2]]
    chunked = CtcGreedySearch(3)
    for start in range(0, log_probs.size(1), 2):
        piece = log_probs[:, start : start + 2]
        chunked.advance(piece, (lengths - start).clamp(min=0, max=piece.size(1)))
    assert chunked.finish() == whole.finish()


def test_greedy_ignores_padding_frames():
    log_probs, _ = batch([2, 0, 4, 4, 1])
    search = CtcGreedySearch(1)
    search.advance(log_probs, torch.tensor([3]))
    assert search.finish() == [[2, 4]]
