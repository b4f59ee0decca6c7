"""The decoding methods one model can be decoded with, by name.

A method name is ``<head>-<search>`` with an optional ``-streaming`` suffix:

========================  ======  ==========================================  ===========
name                      head    search                                      graph
========================  ======  ==========================================  ===========
ctc-greedy                CTC     arg-max per frame, repeats and blanks out   -
ctc-1best                 CTC     Viterbi best path over the CTC topology     ctc_topo.pt
ctc-hlg                   CTC     best path over HLG (lexicon + word n-gram)  HLG.pt
rnnt-greedy               RNN-T   arg-max per frame                           -
rnnt-modified-beam        RNN-T   modified beam search (<= 1 token/frame)     -
rnnt-fast-beam            RNN-T   k2 fast_beam_search over a trivial graph    -
========================  ======  ==========================================  ===========

Without the suffix the encoder runs over whole utterances (a streaming student with its
chunk mask: "simulated" streaming). With ``-streaming`` the encoder runs chunk by chunk with
attention/convolution caches (:class:`streamkd.model.StreamingEncoder`) and the search
consumes each chunk as it is produced; only causal, chunked students can do that.

``ctc-greedy`` needs torch alone; every other method needs k2 (:mod:`streamkd.k2_support`).
Over the plain CTC topology the Viterbi best path is the frame-wise arg-max, so
``ctc-greedy`` and ``ctc-1best`` give the same hypotheses (up to ties and k2's pruning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, List, Optional

if TYPE_CHECKING:  # kept import-free: the CLI reads the method names at start-up
    from streamkd.model.heads import HeadConfig

STREAMING_SUFFIX = "-streaming"


@dataclass(frozen=True)
class DecodingMethod:
    name: str
    head: str  # "ctc" or "transducer"
    search: str  # "1best", "hlg", "greedy", "modified-beam", "fast-beam"
    streaming: bool

    @property
    def graph(self) -> Optional[str]:
        """Which graph file the method reads: "ctc_topo", "hlg" or None."""
        return _GRAPHS.get((self.head, self.search))

    @property
    def needs_k2(self) -> bool:
        return (self.head, self.search) != ("ctc", "greedy")

    def supported_by(self, head: "HeadConfig") -> bool:
        return head.has_ctc if self.head == "ctc" else head.has_transducer


_BASE = {
    "ctc-greedy": ("ctc", "greedy"),
    "ctc-1best": ("ctc", "1best"),
    "ctc-hlg": ("ctc", "hlg"),
    "rnnt-greedy": ("transducer", "greedy"),
    "rnnt-modified-beam": ("transducer", "modified-beam"),
    "rnnt-fast-beam": ("transducer", "fast-beam"),
}

_GRAPHS = {("ctc", "1best"): "ctc_topo", ("ctc", "hlg"): "hlg"}

METHOD_NAMES: List[str] = [name + suffix for suffix in ("", STREAMING_SUFFIX) for name in _BASE]


def parse_method(name: str) -> DecodingMethod:
    streaming = name.endswith(STREAMING_SUFFIX)
    base = name[: -len(STREAMING_SUFFIX)] if streaming else name
    if base not in _BASE:
        raise ValueError(f"unknown decoding method {name!r}; valid methods: {', '.join(METHOD_NAMES)}")
    head, search = _BASE[base]
    return DecodingMethod(name, head, search, streaming)


def methods_for(head: "HeadConfig", names: Iterable[str], streaming_model: bool) -> List[DecodingMethod]:
    """The methods of ``names`` that a model with ``head`` can run (streaming ones only if it streams)."""
    methods = [parse_method(n) for n in names]
    return [m for m in methods if m.supported_by(head) and (streaming_model or not m.streaming)]


def check_method(method: DecodingMethod, head: "HeadConfig", streaming_model: bool, source: str) -> None:
    """Raise ValueError, naming ``source``, when the model cannot be decoded with ``method``."""
    if not method.supported_by(head):
        raise ValueError(
            f"{source}: decoding method {method.name!r} needs a {method.head} head; the model's head is {head.type!r}"
        )
    if method.streaming and not streaming_model:
        raise ValueError(
            f"{source}: decoding method {method.name!r} streams chunk by chunk; the model is not a causal, chunked student"
        )


__all__ = ["STREAMING_SUFFIX", "DecodingMethod", "METHOD_NAMES", "parse_method", "methods_for", "check_method"]
