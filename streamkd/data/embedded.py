"""The embedded default corpus: English speech synthesised offline, deterministically.

A fresh machine can build a small ASR corpus without downloads: sentences from
Debian's fortune files (see :mod:`streamkd.data.text`) are read by several
Debian speech synthesisers (``espeak-ng`` and ``flite``) with per-utterance
speed and pitch variation, white Gaussian noise is added at a random SNR, and
lhotse manifests are written for train, dev and test.

Guarantees:

* No sentence is shared between splits.
* Test uses one held-out voice (``heldout_test_voice``) besides the training
  voices; it never occurs in train or dev and always occurs in test.
* Every random choice is derived from ``(seed, split, index)``, so the audio
  and manifests are byte-identical for the same configuration, whatever
  ``num_jobs`` is and whether the run was interrupted and resumed.

The configuration is the ``corpus`` section of the experiment config (``config.yaml`` holds
the default voices, sizes and ranges; the schema checks every key).

Pitch follows espeak-ng's ``-p`` scale.  For flite voices it is mapped to a
relative F0 factor ``2 ** ((pitch - 50) / 75)``, which matches how espeak-ng
responds to ``-p`` (about -15 % at 30 and +20 % at 70).  flite's ``rms`` voice
ignores F0 settings, so its utterances vary in speed only.

Layout of ``output_dir``::

    wav/<split>/<utt_id>.wav                        16-bit PCM, mono
    wav/plan.json                                   what the WAVs were made from
    manifests/embedded_recordings_<split>.jsonl.gz
    manifests/embedded_supervisions_<split>.jsonl.gz
    manifests/embedded_stats.json
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import MISSING, asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf
from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.qa import fix_manifests, validate_recordings_and_supervisions
from lhotse.supervision import AlignmentItem
from tqdm import tqdm

from streamkd.data.text import DEFAULT_FORTUNES_DIR, load_sentences
from streamkd.data.word_times import espeak_times_for, flite_times_for
from streamkd.schema import pattern
from streamkd.utils import atomic_path, write_json

logger = logging.getLogger(__name__)

SPLITS: Tuple[str, ...] = ("train", "dev", "test")
ENGINES: Tuple[str, ...] = ("espeak-ng", "flite")
# How each engine's word times were obtained (see streamkd.data.word_times).
WORD_TIME_SOURCES = {"espeak-ng": "espeak-ng word events", "flite": "flite segment durations"}
SYNTHESISERS_HINT = "apt-get install espeak-ng flite"

ESPEAK_BASE_WPM = 165
_NEUTRAL_PITCH = 50
_ENGINE_TIMEOUT_S = 120
_PEAK_LIMIT = 0.99
# Bump when the synthesis recipe changes, so old WAV caches are not reused.
_RECIPE_VERSION = 1
# Voice names become part of utterance ids and file names; the schema states the pattern.
VOICE_NAME = pattern("definitions.voice.name")

Manifests = Dict[str, Dict[str, Union[RecordingSet, SupervisionSet]]]


# --------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: ``engine`` reading with its voice ``voice``.

    ``name`` is the speaker id in the manifests and part of utterance ids.
    For espeak-ng, ``voice`` may carry a variant (``en-us+f2``).
    """

    name: str
    engine: Literal["espeak-ng", "flite"]
    voice: str

    def __post_init__(self) -> None:
        if not VOICE_NAME.match(self.name or ""):
            raise ValueError(
                f"voice name {self.name!r} must start with a letter or digit and hold only "
                "letters, digits, '.', '_' and '-' (it becomes part of utterance ids)"
            )
        if self.engine not in ENGINES:
            raise ValueError(f"voice {self.name!r}: engine must be one of {ENGINES}, got {self.engine!r}")
        if not self.voice:
            raise ValueError(f"voice {self.name!r}: the engine voice must not be empty")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Voice":
        if isinstance(d, Voice):
            return d
        return cls(**_checked_keys(d, cls, "voice"))


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that determines the embedded corpus."""

    seed: int
    num_train: int
    num_dev: int
    num_test: int
    voices: List[Voice]
    heldout_test_voice: Voice
    speed_range: Tuple[float, float]
    pitch_range: Tuple[int, int]
    snr_db_range: Tuple[float, float]
    sampling_rate: int = 16000

    def __post_init__(self) -> None:
        for key in ("seed", "num_train", "num_dev", "num_test", "sampling_rate"):
            if not isinstance(getattr(self, key), int) or isinstance(getattr(self, key), bool):
                raise ValueError(f"corpus config: {key} must be an integer, got {getattr(self, key)!r}")
        for key in ("num_train", "num_dev", "num_test"):
            if getattr(self, key) < 1:
                raise ValueError(f"corpus config: {key} must be at least 1, got {getattr(self, key)}")
        if self.sampling_rate < 8000:
            raise ValueError(f"corpus config: sampling_rate must be >= 8000, got {self.sampling_rate}")
        self._check_voices()
        _check_range("speed_range", self.speed_range, low=1e-3)
        _check_range("pitch_range", self.pitch_range, low=0, high=99)
        _check_range("snr_db_range", self.snr_db_range)
        if any(not isinstance(p, int) or isinstance(p, bool) for p in self.pitch_range):
            raise ValueError(f"corpus config: pitch_range must hold integers, got {self.pitch_range}")

    def _check_voices(self) -> None:
        if not self.voices:
            raise ValueError("corpus config: voices must not be empty")
        all_voices = list(self.voices) + [self.heldout_test_voice]
        names = [v.name for v in all_voices]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"corpus config: voice names must be unique, repeated: {duplicates}")
        held = self.heldout_test_voice
        if any((v.engine, v.voice) == (held.engine, held.voice) for v in self.voices):
            raise ValueError(f"corpus config: held-out test voice {held.engine} {held.voice} is also a training voice")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CorpusConfig":
        """Build a config from plain data (YAML/JSON); unknown keys are rejected by name."""
        kwargs = _checked_keys(d, cls, "corpus config")
        kwargs["voices"] = [Voice.from_dict(v) for v in kwargs["voices"]]
        kwargs["heldout_test_voice"] = Voice.from_dict(kwargs["heldout_test_voice"])
        for key in ("speed_range", "pitch_range", "snr_db_range"):
            kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-compatible data; ``from_dict(to_dict())`` round-trips."""
        d = asdict(self)
        for key in ("speed_range", "pitch_range", "snr_db_range"):
            d[key] = list(d[key])
        return d


