"""Word start and end times from the speech synthesisers themselves.

A latency reference has to be independent of the models it judges, so the embedded corpus
takes each word's times from the engine that spoke it:

* **espeak-ng**: libespeak-ng reports events through its synthesis callback: an
  ``espeakEVENT_WORD`` where a word starts and an ``espeakEVENT_PHONEME`` where each phoneme
  starts, each with its sample position. A word ends where the first pause phoneme after
  it starts, or where the next word starts. The library is driven through ctypes with the
  settings the ``espeak-ng`` command line uses (a word that runs into the next one ends at
  the next word's event, which comes up to about 20 ms before the sound changes), and the audio it returns must equal the
  command line's WAV sample for sample, so the times belong to exactly the audio stored.
* **flite**: ``flite -psdur`` prints every segment with its end time. flite does not print
  word boundaries, so each word's phone count comes from the voice's own lexicon
  (``flite -ps`` on the word alone); an utterance whose phones do not add up gets no times
  rather than wrong ones.

Times are in seconds from the start of the recording. Nothing after synthesis moves audio
in time (resampling keeps seconds, noise is added sample by sample), so they hold for the
stored WAV.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import re
import subprocess
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import numpy as np


def word_spans(text: str) -> List[Tuple[int, int]]:
    """Character span ``[start, end)`` of every space-separated word of ``text``."""
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


# --------------------------------------------------------------------------
# espeak-ng through its C API

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_ENDPAUSE = 0x1000  # what the command line passes: the sentence-final pause is rendered
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_END, _EVENT_MSG_TERMINATED, _EVENT_PHONEME = 0, 1, 5, 6, 7
_RATE, _PITCH, _WORDGAP = 1, 3, 7
_PAUSE_PHONEMES = frozenset({b"_", b"_:", b"_!", b"_!_", b"||", b"|"})


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT of speak_lib.h
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character position
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class _Espeak:
    """One initialised libespeak-ng per process (the library keeps global state)."""

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL("libespeak-ng.so.1")
        except OSError as e:
            raise RuntimeError(f"libespeak-ng is not installed ({e}): apt-get install espeak-ng") from e
        self.sample_rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        )
        if self.sample_rate <= 0:
            raise RuntimeError(f"libespeak-ng failed to initialise (returned {self.sample_rate})")
        self._chunks: List[np.ndarray] = []
        self._events: List[Tuple[int, int, int, int, bytes]] = []
        self._callback = _Callback(self._collect)  # kept alive as long as the library may call it
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            name = bytes(e.id.string).rstrip(b"\0") if e.type == _EVENT_PHONEME else b""
            self._events.append((e.type, e.text_position, e.length, e.sample, name))
            i += 1
        return 0

    def synthesise(self, voice: str, wpm: int, pitch: int, text: str, word_gap: int = 0):
        """PCM samples (int16) and the event list for ``text``."""
        self._chunks, self._events = [], []
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"libespeak-ng has no voice {voice!r}")
        self.lib.espeak_SetParameter(_RATE, wpm, 0)
        self.lib.espeak_SetParameter(_PITCH, pitch, 0)
        self.lib.espeak_SetParameter(_WORDGAP, word_gap, 0)
        data = text.encode("utf-8")
        status = self.lib.espeak_Synth(ctypes.c_char_p(data), len(data) + 1, 0, 0, 0, _ENDPAUSE, None, None)
        if status != 0 or self.lib.espeak_Synchronize() != 0:
            raise RuntimeError(f"libespeak-ng failed on {text!r} (status {status})")
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return pcm, list(self._events)


def _synthesise_once(voice: str, wpm: int, pitch: int, text: str, word_gap: int):
    engine = _Espeak()
    pcm, events = engine.synthesise(voice, wpm, pitch, text, word_gap)
    return pcm, events, engine.sample_rate


def _espeak_in_fresh_process(voice: str, wpm: int, pitch: int, text: str, word_gap: int):
    """libespeak-ng keeps state from one synthesis to the next (a second call renders a few
    samples differently), and terminating it does not reset it; the command line starts
    afresh for every utterance, so the library does too, in a forked child."""
    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(_synthesise_once, (voice, wpm, pitch, text, word_gap))


def espeak_word_times(
    text: str, events: Sequence[Tuple[int, int, int, int, bytes]], sample_rate: int
) -> Optional[List[Tuple[float, float]]]:
    """(start, end) in seconds of each word of ``text`` from libespeak-ng's events.

    espeak-ng reads some unstressed words together with the word before them ("from the",
    "at it") and then reports one word event for both; such a group's span is shared out
    among its words in proportion to their letters. None when no word has an event.
    """
    spans = word_spans(text)
    starts: List[Optional[int]] = [None] * len(spans)
    ends: List[Optional[int]] = [None] * len(spans)
    current: Optional[int] = None  # word whose phonemes are being read
    for kind, position, _length, sample, name in events:
        if kind == _EVENT_WORD:
            index = next((i for i, (a, b) in enumerate(spans) if a <= position - 1 < b), None)
            if current is not None and ends[current] is None:
                ends[current] = sample
            if index is not None and starts[index] is None:
                starts[index] = sample
            if index is not None:
                ends[index] = None  # a word read in parts ends with its last part
            current = index
        elif kind == _EVENT_PHONEME and name in _PAUSE_PHONEMES:
            if current is not None and ends[current] is None:
                ends[current] = sample
            current = None
        elif kind in (_EVENT_END, _EVENT_MSG_TERMINATED):
            if current is not None and ends[current] is None:
                ends[current] = sample
            current = None
    heads = [i for i, (s, e) in enumerate(zip(starts, ends)) if s is not None and e is not None]
    if not heads:
        return None
    times: List[Tuple[float, float]] = []
    # A group runs from a word with an event to the next one; words before the first join it.
    bounds = [0] + heads[1:] + [len(spans)]
    for head, first, last in zip(heads, bounds, bounds[1:]):
        letters = [len(text[a:b].strip(".")) or 1 for a, b in spans[first:last]]
        start, end = starts[head] / sample_rate, ends[head] / sample_rate
        edges = start + (end - start) * np.cumsum([0] + letters) / sum(letters)
        times.extend((float(x), float(y)) for x, y in zip(edges, edges[1:]))
    return times


def espeak_times_for(
    voice: str, wpm: int, pitch: int, text: str, cli_pcm: np.ndarray, cli_rate: int, word_gap: int = 0
):
    """Word times of what ``espeak-ng -v voice -s wpm -p pitch [-g word_gap]`` rendered as ``cli_pcm``.

    Refuses (ValueError) when the library's audio differs from the command line's: then
    the events would describe other audio.
    """
    pcm, events, sample_rate = _espeak_in_fresh_process(voice, wpm, pitch, text, word_gap)
    if sample_rate != cli_rate or not np.array_equal(pcm, np.asarray(cli_pcm).reshape(-1)):
        raise ValueError(
            f"libespeak-ng rendered {text!r} (voice {voice}) differently from the espeak-ng command line "
            f"({len(pcm)} vs {np.asarray(cli_pcm).size} samples at {sample_rate} vs {cli_rate} Hz)"
        )
    return espeak_word_times(text, events, sample_rate)


# --------------------------------------------------------------------------
# flite: segment end times and the voice's lexicon


def parse_psdur(output: str) -> List[Tuple[str, float]]:
    """``flite -psdur``'s ``phone:end_time`` pairs."""
    segments = []
    for item in output.split():
        phone, sep, end = item.rpartition(":")
        if not sep:
            continue
        try:
            segments.append((phone, float(end)))
        except ValueError:
            continue
    return segments


