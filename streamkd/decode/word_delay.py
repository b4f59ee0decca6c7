"""Word-level emission delay: when a decoder shows each word for good, against when it was said.

Reference word times, in order of preference:

1. the supervisions' word alignments (``SupervisionSegment.alignment["word"]``): the
   synthesiser's own times on the embedded corpus, or whatever alignments users bring into
   lhotse (e.g. LibriSpeech's standard ones);
2. only where those are absent, the full-context teacher's forced alignment
   (:mod:`streamkd.decode.align`), whose word times are its token spikes. Students
   distilled from the teacher learn its frames, so this reference favours them; every
   summary names the reference it used.

Per reference word recognised correctly (edit-distance alignment of reference and
hypothesis words):

- **last-token delay**: when the word's last token is emitted for good minus the word's end;
- **first-token delay**: when its first token is emitted for good minus the word's start.

The share of reference words matched is reported beside the means: systems are averaged
over different sets of words.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import kaldialign
import numpy as np

EPS = "<eps>"
WORD_START = "\u2581"  # sentencepiece's word-boundary mark
TEACHER_REFERENCE = "teacher forced alignment"

Word = Tuple[str, float, float]  # (word, start ms, end ms)


@dataclass(frozen=True)
class ReferenceWords:
    source: str  # where the times come from, e.g. "espeak-ng word events"
    words: Tuple[Word, ...]


def references_from_cuts(cuts: Iterable[Any]) -> Dict[str, Optional[ReferenceWords]]:
    """Word times of each cut's first supervision's word alignment (None where it has none)."""
    out: Dict[str, Optional[ReferenceWords]] = {}
    for cut in cuts:
        sup = cut.supervisions[0]
        items = (sup.alignment or {}).get("word")
        if not items:
            out[cut.id] = None
            continue
        source = (sup.custom or {}).get("word_time_source") or "supervision word alignment"
        words = tuple((i.symbol, round(i.start * 1000.0, 3), round((i.start + i.duration) * 1000.0, 3)) for i in items)
        out[cut.id] = ReferenceWords(source, words)
    return out


def references_from_teacher(path: Path) -> Dict[str, Optional[ReferenceWords]]:
    """Word times of a teacher forced alignment (``streamkd align-reference`` output)."""
    out: Dict[str, Optional[ReferenceWords]] = {}
    for line_no, row in _json_lines(path):
        try:
            words = row["words"]
            out[str(row["id"])] = (
                None
                if words is None
                else ReferenceWords(
                    TEACHER_REFERENCE, tuple((str(w["word"]), float(w["start_ms"]), float(w["end_ms"])) for w in words)
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{line_no}: not a reference alignment ({e})") from e
    return out


def load_references(path: Path) -> Dict[str, Optional[ReferenceWords]]:
    """Reference word times from a cut manifest with word alignments or a teacher alignment JSONL."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference word times not found: {path}")
    _, first = next(iter(_json_lines(path)), (0, {}))
    if "words" in first and "tokens" in first:
        return references_from_teacher(path)
    from lhotse import load_manifest

    return references_from_cuts(load_manifest(path))


def merge_references(
    preferred: Mapping[str, Optional[ReferenceWords]], fallback: Mapping[str, Optional[ReferenceWords]]
) -> Dict[str, Optional[ReferenceWords]]:
    """``preferred`` where it has times, else ``fallback``."""
    return {utt: preferred.get(utt) or fallback.get(utt) for utt in set(preferred) | set(fallback)}


def word_times(pieces: Sequence[str], times_ms: Sequence[float]) -> List[Dict[str, object]]:
    """Group sentencepiece pieces into words (a piece starting with the boundary mark opens one).

    Each word gets the time of its first token (``start_ms``) and of its last (``end_ms``,
    when the whole word has been seen).
    """
    words: List[Dict[str, object]] = []
    for piece, time_ms in zip(pieces, times_ms):
        if piece.startswith(WORD_START) or not words:
            words.append({"word": piece.lstrip(WORD_START), "start_ms": time_ms, "end_ms": time_ms})
        else:
            words[-1]["word"] = str(words[-1]["word"]) + piece
            words[-1]["end_ms"] = time_ms
    return [w for w in words if w["word"]]