def _checked_keys(d: Mapping[str, Any], cls: type, what: str) -> Dict[str, Any]:
    if not isinstance(d, Mapping):
        raise ValueError(f"{what} must be a mapping, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown key(s) in {what}: {', '.join(unknown)}; expected: {', '.join(sorted(known))}")
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(k for k in required if k not in d)
    if missing:
        raise ValueError(f"missing key(s) in {what}: {', '.join(missing)}")
    return dict(d)


def _check_range(name: str, value: Sequence[float], low: Optional[float] = None, high: Optional[float] = None) -> None:
    if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError(f"corpus config: {name} must be two numbers [low, high], got {value!r}")
    lo, hi = value
    if lo > hi or (low is not None and lo < low) or (high is not None and hi > high):
        bounds = f" within [{low}, {high}]" if high is not None else (f" with low >= {low}" if low is not None else "")
        raise ValueError(f"corpus config: {name} must satisfy low <= high{bounds}, got {value!r}")


# --------------------------------------------------------------------------
# Planning: which sentence, voice, speed, pitch and SNR each utterance gets


@dataclass(frozen=True)
class UtterancePlan:
    """All inputs needed to render one utterance; rendering is a pure function of it."""

    utt_id: str
    split: str
    index: int
    text: str
    voice: Voice
    speed: float
    pitch: int
    snr_db: float
    noise_seed: int


