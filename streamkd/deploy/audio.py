"""Audio files in, 16 kHz mono fbank out: what `streamkd transcribe` feeds the model.

lhotse reads the file (soundfile, torchaudio or audioread, so WAV, FLAC, MP3, OGG...),
resamples it to 16 kHz and the channels are averaged (or one is chosen). The features are
lhotse's ``Fbank`` with the settings the pipeline's ``compute-fbank`` uses, so the model sees
what it was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional

import numpy as np
import torch

SAMPLE_RATE = 16000
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".sph", ".m4a")


class AudioError(Exception):
    """A file that cannot be transcribed; the message names it."""


def find_audio_files(paths: Iterable[Path]) -> List[Path]:
    """Files given by name are kept as they are; folders contribute their audio files, sorted."""
    found: List[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            found.append(path)  # a missing or unreadable file gets its own error later
    return found


def load_audio(path: Path, channel: Optional[int] = None) -> np.ndarray:
    """Samples of ``path`` at 16 kHz, mono: the channel mean, or ``channel`` (0-based)."""
    from lhotse import Recording

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        recording = Recording.from_file(path)
    except Exception as e:  # every audio backend raises its own types
        raise AudioError(f"{path}: cannot read audio ({type(e).__name__}: {e})") from e
    if channel is not None and channel not in recording.channel_ids:
        raise AudioError(f"{path}: has channels {recording.channel_ids}, channel {channel} was asked for")
    if recording.sampling_rate != SAMPLE_RATE:
        recording = recording.resample(SAMPLE_RATE)
    try:
        samples = recording.load_audio(channels=channel)
    except Exception as e:
        raise AudioError(f"{path}: cannot decode audio ({type(e).__name__}: {e})") from e
    samples = samples.mean(axis=0) if samples.ndim == 2 else samples
    if samples.size == 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    return samples.astype(np.float32)


def fbank(samples: np.ndarray, num_mel_bins: int = 80) -> torch.Tensor:
    """(T, num_mel_bins) log-mel filterbank of 16 kHz samples, 10 ms frame shift."""
    from lhotse import Fbank, FbankConfig

    extractor = Fbank(FbankConfig(num_mel_bins=num_mel_bins))
    return torch.from_numpy(np.asarray(extractor.extract(samples, SAMPLE_RATE), dtype=np.float32))


__all__ = ["SAMPLE_RATE", "AUDIO_SUFFIXES", "AudioError", "find_audio_files", "load_audio", "fbank"]
