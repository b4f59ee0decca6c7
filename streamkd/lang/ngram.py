"""Word n-gram language model with interpolated Kneser-Ney smoothing, written as ARPA.

ARPA is the interchange format: kaldilm turns it into the G FST, and users can drop in an
external LM (e.g. LibriSpeech's 3-gram) instead of training one. The estimator follows the
textbook interpolated Kneser-Ney (Chen & Goodman, 1998) with one discount per order:

    p(w | h) = max(c(h w) - D, 0) / c(h) + gamma(h) * p(w | h'),   gamma(h) = D * N1+(h .) / c(h)

where c is the raw count at the highest order and the continuation count (number of
distinct left neighbours) below it, except for n-grams that start with <s>, which have no
left neighbour and keep raw counts. The unigram level interpolates with the uniform
distribution over the vocabulary. In backoff form, seen n-grams store the interpolated
probability and a context's backoff weight is gamma(h), so ARPA represents it exactly.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

from streamkd.utils import atomic_path

log = logging.getLogger(__name__)

BOS, EOS = "<s>", "</s>"
NGram = Tuple[str, ...]


def _discount(counts: Counter) -> float:
    """D = n1 / (n1 + 2 n2) from the counts of counts; 0.5 when the data cannot tell."""
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    if n1 == 0 or n2 == 0:
        return 0.5
    return min(max(n1 / (n1 + 2 * n2), 0.1), 0.9)


class KneserNeyLM:
    """Counts and probabilities of an interpolated Kneser-Ney n-gram model."""

    def __init__(self, sentences: Iterable[Sequence[str]], order: int = 3) -> None:
        if order < 1:
            raise ValueError(f"n-gram order must be >= 1, got {order}")
        self.order = order
        raw: List[Counter] = [Counter() for _ in range(order + 1)]  # raw[n][ngram]
        num_sentences = 0
        for words in sentences:
            if any(w in (BOS, EOS) for w in words):
                raise ValueError(f"a sentence contains the reserved token {BOS} or {EOS}: {' '.join(words)}")
            tokens = [BOS, *words, EOS]
            num_sentences += 1
            for n in range(1, order + 1):
                for i in range(len(tokens) - n + 1):
                    raw[n][tuple(tokens[i : i + n])] += 1
        if num_sentences == 0:
            raise ValueError("no sentences to train the language model on")
        del raw[1][(BOS,)]  # <s> is never predicted
        self.vocab = sorted(w for (w,) in raw[1])  # includes </s>

        # Counts used at each order: raw at the top, continuation counts below.
        self.counts: List[Counter] = [Counter() for _ in range(order + 1)]
        self.counts[order] = raw[order]
        for n in range(1, order):
            left_neighbours: Counter = Counter(g[1:] for g in raw[n + 1])
            for g, c in raw[n].items():
                self.counts[n][g] = c if g[0] == BOS else left_neighbours[g]
        self.discounts = [0.0] + [_discount(self.counts[n]) for n in range(1, order + 1)]

        # Per-context totals and numbers of distinct followers.
        self.context_total: List[Dict[NGram, int]] = [defaultdict(int) for _ in range(order + 1)]
        self.context_types: List[Dict[NGram, int]] = [defaultdict(int) for _ in range(order + 1)]
        for n in range(1, order + 1):
            for g, c in self.counts[n].items():
                self.context_total[n][g[:-1]] += c
                self.context_types[n][g[:-1]] += 1
        self._prob_cache: Dict[NGram, float] = {}

    def gamma(self, context: NGram) -> float:
        """Interpolation (= backoff) weight of a context; 1 for a context never seen."""
        n = len(context) + 1
        total = self.context_total[n].get(context, 0)
        if total == 0:
            return 1.0
        return self.discounts[n] * self.context_types[n][context] / total

    def prob(self, ngram: NGram) -> float:
        """p(w | h) for ngram = h + (w,), interpolated down to the uniform distribution."""
        if ngram in self._prob_cache:
            return self._prob_cache[ngram]
        n = len(ngram)
        context = ngram[:-1]
        if n == 0:
            raise ValueError("empty n-gram")
        lower = 1.0 / len(self.vocab) if n == 1 else self.prob(ngram[1:])
        total = self.context_total[n].get(context, 0)
        if total == 0:
            p = lower
        else:
            seen = max(self.counts[n].get(ngram, 0) - self.discounts[n], 0.0) / total
            p = seen + self.gamma(context) * lower
        self._prob_cache[ngram] = p
        return p

    def write_arpa(self, path: Path) -> None:
        """Write the model in ARPA format (log10 probabilities and backoff weights)."""
        grams: List[List[NGram]] = [[] for _ in range(self.order + 1)]
        grams[1] = [(BOS,)] + [(w,) for w in self.vocab]
        for n in range(2, self.order + 1):
            grams[n] = sorted(self.counts[n])
        contexts = {g[:-1] for n in range(2, self.order + 1) for g in self.counts[n]}
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("\\data\\\n")
                for n in range(1, self.order + 1):
                    f.write(f"ngram {n}={len(grams[n])}\n")
                for n in range(1, self.order + 1):
                    f.write(f"\n\\{n}-grams:\n")
                    for g in grams[n]:
                        logp = -99.0 if g == (BOS,) else math.log10(self.prob(g))
                        line = f"{logp:.6f}\t{' '.join(g)}"
                        if n < self.order and g in contexts:
                            line += f"\t{math.log10(self.gamma(g)):.6f}"
                        f.write(line + "\n")
                f.write("\n\\end\\\n")


def train_ngram_lm(texts: Iterable[str], arpa_path: Path, order: int = 3) -> KneserNeyLM:
    """Train on whitespace-separated transcripts and write ``arpa_path``."""
    lm = KneserNeyLM((t.split() for t in texts if t.strip()), order=order)
    lm.write_arpa(arpa_path)
    log.info(
        "%d-gram LM over %d words (%s n-grams) -> %s",
        order,
        len(lm.vocab),
        "/".join(str(len(lm.counts[n])) for n in range(1, order + 1)),
        arpa_path,
    )
    return lm


def read_arpa_vocabulary(path: Path) -> List[str]:
    """The words of an ARPA LM's unigram section, without <s>, </s> and <unk>."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ARPA language model not found: {path}")
    words: List[str] = []
    section = None
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if line.startswith("\\"):
                section = line
                continue
            if section == "\\1-grams:" and line:
                fields = line.split()
                if len(fields) < 2:
                    raise ValueError(f"{path}:{line_no}: malformed unigram line {line!r}")
                word = fields[1]
                if word not in (BOS, EOS, "<unk>", "<UNK>"):
                    words.append(word)
    if section is None:
        raise ValueError(f"{path} is not an ARPA file (no \\data\\ section)")
    if not words:
        raise ValueError(f"{path}: the ARPA file has no unigrams")
    return words