def derive_seed(seed: int, *parts: Union[str, int]) -> int:
    """A 63-bit seed from ``seed`` and labels, stable across runs and platforms.

    Python's ``hash`` is salted per process, so a cryptographic digest is used.
    """
    key = "/".join(str(p) for p in (seed,) + parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1


def split_sentences(sentences: Sequence[str], config: CorpusConfig) -> Dict[str, List[str]]:
    """Shuffle ``sentences`` with the corpus seed and cut disjoint splits.

    Test and dev are taken first so that changing ``num_train`` leaves them as
    they were.
    """
    needed = config.num_train + config.num_dev + config.num_test
    if needed > len(sentences):
        raise ValueError(f"the corpus needs {needed} distinct sentences but the text source has only {len(sentences)}")
    shuffled = list(sentences)
    random.Random(config.seed).shuffle(shuffled)
    cut_dev = config.num_test
    cut_train = cut_dev + config.num_dev
    splits = {
        "test": shuffled[:cut_dev],
        "dev": shuffled[cut_dev:cut_train],
        "train": shuffled[cut_train:needed],
    }
    _assert_disjoint(splits)
    return {name: splits[name] for name in SPLITS}


def _assert_disjoint(splits: Mapping[str, Sequence[str]]) -> None:
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = set(splits[a]) & set(splits[b])
            assert not shared, f"splits {a} and {b} share {len(shared)} sentences, e.g. {sorted(shared)[0]!r}"


def voice_pool(config: CorpusConfig, split: str) -> List[Voice]:
    """Voices a split draws from; the held-out voice comes first in test."""
    if split == "test":
        return [config.heldout_test_voice] + list(config.voices)
    return list(config.voices)


def assign_voices(num_utterances: int, pool: Sequence[Voice], seed: int) -> List[Voice]:
    """Round-robin over ``pool`` then shuffle: every voice gets an equal share.

    Because the first ``len(pool)`` slots cover each voice once, any voice
    (the held-out one in particular) is present whenever
    ``num_utterances >= len(pool)``, and the first voice whenever there is
    at least one utterance.
    """
    assigned = [pool[i % len(pool)] for i in range(num_utterances)]
    random.Random(seed).shuffle(assigned)
    return assigned


def plan_split(config: CorpusConfig, split: str, sentences: Sequence[str]) -> List[UtterancePlan]:
    voices = assign_voices(len(sentences), voice_pool(config, split), derive_seed(config.seed, split, "voices"))
    plans = []
    for index, (text, voice) in enumerate(zip(sentences, voices)):
        utt_seed = derive_seed(config.seed, split, index)
        rng = random.Random(utt_seed)
        plans.append(
            UtterancePlan(
                utt_id=f"embedded-{split}-{index:05d}-{voice.name}",
                split=split,
                index=index,
                text=text,
                voice=voice,
                # Rounded: short, readable values in the manifests' custom fields.
                speed=round(rng.uniform(*config.speed_range), 3),
                pitch=rng.randint(*config.pitch_range),
                snr_db=round(rng.uniform(*config.snr_db_range), 2),
                noise_seed=utt_seed,
            )
        )
    return plans


def plan_corpus(config: CorpusConfig, sentences: Sequence[str]) -> Dict[str, List[UtterancePlan]]:
    """The full, deterministic plan of every utterance in every split."""
    by_split = split_sentences(sentences, config)
    return {split: plan_split(config, split, by_split[split]) for split in SPLITS}


# --------------------------------------------------------------------------
# Synthesis engines


def require_binary(engine: str) -> str:
    """Path of the synthesiser ``engine``, or a RuntimeError saying how to install it."""
    path = shutil.which(engine)
    if path is None:
        raise RuntimeError(f"speech synthesiser '{engine}' not found on PATH; install it with: {SYNTHESISERS_HINT}")
    return path


@lru_cache(maxsize=None)
def _espeak_variants() -> frozenset:
    out = _run_engine(["espeak-ng", "--voices=variant"]).stdout
    # Rows look like " 5  variant  --/F  Alicia  !v/Alicia"; the file name is the id.
    return frozenset(m.group(1) for m in re.finditer(r"!v/(\S+)", out))


@lru_cache(maxsize=None)
def _flite_voices() -> frozenset:
    result = _run_engine(["flite", "-lv"])
    text = result.stdout + result.stderr
    listed = text.split(":", 1)[1] if ":" in text else text
    return frozenset(listed.split())


def _run_engine(cmd: List[str]) -> subprocess.CompletedProcess:
    """Run a synthesiser with its absolute path and without ``close_fds``.

    Both let CPython start the child with ``posix_spawn`` instead of ``fork``,
    which avoids copying the page tables of a process that has torch loaded
    (several times faster per utterance).  Python's own descriptors are
    non-inheritable, so nothing leaks into the child.
    """
    cmd = [require_binary(cmd[0])] + list(cmd[1:])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=_ENGINE_TIMEOUT_S, close_fds=False)


