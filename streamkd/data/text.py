"""English sentences for the embedded corpus, taken from Debian's fortune files.

The ``fortunes`` and ``fortunes-min`` packages ship a few thousand quotations,
jokes and aphorisms as plain text under ``/usr/share/games/fortunes``: one file
per topic (the files without a dot; ``*.dat`` are indexes and ``*.u8`` links),
entries separated by a line holding a single ``%``.  They are real English,
licensed for redistribution and available offline, which makes them a good
text source for synthesised speech.

Only sentences a speech synthesiser will read predictably are kept: no digits
(``1984`` may be read as a year or digit by digit), no symbols such as ``$`` or
``@``, ASCII letters only, and no single-letter words other than A, I and O
(the rest are mostly labels such as "Q:" or "n." that engines spell out).
Transcripts are normalised to upper-case words made of letters and inner
apostrophes, the usual form for English ASR corpora.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, List, Tuple

logger = logging.getLogger(__name__)

DEFAULT_FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNES_PACKAGES_HINT = "apt-get install fortunes fortunes-min"

# Digits and symbols are read in engine-specific, unpredictable ways (spelled
# out, named, or skipped), so a transcript could not match the audio.  Non-ASCII
# letters and control characters would vanish from the transcript while still
# being spoken (or mangled) by the synthesiser.
_UNSPEAKABLE = re.compile(r"[0-9@#$%&*_/\\<>=\[\]{}|~^+`\x00-\x08\x0a-\x1f\x7f-\U0010ffff]")

# Typographic quotes and dashes are folded to ASCII before anything else.
_TYPOGRAPHIC = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
    }
)

# A full stop after these tokens usually does not end the sentence.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr vs etc prof rev gen col capt lt sgt gov sen rep "
    "mt ft no vol fig inc ltd co corp dept univ".split()
)

_OVERSTRIKE = re.compile(r".\x08")  # nroff-style bold/underline: "x<BS>x"
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")
_WORD = re.compile(r"[A-Z]+(?:'[A-Z]+)*")
# Other single letters are usually labels ("Q:", "n.") that TTS spells out.
_SINGLE_LETTER_WORDS = frozenset("AIO")


def normalize_text(text: str) -> str:
    """Upper-case ``text`` and reduce it to words of letters and inner apostrophes.

    Hyphens and dashes separate words; other punctuation (quotes, commas,
    brackets, sentence marks) is dropped.  Leading or trailing apostrophes are
    treated as quotes, so ``'TWAS`` becomes ``TWAS`` but ``DON'T`` stays.
    Non-ASCII letters are removed as well; callers who must not lose words
    should filter such text out first (``load_sentences`` does).
    """
    return " ".join(_WORD.findall(text.translate(_TYPOGRAPHIC).upper()))


def load_sentences(
    source_dir: Path = DEFAULT_FORTUNES_DIR,
    min_words: int = 5,
    max_words: int = 14,
) -> List[str]:
    """Return the distinct normalised sentences of ``source_dir``, sorted.

    Every fortune file in ``source_dir`` is split into entries and sentences;
    sentences with digits, symbols or non-ASCII letters are dropped and the
    rest are kept when they have ``min_words`` to ``max_words`` words.  The
    result is sorted so that it does not depend on file-system order.
    """
    if min_words < 1 or max_words < min_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}..{max_words}")
    files = _fortune_files(Path(source_dir))
    # Keyed on the files' sizes and times, so an edited source is re-read.
    signature = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    sentences = _load_cached(signature, min_words, max_words)
    if not sentences:
        raise ValueError(
            f"no usable sentences with {min_words}..{max_words} words in {source_dir}; "
            f"it should hold Debian's fortune files ({FORTUNES_PACKAGES_HINT})"
        )
    logger.info("loaded %d sentences from %d fortune files in %s", len(sentences), len(files), source_dir)
    return list(sentences)


@lru_cache(maxsize=4)
def _load_cached(signature: Tuple[Tuple[str, int, int], ...], min_words: int, max_words: int) -> Tuple[str, ...]:
    kept = set()
    for path, _, _ in signature:
        for sentence in _split_sentences(_read_entries(Path(path))):
            normalised = _normalise_if_speakable(sentence)
            if normalised and min_words <= len(normalised.split()) <= max_words:
                kept.add(normalised)
    return tuple(sorted(kept))


def _fortune_files(source_dir: Path) -> List[Path]:
    if not source_dir.is_dir():
        raise FileNotFoundError(
            f"fortune text directory {source_dir} does not exist; "
            f"install Debian's fortune files with: {FORTUNES_PACKAGES_HINT}"
        )
    # Index files (*.dat) and the *.u8 links to the same text have a dot.
    files = sorted(p for p in source_dir.iterdir() if p.is_file() and "." not in p.name)
    if not files:
        raise FileNotFoundError(f"no fortune files in {source_dir}; install them with: {FORTUNES_PACKAGES_HINT}")
    return files


def _decode(raw: bytes) -> str:
    # Debian ships UTF-8 today, but older or local fortune files are latin-1.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _read_entries(path: Path) -> Iterator[str]:
    """Yield each entry of one fortune file as a single line of text."""
    text = _OVERSTRIKE.sub("", _decode(path.read_bytes())).replace("\r", "")
    entry: List[str] = []
    for line in text.split("\n") + ["%"]:
        if line.strip() == "%":
            if entry:
                yield " ".join(entry)
            entry = []
        else:
            entry.append(line)


def _split_sentences(entries: Iterable[str]) -> Iterator[str]:
    for entry in entries:
        body = _without_attribution(entry)
        start = 0
        for match in _SENTENCE_END.finditer(body):
            if _is_abbreviation(body[start : match.start()]):
                continue
            yield body[start : match.end()].strip()
            start = match.end()
        rest = body[start:].strip()
        if rest:
            yield rest


def _without_attribution(entry: str) -> str:
    # Quotations end with "-- Author, Source"; the author is not part of the
    # sentence, and joining it would merge two unrelated texts.
    cut = re.search(r"(?:^|\s)(?:--|\u2014|\u2015)\s*[A-Z(]", entry)
    if cut is None:
        return entry
    head = entry[: cut.start()]
    # Keep mid-sentence dashes ("this -- and that"): an attribution follows
    # the end of a sentence or stands on its own after the text.
    if head.rstrip().endswith((".", "!", "?", '"', "'")) or not head.strip():
        return head
    return entry


def _is_abbreviation(text_before_mark: str) -> bool:
    tokens = text_before_mark.split()
    if not tokens:
        return False
    last = tokens[-1].strip("\"'(").lower()
    # Single letters are initials ("J. R. R. Tolkien"), dotted tokens are
    # forms such as "e.g" or "U.S".
    return last in _ABBREVIATIONS or len(last) == 1 and last.isalpha() or "." in last


def _normalise_if_speakable(sentence: str) -> str:
    """Return the normalised sentence, or '' when TTS could not read it reliably."""
    sentence = sentence.translate(_TYPOGRAPHIC)
    if _UNSPEAKABLE.search(sentence):
        return ""
    normalised = normalize_text(sentence)
    if any(len(w) == 1 and w not in _SINGLE_LETTER_WORDS for w in normalised.split()):
        return ""
    return normalised
