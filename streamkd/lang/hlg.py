"""The HLG decoding graph for CTC: CTC topology (H) o lexicon (L) o word n-gram LM (G).

Construction follows the usual k2 recipe: L with disambiguation symbols is composed with G,
the result is determinized, the disambiguation symbols are turned into epsilons and removed,
and the CTC topology is composed on the left. The best path through HLG intersected with
the CTC posteriors spells word ids directly.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import k2
import torch

from streamkd.data.tokenizer import Tokenizer
from streamkd.lang.lexicon import Lexicon, build_lexicon
from streamkd.lang.ngram import read_arpa_vocabulary
from streamkd.utils import atomic_path, load_tagged_payload

log = logging.getLogger(__name__)

FORMAT = "streamkd-hlg-v1"


def lexicon_fst(lexicon: Lexicon) -> k2.Fsa:
    """L: token ids in, word ids out; every word starts and ends in state 0.

    State 0 also carries a ``#0:#0`` self-loop so that G's backoff arcs survive composition.
    """
    loop = 0
    next_state = 1
    arcs: List[Tuple[int, int, int, int]] = []  # src, dst, token, word
    for word_id, pron in enumerate(lexicon.prons, start=1):
        src = loop
        for i, token in enumerate(pron):
            last = i == len(pron) - 1
            dst = loop if last else next_state
            if not last:
                next_state += 1
            arcs.append((src, dst, token, word_id if i == 0 else 0))
            src = dst
    arcs.append((loop, loop, lexicon.token_disambig_start, lexicon.word_disambig_id))
    final = next_state  # k2 wants the final state last ...
    arcs.append((loop, final, -1, -1))
    arcs.sort(key=lambda arc: arc[0])  # ... and arcs grouped by source state
    lines = [f"{src} {dst} {token} {word} 0" for src, dst, token, word in arcs] + [str(final)]
    return k2.arc_sort(k2.Fsa.from_str("\n".join(lines), acceptor=False))


def grammar_fst(arpa_path: Path, lexicon: Lexicon, order: int) -> k2.Fsa:
    """G from an ARPA file, through kaldilm, with backoff arcs labelled ``#0``."""
    import kaldilm

    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "words.txt"
        table.write_text(lexicon.word_symbol_table())
        text = kaldilm.arpa2fst(
            str(arpa_path),
            disambig_symbol="#0",
            read_symbol_table=str(table),
            max_order=order,
        )
    return k2.arc_sort(k2.Fsa.from_openfst(text, acceptor=False))


def compose_hlg(lexicon: Lexicon, L: k2.Fsa, G: k2.Fsa) -> k2.Fsa:
    LG = k2.connect(k2.compose(L, G))
    LG = k2.connect(k2.determinize(LG))
    # Disambiguation symbols did their job (determinizability); make them epsilons.
    labels = LG.labels.clone()
    labels[labels >= lexicon.token_disambig_start] = 0
    LG.labels = labels
    LG.__dict__["_properties"] = None  # the label change invalidates cached properties
    LG.aux_labels.values[LG.aux_labels.values >= lexicon.word_disambig_id] = 0
    LG = k2.connect(k2.remove_epsilon(LG))
    LG.aux_labels = LG.aux_labels.remove_values_eq(0)
    LG = k2.arc_sort(LG)
    H = k2.ctc_topo(max_token=lexicon.vocab_size - 1, modified=False)
    HLG = k2.connect(k2.compose(H, LG, inner_labels="tokens"))
    return k2.arc_sort(HLG)


@dataclass
class WordGraph:
    """A decoding graph whose output labels are word ids, with the words it can output."""

    fsa: k2.Fsa
    words: List[str]  # word id i is words[i - 1]
    vocab_size: int  # BPE tokens the graph reads

    def to_text(self, word_ids: List[int]) -> str:
        try:
            return " ".join(self.words[i - 1] for i in word_ids)
        except IndexError as e:
            raise ValueError(f"word id out of range 1..{len(self.words)} in {word_ids}") from e

    def save(self, path: Path) -> None:
        payload = {"format": FORMAT, "fsa": self.fsa.as_dict(), "words": self.words, "vocab_size": self.vocab_size}
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: Path, expected_vocab_size: Optional[int] = None) -> "WordGraph":
        """The graph of ``path``; with ``expected_vocab_size``, refused unless built for that many tokens."""
        payload = load_tagged_payload(
            path, FORMAT, "HLG graph", f"an HLG graph written by 'streamkd compile-hlg' (format {FORMAT!r})"
        )
        graph = cls(k2.Fsa.from_dict(payload["fsa"]), list(payload["words"]), int(payload["vocab_size"]))
        if expected_vocab_size is not None and graph.vocab_size != expected_vocab_size:
            raise ValueError(
                f"{path}: HLG was built for {graph.vocab_size} BPE tokens, the model has {expected_vocab_size}"
            )
        return graph


def compile_hlg(bpe_model: Path, arpa_path: Path, order: int = 3) -> WordGraph:
    """HLG over the words of the LM's vocabulary, spelled with the BPE model."""
    tokenizer = Tokenizer(bpe_model)
    words = read_arpa_vocabulary(arpa_path)
    lexicon = build_lexicon(words, tokenizer)
    log.info("lexicon: %d words, %d disambiguation symbols", len(lexicon.words), lexicon.num_disambig)
    L = lexicon_fst(lexicon)
    G = grammar_fst(arpa_path, lexicon, order)
    log.info("L: %d arcs, G: %d arcs", L.num_arcs, G.num_arcs)
    HLG = compose_hlg(lexicon, L, G)
    log.info("HLG: %d states, %d arcs", HLG.shape[0], HLG.num_arcs)
    return WordGraph(HLG, lexicon.words, tokenizer.vocab_size)