@lru_cache(maxsize=None)
def check_voice(voice: Voice) -> None:
    """Fail early, naming the voice, when its engine or engine voice is missing."""
    require_binary(voice.engine)
    if voice.engine == "espeak-ng":
        _check_espeak_voice(voice)
    else:
        _check_flite_voice(voice)


def _check_espeak_voice(voice: Voice) -> None:
    base, _, variant = voice.voice.partition("+")
    # espeak-ng rejects an unknown base voice but silently ignores an unknown
    # variant, so the variant is looked up in its list.
    probe = _run_engine(["espeak-ng", "-q", "-v", base, "probe"])
    if probe.returncode != 0:
        raise ValueError(
            f"voice {voice.name!r}: espeak-ng has no voice {base!r} "
            f"(see `espeak-ng --voices=en`): {probe.stderr.strip()}"
        )
    if variant and variant not in _espeak_variants():
        raise ValueError(
            f"voice {voice.name!r}: espeak-ng has no variant {variant!r} (see `espeak-ng --voices=variant`)"
        )


def _check_flite_voice(voice: Voice) -> None:
    # flite falls back to its default voice for an unknown name instead of
    # failing, so the name must be checked against its list (or be a voice file).
    if voice.voice in _flite_voices() or Path(voice.voice).is_file():
        return
    raise ValueError(
        f"voice {voice.name!r}: flite has no voice {voice.voice!r}; available: {' '.join(sorted(_flite_voices()))}"
    )


def flite_f0_factor(pitch: int) -> float:
    """Relative F0 for flite that mimics espeak-ng's response to ``-p pitch``."""
    return 2.0 ** ((pitch - _NEUTRAL_PITCH) / 75.0)


def spoken_text(transcript: str) -> str:
    """What the synthesiser is asked to read for an upper-case transcript.

    Engines spell out all-capital words ("US" as "U S"), so the text is
    lower-cased, with the pronoun "I" restored; the full stop gives a
    sentence-final intonation.
    """
    words = transcript.lower().split()
    words = ["I" + w[1:] if w == "i" or w.startswith("i'") else w for w in words]
    return " ".join(words) + "."


def espeak_wpm(plan: UtterancePlan) -> int:
    return int(round(ESPEAK_BASE_WPM * plan.speed))


def engine_command(plan: UtterancePlan, out_wav: Path) -> List[str]:
    """The command line that renders ``plan`` (clean speech) into ``out_wav``."""
    voice = plan.voice
    text = spoken_text(plan.text)
    if voice.engine == "espeak-ng":
        return [
            "espeak-ng",
            "-v",
            voice.voice,
            "-s",
            str(espeak_wpm(plan)),
            "-p",
            str(plan.pitch),
            "-w",
            str(out_wav),
            text,
        ]
    return [
        "flite",
        "-voice", voice.voice,
        "-psdur",  # segment end times on stdout: the word times
        "--setf", f"duration_stretch={1.0 / plan.speed:.6f}",
        "--setf", f"f0_shift={flite_f0_factor(plan.pitch):.6f}",
        "-t", text,
        "-o", str(out_wav),
    ]  # fmt: skip