def match_words(reference: Sequence[Word], hypothesis: Sequence[Word]) -> List[Tuple[Word, Word]]:
    """(reference word, hypothesis word) of every correctly recognised word, in order."""
    pairs, i, j = [], 0, 0
    for ref, hyp in kaldialign.align([w[0] for w in reference], [w[0] for w in hypothesis], EPS):
        if ref != EPS and ref == hyp:
            pairs.append((reference[i], hypothesis[j]))
        i += ref != EPS
        j += hyp != EPS
    return pairs


@dataclass
class WordDelaySummary:
    """Word-level emission delays of a test set, in ms."""

    mean_ms: Optional[float]  # last-token delay
    median_ms: Optional[float]
    p90_ms: Optional[float]
    first_token_mean_ms: Optional[float]
    first_token_median_ms: Optional[float]
    num_matched: int  # reference words recognised correctly
    num_reference: int  # reference words of the utterances with reference times
    share_matched: Optional[float]
    num_hypothesis: int  # hypothesis words
    num_utterances: int
    num_unaligned: int  # utterances without reference times (left out)
    reference: str  # where the reference times come from

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _stats(values: Sequence[float]) -> List[Optional[float]]:
    if not len(values):
        return [None, None, None]
    a = np.asarray(values, dtype=np.float64)
    return [round(float(np.mean(a)), 3), round(float(np.median(a)), 3), round(float(np.percentile(a, 90)), 3)]


def summarise_delays(
    emissions: Sequence[Mapping[str, Any]], references: Mapping[str, Optional[ReferenceWords]], where: str = ""
) -> WordDelaySummary:
    """Delays of every emission row (``id``, ``words``: [word, first ms, last ms]) against ``references``."""
    last, first, sources = [], [], set()
    num_reference = num_hypothesis = unaligned = 0
    for row in emissions:
        utt = row["id"]
        if utt not in references:
            raise ValueError(f"{where or 'reference'}: no reference word times for utterance {utt!r}")
        hyp = [tuple(w) for w in row["words"]]
        num_hypothesis += len(hyp)
        ref = references[utt]
        if ref is None:
            unaligned += 1
            continue
        sources.add(ref.source)
        num_reference += len(ref.words)
        for (_, ref_start, ref_end), (_, hyp_first, hyp_last) in match_words(ref.words, hyp):
            last.append(hyp_last - ref_end)
            first.append(hyp_first - ref_start)
    mean, median, p90 = _stats(last)
    first_mean, first_median, _ = _stats(first)
    return WordDelaySummary(
        mean_ms=mean,
        median_ms=median,
        p90_ms=p90,
        first_token_mean_ms=first_mean,
        first_token_median_ms=first_median,
        num_matched=len(last),
        num_reference=num_reference,
        share_matched=round(len(last) / num_reference, 4) if num_reference else None,
        num_hypothesis=num_hypothesis,
        num_utterances=len(emissions),
        num_unaligned=unaligned,
        reference=" + ".join(sorted(sources)) or "none",
    )


def read_emissions(path: Path) -> List[Dict[str, Any]]:
    """Per-utterance emission records (``streamkd emission-delay --emissions``)."""
    rows = []
    for line_no, row in _json_lines(path):
        if "id" not in row or "words" not in row:
            raise ValueError(f"{path}:{line_no}: not an emission record (needs id and words)")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no emission records")
    return rows


def reference_agreement(
    words: Mapping[str, Optional[ReferenceWords]], teacher: Mapping[str, Optional[ReferenceWords]]
) -> Dict[str, Any]:
    """How far the teacher's word ends lie from the reference word ends (same words only)."""
    diffs = []
    for utt, ref in words.items():
        other = teacher.get(utt)
        if ref is None or other is None:
            continue
        for (_, _, end), (_, _, teacher_end) in match_words(ref.words, other.words):
            diffs.append(teacher_end - end)
    if not diffs:
        raise ValueError("no word has both reference and teacher times")
    a = np.asarray(diffs)
    return {
        "num_words": len(diffs),
        "median_abs_diff_ms": round(float(np.median(np.abs(a))), 3),
        "mean_diff_ms": round(float(np.mean(a)), 3),
        "median_diff_ms": round(float(np.median(a)), 3),
        "p90_abs_diff_ms": round(float(np.percentile(np.abs(a), 90)), 3),
    }


def _json_lines(path: Path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not JSON ({e})") from e


__all__ = [
    "ReferenceWords",
    "TEACHER_REFERENCE",
    "references_from_cuts",
    "references_from_teacher",
    "load_references",
    "merge_references",
    "word_times",
    "match_words",
    "WordDelaySummary",
    "summarise_delays",
    "read_emissions",
    "reference_agreement",
]
