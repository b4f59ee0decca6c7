"""Word error rate with insertion, deletion and substitution counts, per utterance and in total."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, List, Tuple

import kaldialign

EPS = "*"


@dataclass
class UtteranceErrors:
    utt_id: str
    ref: str
    hyp: str
    ins: int
    dels: int
    subs: int
    ref_words: int

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    def alignment(self) -> str:
        """Kaldi-style aligned rendering: correct words as-is, errors as (ref->hyp)."""
        pairs = kaldialign.align(self.ref.split(), self.hyp.split(), EPS)
        return " ".join(r if r == h else f"({r}->{h})" for r, h in pairs)


@dataclass
class WerSummary:
    ins: int = 0
    dels: int = 0
    subs: int = 0
    ref_words: int = 0
    num_utterances: int = 0
    utterances: List[UtteranceErrors] = field(default_factory=list, repr=False)

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def wer(self) -> float:
        """Percent; an empty reference set has no defined WER."""
        if self.ref_words == 0:
            raise ValueError("WER is undefined: the references contain no words")
        return 100.0 * self.errors / self.ref_words

    def to_dict(self) -> dict:
        return {
            "wer": round(self.wer, 4),
            "errors": self.errors,
            "ins": self.ins,
            "del": self.dels,
            "sub": self.subs,
            "ref_words": self.ref_words,
            "num_utterances": self.num_utterances,
        }


def score(pairs: Iterable[Tuple[str, str, str]]) -> WerSummary:
    """Score (utt_id, reference, hypothesis) triples."""
    summary = WerSummary()
    for utt_id, ref, hyp in pairs:
        ref_words, hyp_words = ref.split(), hyp.split()
        d = kaldialign.edit_distance(ref_words, hyp_words)
        utt = UtteranceErrors(utt_id, ref, hyp, d["ins"], d["del"], d["sub"], len(ref_words))
        summary.utterances.append(utt)
        summary.ins += utt.ins
        summary.dels += utt.dels
        summary.subs += utt.subs
        summary.ref_words += utt.ref_words
        summary.num_utterances += 1
    return summary


def per_utterance_rows(summary: WerSummary) -> List[dict]:
    rows = []
    for u in summary.utterances:
        row = asdict(u)
        row["errors"] = u.errors
        row["alignment"] = u.alignment()
        rows.append(row)
    return rows
