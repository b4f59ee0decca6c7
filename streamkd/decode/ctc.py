"""CTC 1-best decoding with k2: the CTC topology intersected with the network output."""

from __future__ import annotations

from pathlib import Path
from typing import List

import k2
import torch


def build_ctc_topo(vocab_size: int) -> k2.Fsa:
    """The standard (non-modified) CTC topology over token ids 1..vocab_size-1, blank = 0."""
    return k2.arc_sort(k2.ctc_topo(max_token=vocab_size - 1, modified=False))


def save_graph(graph: k2.Fsa, path: Path) -> None:
    from streamkd.utils import atomic_path

    with atomic_path(path) as tmp:
        torch.save(graph.as_dict(), tmp)


def load_graph(path: Path) -> k2.Fsa:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"decoding graph not found: {path}")
    return k2.Fsa.from_dict(torch.load(path, map_location="cpu"))


def best_path_tokens(best_path: k2.Fsa) -> List[List[int]]:
    """Token ids along each best path, without blanks (0) and the final-arc label (-1)."""
    if isinstance(best_path.aux_labels, k2.RaggedTensor):
        labels = best_path.aux_labels.remove_axis(best_path.aux_labels.num_axes - 2)
    else:
        labels = k2.RaggedTensor(best_path.arcs.shape().remove_axis(1), best_path.aux_labels)
    return labels.remove_values_leq(0).tolist()


class CtcOneBestDecoder:
    """Viterbi 1-best path through ``graph`` composed with the CTC posteriors."""

    def __init__(self, graph: k2.Fsa, search_beam: float = 20.0, output_beam: float = 8.0):
        self.graph = graph
        self.search_beam = search_beam
        self.output_beam = output_beam

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> List[List[int]]:
        """log_probs: (B, T, V) CTC log-posteriors; lengths: (B,) valid frames per utterance."""
        batch_size = log_probs.size(0)
        segments = torch.stack(
            [torch.arange(batch_size, dtype=torch.int32), torch.zeros(batch_size, dtype=torch.int32), lengths.to(torch.int32).cpu()],
            dim=1,
        )
        # k2 wants segments sorted by decreasing length; remember the order to undo it.
        order = torch.argsort(segments[:, 2], descending=True)
        dense = k2.DenseFsaVec(log_probs, segments[order])
        lattice = k2.intersect_dense_pruned(
            self.graph.to(log_probs.device),
            dense,
            search_beam=self.search_beam,
            output_beam=self.output_beam,
            min_active_states=30,
            max_active_states=10000,
        )
        best = k2.shortest_path(lattice, use_double_scores=True)
        tokens_sorted = best_path_tokens(best)
        tokens: List[List[int]] = [[] for _ in range(batch_size)]
        for position, utt in enumerate(order.tolist()):
            tokens[utt] = tokens_sorted[position]
        return tokens