def synthesise_clean(plan: UtterancePlan, sampling_rate: int) -> Tuple[np.ndarray, Optional[List[Tuple[float, float]]]]:
    """Run the engine for ``plan``: mono float32 samples at ``sampling_rate`` and each word's
    (start, end) in seconds as the engine placed it (None where it could not tell)."""
    with tempfile.TemporaryDirectory(prefix="streamkd-tts-") as tmp:
        raw = Path(tmp) / "raw.wav"
        result = _run_engine(engine_command(plan, raw))
        if result.returncode != 0 or not raw.is_file() or raw.stat().st_size == 0:
            raise RuntimeError(
                f"{plan.voice.engine} failed for utterance {plan.utt_id} "
                f"(voice {plan.voice.name}: {plan.voice.engine} {plan.voice.voice}), "
                f"exit code {result.returncode}: {result.stderr.strip() or '(no stderr)'}"
            )
        pcm, rate = sf.read(str(raw), dtype="int16", always_2d=True)
    if pcm.shape[0] == 0:
        raise RuntimeError(
            f"{plan.voice.engine} produced no audio for utterance {plan.utt_id} (voice {plan.voice.name})"
        )
    text = spoken_text(plan.text)
    if plan.voice.engine == "espeak-ng":
        times = espeak_times_for(plan.voice.voice, espeak_wpm(plan), plan.pitch, text, pcm[:, 0], rate)
    else:
        times = flite_times_for(plan.voice.voice, text, result.stdout)
    samples = pcm.astype(np.float32).mean(axis=1) / 32768.0  # what soundfile reads as float
    return resample(samples, rate, sampling_rate), times


