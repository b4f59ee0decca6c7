"""Small synthetic data sets for tests that need real audio files but no speech synthesiser.

Every word is rendered as a short tone whose pitch depends on the word, so transcripts and
audio are related (a model can learn something) and everything is deterministic.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
import soundfile as sf

SAMPLING_RATE = 16000
WORDS = (
    "ALPHA BRAVO CHARLIE DELTA ECHO FOXTROT GOLF HOTEL INDIA JULIET KILO LIMA MIKE NOVEMBER "
    "OSCAR PAPA QUEBEC ROMEO SIERRA TANGO UNIFORM VICTOR WHISKEY XRAY YANKEE ZULU"
).split()


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "little")


def sentence(key: str, min_words: int = 3, max_words: int = 7) -> str:
    rng = np.random.default_rng(_seed("text", key))
    n = int(rng.integers(min_words, max_words + 1))
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=n))


def render(text: str, key: str) -> np.ndarray:
    """A tone per word (pitch from the word) with short gaps and a little noise, float32."""
    rng = np.random.default_rng(_seed("audio", key))
    pieces = [np.zeros(int(0.1 * SAMPLING_RATE))]
    for word in text.split():
        freq = 200 + 40 * WORDS.index(word) if word in WORDS else 300
        t = np.arange(int((0.12 + 0.02 * len(word)) * SAMPLING_RATE)) / SAMPLING_RATE
        pieces.append(0.3 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t)))
        pieces.append(np.zeros(int(0.05 * SAMPLING_RATE)))
    audio = np.concatenate(pieces)
    audio += 0.01 * rng.standard_normal(len(audio))
    return audio.astype(np.float32)


def write_tone_corpus(out_dir: Path, splits: Dict[str, int]) -> Dict[str, Tuple[Path, Path]]:
    """WAVs plus lhotse recording/supervision manifests for each split; returns their paths."""
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    manifests = {}
    for split, count in splits.items():
        recordings, supervisions = [], []
        for i in range(count):
            utt = f"{split}-{i:04d}"
            text = sentence(utt)
            wav = out_dir / "wav" / split / f"{utt}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(wav, render(text, utt), SAMPLING_RATE, subtype="PCM_16")
            rec = Recording.from_file(wav, recording_id=utt)
            recordings.append(rec)
            supervisions.append(
                SupervisionSegment(id=utt, recording_id=utt, start=0.0, duration=rec.duration, channel=0, text=text)
            )
        rec_path = out_dir / f"recordings_{split}.jsonl.gz"
        sup_path = out_dir / f"supervisions_{split}.jsonl.gz"
        RecordingSet.from_recordings(recordings).to_file(rec_path)
        SupervisionSet.from_segments(supervisions).to_file(sup_path)
        manifests[split] = (rec_path, sup_path)
    return manifests


def tone_corpus_with_features(out_dir: Path, splits: Dict[str, int], vocab_size: int) -> Dict[str, Tuple[Path, Path]]:
    """The tone corpus with fbank cuts (``cuts_{split}.jsonl.gz``) and a BPE model (``bpe.model``)
    trained on the ``train`` split's texts; returns the recording and supervision manifests."""
    from lhotse import load_manifest_lazy

    from streamkd.data.features import compute_fbank
    from streamkd.data.tokenizer import train_bpe

    manifests = write_tone_corpus(out_dir, splits)
    for split, (recordings, supervisions) in manifests.items():
        compute_fbank(recordings, supervisions, out_dir / f"cuts_{split}.jsonl.gz", out_dir / "fbank")
    texts = [s.text for c in load_manifest_lazy(out_dir / "cuts_train.jsonl.gz") for s in c.supervisions]
    train_bpe(texts, out_dir / "bpe.model", vocab_size=vocab_size)
    return manifests


def make_fake_librispeech(
    root: Path,
    parts: Iterable[str],
    speakers: Sequence[int] = (19, 26),
    chapters: Sequence[int] = (198, 495),
    utterances: int = 2,
) -> Path:
    """A LibriSpeech tree in the real layout, with FLAC audio; returns ``root/LibriSpeech``.

    ``LibriSpeech/<part>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` plus one
    ``<speaker>-<chapter>.trans.txt`` per chapter. Speaker numbers are offset per part so
    that, as in the real corpus, no speaker appears in two parts.
    """
    corpus = root / "LibriSpeech"
    for p, part in enumerate(parts):
        for spk in speakers:
            speaker = spk + 1000 * p
            for chapter in chapters:
                chapter_dir = corpus / part / str(speaker) / str(chapter)
                chapter_dir.mkdir(parents=True, exist_ok=True)
                lines: List[str] = []
                for u in range(utterances):
                    utt = f"{speaker}-{chapter}-{u:04d}"
                    text = sentence(utt)
                    sf.write(chapter_dir / f"{utt}.flac", render(text, utt), SAMPLING_RATE, format="FLAC")
                    lines.append(f"{utt} {text}")
                (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return corpus
