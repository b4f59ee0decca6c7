"""CTC decoding with k2: a graph (the CTC topology, or HLG) intersected with the network output.

Over the CTC topology the best path spells BPE token ids; over HLG it spells word ids. The
whole-utterance decoder uses ``k2.intersect_dense_pruned``; the streaming one feeds chunks of
posteriors to ``k2.OnlineDenseIntersecter``, which keeps each stream's search state between
chunks and gives the same best path at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import k2
import torch

# Advisory limits on active states per frame, as in k2's and icefall's examples.
MIN_ACTIVE_STATES = 30
MAX_ACTIVE_STATES = 10000


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
    try:
        return k2.Fsa.from_dict(torch.load(path, map_location="cpu", weights_only=False))
    except Exception as e:  # torch and k2 raise several unrelated types for foreign files
        raise ValueError(f"{path} is not a saved k2 graph: {e}") from e


def best_path_tokens(best_path: k2.Fsa) -> List[List[int]]:
    """Output labels along each best path, without epsilons/blanks (0) and the final -1."""
    if getattr(best_path, "aux_labels", None) is None:
        labels = k2.RaggedTensor(best_path.arcs.shape().remove_axis(1), best_path.labels.contiguous())
        return labels.remove_values_leq(0).tolist()
    return k2.get_aux_labels(best_path)


def _segments(lengths: torch.Tensor) -> torch.Tensor:
    """k2 supervision segments (index, start, frames) for every row, shape (B, 3), int32."""
    batch_size = lengths.numel()
    return torch.stack(
        [
            torch.arange(batch_size, dtype=torch.int32),
            torch.zeros(batch_size, dtype=torch.int32),
            lengths.to(torch.int32).cpu(),
        ],
        dim=1,
    )


class CtcOneBestDecoder:
    """Viterbi 1-best path through ``graph`` composed with the CTC posteriors."""

    def __init__(self, graph: k2.Fsa, search_beam: float = 20.0, output_beam: float = 8.0):
        self.graph = graph
        self.search_beam = search_beam
        self.output_beam = output_beam

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> List[List[int]]:
        """log_probs: (B, T, V) CTC log-posteriors; lengths: (B,) valid frames per utterance."""
        batch_size = log_probs.size(0)
        segments = _segments(lengths)
        # k2 wants segments sorted by decreasing length; remember the order to undo it.
        order = torch.argsort(segments[:, 2], descending=True)
        dense = k2.DenseFsaVec(log_probs, segments[order])
        lattice = k2.intersect_dense_pruned(
            self.graph.to(log_probs.device),
            dense,
            search_beam=self.search_beam,
            output_beam=self.output_beam,
            min_active_states=MIN_ACTIVE_STATES,
            max_active_states=MAX_ACTIVE_STATES,
        )
        best = k2.shortest_path(lattice, use_double_scores=True)
        tokens_sorted = best_path_tokens(best)
        tokens: List[List[int]] = [[] for _ in range(batch_size)]
        for position, utt in enumerate(order.tolist()):
            tokens[utt] = tokens_sorted[position]
        return tokens


class StreamingCtcSearch:
    """Chunk-by-chunk CTC decoding over ``graph`` with ``k2.OnlineDenseIntersecter``.

    :meth:`advance` takes each chunk's posteriors; :meth:`finish` returns the best path of
    every stream (its partial result is available the same way after any chunk).
    """

    def __init__(self, graph: k2.Fsa, batch_size: int, search_beam: float = 20.0, output_beam: float = 8.0):
        self.batch_size = batch_size
        # The intersecter wants an FsaVec; callers decoding many batches can pass one.
        graph_vec = graph if graph.arcs.num_axes() == 3 else k2.Fsa.from_fsas([graph])
        self.intersecter = k2.OnlineDenseIntersecter(
            decoding_graph=graph_vec,
            num_streams=batch_size,
            search_beam=search_beam,
            output_beam=output_beam,
            min_active_states=MIN_ACTIVE_STATES,
            max_active_states=MAX_ACTIVE_STATES,
        )
        self.states: List[Optional[object]] = [None] * batch_size
        self.results: List[List[int]] = [[] for _ in range(batch_size)]

    def advance(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> None:
        """log_probs: (B, T, V) posteriors of the new frames; lengths: (B,) how many are real."""
        if log_probs.size(0) != self.batch_size:
            raise ValueError(f"expected {self.batch_size} streams, got {log_probs.size(0)}")
        active = lengths > 0
        if not bool(active.any()) or log_probs.size(1) == 0:
            return
        # The intersecter always steps all of its streams: streams without new frames get a
        # throw-away one-frame input and a fresh state, and keep their own state untouched.
        frames = torch.where(active, lengths, torch.ones_like(lengths)).cpu()
        inputs = torch.where(active.view(-1, 1, 1).to(log_probs.device), log_probs, torch.zeros_like(log_probs))
        order = torch.argsort(frames, descending=True)
        dense = k2.DenseFsaVec(inputs[order.to(inputs.device)], _segments(frames[order]))
        states = [self.states[i] if bool(active[i]) else None for i in order.tolist()]
        lattice, new_states = self.intersecter.decode(dense, states)
        paths = best_path_tokens(k2.shortest_path(lattice, use_double_scores=True))
        for position, stream in enumerate(order.tolist()):
            if bool(active[stream]):
                self.states[stream] = new_states[position]
                self.results[stream] = paths[position]

    def finish(self) -> List[List[int]]:
        return [list(r) for r in self.results]


class PrefixCtcSearch:
    """Chunk-by-chunk decoding over an HLG graph: after each chunk, the best path over every frame
    of the stream so far.

    k2's ``OnlineDenseIntersecter`` keeps up with the whole-utterance search over the plain CTC
    topology, but over HLG (a word LM's weights and final states) its result drifts with small
    chunks (a 2-frame chunk turned "OSCAR MIKE INDIA QUEBEC" into "CHARLIE VICTOR"). Re-searching
    the prefix costs time quadratic in the utterance's chunks and gives exactly the
    whole-utterance best path at the end, and the best path of the audio so far as the partial.
    """

    def __init__(self, graph: k2.Fsa, batch_size: int, search_beam: float = 20.0, output_beam: float = 8.0):
        self.decoder = CtcOneBestDecoder(graph, search_beam, output_beam)
        self.posteriors: List[List[torch.Tensor]] = [[] for _ in range(batch_size)]
        self.results: List[List[int]] = [[] for _ in range(batch_size)]

    def advance(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> None:
        """log_probs: (B, T, V) posteriors of the new frames; lengths: (B,) how many are real."""
        if log_probs.size(0) != len(self.posteriors):
            raise ValueError(f"expected {len(self.posteriors)} streams, got {log_probs.size(0)}")
        active = [b for b, n in enumerate(lengths.tolist()) if n > 0]
        for b in active:
            self.posteriors[b].append(log_probs[b, : int(lengths[b])])
        if not active:
            return
        prefixes = [torch.cat(self.posteriors[b]) for b in active]
        padded = torch.nn.utils.rnn.pad_sequence(prefixes, batch_first=True)
        found = self.decoder(padded, torch.tensor([p.size(0) for p in prefixes]))
        for b, result in zip(active, found):
            self.results[b] = result

    def finish(self) -> List[List[int]]:
        return [list(r) for r in self.results]


__all__ = [
    "build_ctc_topo",
    "save_graph",
    "load_graph",
    "best_path_tokens",
    "CtcOneBestDecoder",
    "StreamingCtcSearch",
    "PrefixCtcSearch",
]