def resample(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of a mono signal (torchaudio's sinc interpolation, as lhotse ships it)."""
    if orig_rate == new_rate:
        return samples.astype(np.float32)
    import torch
    from lhotse.augmentation.resample import resample as sinc_resample

    out = sinc_resample(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), orig_rate, new_rate)
    return out.numpy()


# --------------------------------------------------------------------------
# Noise and WAV output


def add_noise(signal: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise so that the utterance-level SNR is exactly ``snr_db``.

    Signal power is averaged over the whole utterance, silences included.
    The noise is rescaled to its target power after drawing, so the SNR does
    not depend on the random draw.
    """
    signal = np.asarray(signal, dtype=np.float64)
    signal_power = float(np.mean(signal**2))
    if signal.size == 0 or signal_power == 0.0:
        raise ValueError("cannot add noise at a given SNR to an empty or silent signal")
    noise = rng.standard_normal(signal.size)
    noise *= np.sqrt(signal_power / 10.0 ** (snr_db / 10.0) / np.mean(noise**2))
    return signal + noise


def measured_snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR of ``noisy`` against the ``clean`` signal it was made from, in dB."""
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noisy, dtype=np.float64) - clean
    return 10.0 * float(np.log10(np.mean(clean**2) / np.mean(noise**2)))


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Quantise to int16, scaling the whole utterance down if it would clip."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak > _PEAK_LIMIT:
        # A uniform gain keeps the SNR; clipping would not.
        samples = samples * (_PEAK_LIMIT / peak)
    return np.round(np.asarray(samples, dtype=np.float64) * 32767.0).astype(np.int16)


def write_wav_atomic(path: Path, pcm: np.ndarray, sampling_rate: int) -> None:
    """Write ``pcm`` as a 16-bit WAV so that ``path`` is either absent or complete."""
    with atomic_path(path) as tmp:
        sf.write(str(tmp), pcm, sampling_rate, subtype="PCM_16", format="WAV")


def words_path(wav_path: Path) -> Path:
    """Where the word times of ``wav_path`` are kept until the manifests are written."""
    return wav_path.with_suffix(".words.json")


def render_utterance(plan: UtterancePlan, wav_path: Path, sampling_rate: int) -> None:
    """Synthesise, add noise and write one utterance and its word times; no-op if both exist."""
    if wav_path.is_file() and words_path(wav_path).is_file():
        return
    clean, times = synthesise_clean(plan, sampling_rate)
    if not np.any(clean):
        raise RuntimeError(f"{plan.voice.engine} produced silence for utterance {plan.utt_id}")
    noisy = add_noise(clean, plan.snr_db, np.random.default_rng(plan.noise_seed))
    # The times first: a WAV without them is rendered again (same bytes) on the next run.
    write_json(words_path(wav_path), {"source": WORD_TIME_SOURCES[plan.voice.engine], "times": times})
    write_wav_atomic(wav_path, to_pcm16(noisy), sampling_rate)


def _render_job(job: Tuple[UtterancePlan, str, int]) -> str:
    plan, wav_path, sampling_rate = job
    render_utterance(plan, Path(wav_path), sampling_rate)
    return plan.utt_id


def _init_worker() -> None:
    # One intra-op thread per worker: the pool already uses every core asked for.
    import torch

    torch.set_num_threads(1)


def render_all(jobs: Sequence[Tuple[UtterancePlan, str, int]], num_jobs: int) -> None:
    """Render every job, in a process pool when ``num_jobs > 1``."""
    todo = [job for job in jobs if not (Path(job[1]).is_file() and words_path(Path(job[1])).is_file())]
    progress = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="synthesising", unit="utt", disable=None)
    with progress:
        if num_jobs <= 1 or len(todo) <= 1:
            for job in todo:
                _render_job(job)
                progress.update()
            return
        with ProcessPoolExecutor(num_jobs, initializer=_init_worker) as pool:
            pending = {pool.submit(_render_job, job) for job in todo}
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    if future.exception() is not None:
                        for other in pending:
                            other.cancel()
                        raise future.exception()
                    progress.update()


# --------------------------------------------------------------------------
# Manifests


def build_manifests(plans: Sequence[UtterancePlan], wav_dir: Path) -> Tuple[RecordingSet, SupervisionSet]:
    """Lhotse manifests for rendered utterances, checked with lhotse's own QA."""
    recordings, supervisions = [], []
    for plan in plans:
        wav_path = wav_dir / f"{plan.utt_id}.wav"
        recording = Recording.from_file(wav_path, recording_id=plan.utt_id)
        recordings.append(recording)
        words = json.loads(words_path(wav_path).read_text(encoding="utf-8"))
        alignment = word_alignment(plan.text, words["times"], recording.duration)
        supervisions.append(
            SupervisionSegment(
                id=plan.utt_id,
                recording_id=plan.utt_id,
                start=0.0,
                duration=recording.duration,
                channel=0,
                text=plan.text,
                speaker=plan.voice.name,
                language="English",
                custom={
                    "engine": plan.voice.engine,
                    "engine_voice": plan.voice.voice,
                    "speed": plan.speed,
                    "pitch": plan.pitch,
                    "snr_db": plan.snr_db,
                    "word_time_source": words["source"] if alignment else None,
                },
                alignment=alignment,
            )
        )
    recording_set, supervision_set = fix_manifests(
        RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(supervisions)
    )
    if len(recording_set) != len(recordings) or len(supervision_set) != len(supervisions):
        raise RuntimeError(
            f"lhotse dropped {len(recordings) - len(recording_set)} recordings and "
            f"{len(supervisions) - len(supervision_set)} supervisions of {wav_dir} as inconsistent"
        )
    validate_recordings_and_supervisions(recording_set, supervision_set)
    return recording_set, supervision_set


