"""A word lexicon spelled in BPE pieces, with the disambiguation symbols L needs.

Each word's pronunciation is its sentencepiece encoding (``HELLO`` -> ``▁HE LLO``). A
pronunciation that is a proper prefix of another one, or that several words share, gets a
disambiguation symbol ``#k`` appended so that L composed with G can be determinized; ``#0``
is reserved for G's backoff arcs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from streamkd.data.tokenizer import Tokenizer

EPSILON = "<eps>"
BACKOFF_DISAMBIG = "#0"


@dataclass
class Lexicon:
    words: List[str]  # word ids are 1..len(words); 0 is epsilon
    prons: List[List[int]]  # token ids per word, disambig symbols appended (ids >= vocab_size)
    vocab_size: int  # BPE tokens; token disambig #k has id vocab_size + k
    num_disambig: int  # #0 .. #(num_disambig-1)

    @property
    def token_disambig_start(self) -> int:
        return self.vocab_size

    @property
    def word_disambig_id(self) -> int:
        """Word id of ``#0`` (G's backoff symbol), right after the real words."""
        return len(self.words) + 1

    def word_symbol_table(self) -> str:
        """OpenFst/kaldilm symbol table: <eps>, words, #0, <s>, </s>."""
        lines = [f"{EPSILON} 0"] + [f"{w} {i}" for i, w in enumerate(self.words, start=1)]
        n = len(self.words)
        lines += [f"{BACKOFF_DISAMBIG} {n + 1}", f"<s> {n + 2}", f"</s> {n + 3}"]
        return "\n".join(lines) + "\n"


def build_lexicon(words: Sequence[str], tokenizer: Tokenizer) -> Lexicon:
    """Spell every word with the BPE model and add disambiguation symbols."""
    words = sorted(set(words))
    if not words:
        raise ValueError("the lexicon needs at least one word")
    bad = [
        w for w in words if not w or any(c.isspace() for c in w) or w.startswith("#") or w in ("<s>", "</s>", EPSILON)
    ]
    if bad:
        raise ValueError(f"words may not be empty, contain spaces, start with '#' or be reserved: {bad[:5]}")
    spelled: List[Tuple[int, ...]] = [tuple(ids) for ids in tokenizer.encode(list(words))]
    for word, ids in zip(words, spelled):
        if not ids:
            raise ValueError(f"the BPE model spells the word {word!r} with no tokens")

    proper_prefixes = {p[:k] for p in spelled for k in range(1, len(p))}
    repeats = Counter(spelled)
    seen: Counter = Counter()
    prons: List[List[int]] = []
    max_disambig = 0
    for ids in spelled:
        if ids in proper_prefixes or repeats[ids] > 1:
            seen[ids] += 1
            max_disambig = max(max_disambig, seen[ids])
            prons.append(list(ids) + [tokenizer.vocab_size + seen[ids]])
        else:
            prons.append(list(ids))
    return Lexicon(list(words), prons, tokenizer.vocab_size, num_disambig=max_disambig + 1)