@lru_cache(maxsize=100_000)
def flite_phone_count(voice: str, word: str) -> int:
    """Phones (pauses excluded) flite's ``voice`` reads ``word`` with, said alone."""
    done = subprocess.run(["flite", "-voice", voice, "-ps", "-t", word, "none"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"flite -ps failed for {word!r} (voice {voice}): {done.stderr.strip()}")
    return sum(1 for phone in done.stdout.split() if phone != "pau")


def flite_word_times(
    text: str, segments: Sequence[Tuple[str, float]], phone_counts: Sequence[int]
) -> Optional[List[Tuple[float, float]]]:
    """(start, end) of each word from ``-psdur`` segments and each word's phone count.

    None when the sentence's phones do not add up to the words' (a post-lexical rule
    changed a word's phones).
    """
    spans = word_spans(text)
    if len(spans) != len(phone_counts):
        raise ValueError(f"{len(spans)} words but {len(phone_counts)} phone counts")
    phones: List[Tuple[float, float]] = []  # (start, end) of every non-pause phone
    previous_end = 0.0
    for phone, end in segments:
        if phone != "pau":
            phones.append((previous_end, end))
        previous_end = end
    if sum(phone_counts) != len(phones) or any(n <= 0 for n in phone_counts):
        return None
    out, i = [], 0
    for n in phone_counts:
        out.append((phones[i][0], phones[i + n - 1][1]))
        i += n
    return out


def flite_times_for(voice: str, text: str, psdur_output: str) -> Optional[List[Tuple[float, float]]]:
    counts = [flite_phone_count(voice, text[a:b].strip(".")) for a, b in word_spans(text)]
    return flite_word_times(text, parse_psdur(psdur_output), counts)


__all__ = [
    "word_spans",
    "espeak_word_times",
    "espeak_times_for",
    "parse_psdur",
    "flite_phone_count",
    "flite_word_times",
    "flite_times_for",
]