def word_alignment(
    transcript: str, times: Optional[Sequence[Sequence[float]]], duration: float
) -> Optional[Dict[str, List[AlignmentItem]]]:
    """lhotse's word alignment of a supervision from the engine's (start, end) per word."""
    if times is None:
        return None
    words = transcript.split()
    if len(words) != len(times):
        raise ValueError(f"{len(words)} words in {transcript!r} but {len(times)} word times")
    items = []
    for word, (start, end) in zip(words, times):
        start, end = min(float(start), duration), min(float(end), duration)
        items.append(AlignmentItem(symbol=word, start=round(start, 5), duration=round(max(end - start, 0.0), 5)))
    return {"word": items}


def write_manifest_atomic(manifest: Union[RecordingSet, SupervisionSet], path: Path) -> None:
    """lhotse's ``to_file`` through a temporary file (which keeps the suffix lhotse reads)."""
    with atomic_path(path) as tmp:
        manifest.to_file(tmp)


def corpus_stats(manifests: Manifests) -> Dict[str, Any]:
    """Hours and utterances per split, train vocabulary size, voices per split."""
    stats: Dict[str, Any] = {"hours": {}, "num_utterances": {}, "voices": {}}
    for split, parts in manifests.items():
        supervisions = parts["supervisions"]
        stats["hours"][split] = round(sum(s.duration for s in supervisions) / 3600.0, 4)
        stats["num_utterances"][split] = len(supervisions)
        counts: Dict[str, int] = {}
        for s in supervisions:
            counts[s.speaker] = counts.get(s.speaker, 0) + 1
        stats["voices"][split] = dict(sorted(counts.items()))
    train = manifests.get("train", {}).get("supervisions", [])
    stats["train_vocabulary_size"] = len({w for s in train for w in s.text.split()})
    return stats


# --------------------------------------------------------------------------
# Entry point


def prepare_embedded_corpus(
    config: CorpusConfig,
    output_dir: Union[str, Path],
    num_jobs: int = 1,
    text_dir: Union[str, Path] = DEFAULT_FORTUNES_DIR,
) -> Manifests:
    """Build (or finish building) the embedded corpus in ``output_dir``.

    Returns ``{split: {"recordings": RecordingSet, "supervisions": SupervisionSet}}``
    for train, dev and test, the shape lhotse's ``prepare_*`` recipes use.
    WAVs that already exist are kept, so an interrupted run can be resumed;
    ``output_dir/wav/plan.json`` guards against mixing WAVs made from another
    configuration or text source.  ``num_jobs`` only changes speed, never the output.
    """
    output_dir = Path(output_dir).resolve()
    for voice in list(config.voices) + [config.heldout_test_voice]:
        check_voice(voice)
    plans = plan_corpus(config, load_sentences(Path(text_dir)))
    _claim_output_dir(output_dir, config, plans)

    jobs = []
    for split in SPLITS:
        wav_dir = output_dir / "wav" / split
        _remove_stale_temporaries(wav_dir)
        jobs.extend((plan, str(wav_dir / f"{plan.utt_id}.wav"), config.sampling_rate) for plan in plans[split])
    render_all(jobs, num_jobs)

    manifests: Manifests = {}
    manifest_dir = output_dir / "manifests"
    for split in SPLITS:
        recordings, supervisions = build_manifests(plans[split], output_dir / "wav" / split)
        write_manifest_atomic(recordings, manifest_dir / f"embedded_recordings_{split}.jsonl.gz")
        write_manifest_atomic(supervisions, manifest_dir / f"embedded_supervisions_{split}.jsonl.gz")
        manifests[split] = {"recordings": recordings, "supervisions": supervisions}

    stats = corpus_stats(manifests)
    write_json(manifest_dir / "embedded_stats.json", stats)
    _log_stats(stats)
    return manifests


def _plan_digest(config: CorpusConfig, plans: Mapping[str, Sequence[UtterancePlan]]) -> str:
    payload = {
        "recipe_version": _RECIPE_VERSION,
        "sampling_rate": config.sampling_rate,
        "plans": {split: [asdict(p) for p in plans[split]] for split in SPLITS},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def _claim_output_dir(output_dir: Path, config: CorpusConfig, plans: Mapping[str, Sequence[UtterancePlan]]) -> None:
    """Record what the WAVs are made from, refusing a directory made from something else."""
    marker = output_dir / "wav" / "plan.json"
    digest = _plan_digest(config, plans)
    if marker.is_file():
        previous = json.loads(marker.read_text(encoding="utf-8")).get("plan_sha256")
        if previous != digest:
            raise ValueError(
                f"{output_dir} holds an embedded corpus built from a different configuration or "
                "text source; remove it or choose another output directory"
            )
        return
    existing = list((output_dir / "wav").glob("*/*.wav"))
    if existing:
        raise ValueError(
            f"{output_dir / 'wav'} already holds {len(existing)} WAV files but no plan.json; "
            "remove it or choose another output directory"
        )
    write_json(marker, {"plan_sha256": digest, "config": config.to_dict()})


def _remove_stale_temporaries(wav_dir: Path) -> None:
    # Left behind only by a killed run; a single writer per directory is assumed.
    for tmp in wav_dir.glob(".*"):  # atomic_path's temporaries are hidden; WAVs are not
        tmp.unlink(missing_ok=True)


def _log_stats(stats: Mapping[str, Any]) -> None:
    for split in SPLITS:
        voices = ", ".join(f"{name}={n}" for name, n in stats["voices"][split].items())
        logger.info(
            "embedded %s: %d utterances, %.3f h; voices: %s",
            split,
            stats["num_utterances"][split],
            stats["hours"][split],
            voices,
        )
    logger.info("embedded train vocabulary: %d words", stats["train_vocabulary_size"])


# --------------------------------------------------------------------------
# Checks, also for user-provided corpora


def recording_problem(recording: Recording) -> str:
    """Why a recording cannot be used (missing, empty, truncated, unreadable or non-finite audio), or ""."""
    for source in recording.sources:
        if source.type == "file":
            problem = _file_source_problem(recording, Path(source.source))
            if problem:
                return problem
    try:
        samples = recording.load_audio()
    except Exception as exc:  # any reader error means the file is unusable
        return f"cannot be read: {_describe_exception(exc)}"
    if samples.size == 0:
        return "no audio samples"
    if not np.all(np.isfinite(samples)):
        return "audio holds NaN or infinite samples"
    return ""


def _file_source_problem(recording: Recording, path: Path) -> str:
    """Plain-language diagnosis of the common file faults, before lhotse reads it."""
    if not path.is_file():
        return "file not found"
    if path.stat().st_size == 0:
        return "file is empty (0 bytes)"
    try:
        info = sf.info(str(path))
    except Exception:
        return ""  # a format soundfile cannot parse; lhotse may still read it
    comparable = len(recording.sources) == 1 and not recording.transforms and info.samplerate == recording.sampling_rate
    if comparable and info.frames != recording.num_samples:
        return (
            f"file holds {info.frames} samples but the manifest declares {recording.num_samples} "
            "(truncated or replaced file?)"
        )
    return ""


def _describe_exception(exc: BaseException) -> str:
    messages = []
    while exc is not None and len(messages) < 3:
        text = " ".join(str(exc).split())
        messages.append(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
        exc = exc.__cause__ or exc.__context__
    return "; ".join(messages)[:400]


def supervision_problem(segment: SupervisionSegment) -> str:
    """Why a supervision cannot be trained or scored (no words, no duration), or ""."""
    if segment.text is None or not any(ch.isalpha() for ch in segment.text):
        return f"transcript {segment.text!r} has no words"
    if not segment.duration > 0:
        return f"duration {segment.duration} is not positive"
    return ""
