"""Is a system's WER really different from the baseline's? A paired bootstrap over utterances.

Both systems decoded the same test utterances; utterances are paired by id. One bootstrap
resample draws N utterances with replacement (N = size of the test set) and computes the
corpus-level WER difference on them:

    delta* = 100 * (sum_u E_sys[u] - sum_u E_base[u]) / sum_u W[u]

where E are word errors (substitutions + deletions + insertions) and W reference words. The
percentile interval of delta* over the resamples is the confidence interval of the WER
difference (Bisani & Ney, "Bootstrap estimates for confidence intervals in ASR performance
evaluation", ICASSP 2004); a difference is called significant when that interval excludes 0.
``prob_improvement`` is the share of resamples in which the system beats the baseline.

Several seeds: for each utterance the errors are averaged over a system's seeds before
resampling (seed-averaged per-utterance errors). Because every seed has the same reference
words, the point estimate is then exactly the difference of the seed-mean WERs that the
tables show, and the two systems need not have the same number of seeds. The interval
describes the uncertainty that comes from the choice of test utterances alone: it treats the
trained models as fixed and answers "do these checkpoints differ on this test set".

Seed level (:func:`two_level_bootstrap`): "does the method differ" also has to survive the
choice of training seed. With K seeds per system, paired by seed index (the i-th seed of one
system with the i-th of the other), one resample draws K seed indices with replacement, then
for each drawn seed N utterances with replacement; both systems see the same draws. The
statistic is the difference of the pooled WERs over the drawn (seed, utterance) pairs, whose
point estimate is again the difference of the seed-mean WERs. It needs at least
:data:`MIN_SEEDS` seeds per system: with fewer, seed resampling says nothing.

Both tests give a two-sided bootstrap p-value, ``2 * min(P*(delta <= 0), P*(delta >= 0))``,
so that the comparisons of one table can be corrected together with Holm's step-down method
(:func:`holm`). Resampled differences are rounded to 1e-9 percentage points before they are
compared with zero, so that floating-point noise cannot break a tie.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

# Resamples are drawn in blocks of about this many utterance indices to bound memory.
_BLOCK_ELEMENTS = 4_000_000
MIN_SEEDS = 3  # per system, for the seed-level test
_TIE_DECIMALS = 9  # WERs are recorded to 1e-4; anything below this is summation noise


class ErrorsFileError(ValueError):
    """Per-utterance errors are unreadable or do not pair up."""


@dataclass(frozen=True)
class BootstrapResult:
    delta: float  # WER(system) - WER(baseline), percentage points; negative: system is better
    ci_low: float
    ci_high: float
    confidence: float
    prob_improvement: float  # share of resamples with delta* < 0
    num_utterances: int
    num_resamples: int
    p_value: float = float("nan")  # two-sided: 2 * min(P*(delta* <= 0), P*(delta* >= 0)), at most 1
    num_seeds: int = 1  # seeds per system the resampling drew from (1: utterance level only)

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    def to_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant}


@lru_cache(maxsize=256)
def _read_errors_cached(path: str, mtime_ns: int) -> pd.DataFrame:
    rows = []
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append((str(row["utt_id"]), float(row["errors"]), float(row["ref_words"])))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ErrorsFileError(f"{path}:{line_no}: not a per-utterance errors row ({e})") from e
    if not rows:
        raise ErrorsFileError(f"{path}: no utterances")
    frame = pd.DataFrame(rows, columns=["utt_id", "errors", "ref_words"])
    dup = frame["utt_id"][frame["utt_id"].duplicated()]
    if len(dup):
        raise ErrorsFileError(f"{path}: utterance {dup.iloc[0]!r} appears more than once")
    if (frame[["errors", "ref_words"]] < 0).any().any():
        raise ErrorsFileError(f"{path}: negative error or word counts")
    return frame.set_index("utt_id").sort_index()


def read_errors(path: Path) -> pd.DataFrame:
    """``errors.jsonl`` (from :func:`streamkd.results.record.score_hyps`) indexed by utterance id."""
    path = Path(path)
    if not path.is_file():
        raise ErrorsFileError(f"per-utterance errors not found: {path}")
    return _read_errors_cached(str(path), path.stat().st_mtime_ns).copy()


def seed_averaged_errors(paths: Sequence[Path]) -> pd.DataFrame:
    """Per-utterance errors averaged over the seeds of one system (columns errors, ref_words)."""
    if not paths:
        raise ErrorsFileError("no per-utterance errors given")
    frames = [read_errors(p) for p in paths]
    first = frames[0]
    for path, frame in zip(paths[1:], frames[1:]):
        if not frame.index.equals(first.index):
            missing = first.index.symmetric_difference(frame.index)
            raise ErrorsFileError(
                f"{path} and {paths[0]} score different utterances ({len(missing)} differ, e.g. {missing[0]!r})"
            )
        if not np.array_equal(frame["ref_words"].to_numpy(), first["ref_words"].to_numpy()):
            raise ErrorsFileError(f"{path} and {paths[0]} disagree on reference word counts")
    errors = np.mean([f["errors"].to_numpy() for f in frames], axis=0)
    return pd.DataFrame({"errors": errors, "ref_words": first["ref_words"].to_numpy()}, index=first.index)


def _check_words_and_confidence(ref_words: np.ndarray, confidence: float) -> None:
    if ref_words.sum() <= 0:
        raise ValueError("the test utterances contain no reference words")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _check_paired(system: pd.DataFrame, baseline: pd.DataFrame, system_paths, baseline_paths) -> None:
    """Both sides score the same utterances with the same reference word counts."""
    if not system.index.equals(baseline.index):
        only_sys = system.index.difference(baseline.index)
        only_base = baseline.index.difference(system.index)
        example = (list(only_sys) + list(only_base))[0]
        raise ErrorsFileError(
            f"cannot pair utterances of {system_paths[0]} and {baseline_paths[0]}: {len(only_sys)} only in the "
            f"first, {len(only_base)} only in the second (e.g. {example!r})"
        )
    if not np.array_equal(system["ref_words"].to_numpy(), baseline["ref_words"].to_numpy()):
        raise ErrorsFileError(f"{system_paths[0]} and {baseline_paths[0]} disagree on reference word counts")


def paired_bootstrap(
    system_errors: np.ndarray,
    baseline_errors: np.ndarray,
    ref_words: np.ndarray,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Bootstrap interval of WER(system) - WER(baseline) from aligned per-utterance arrays."""
    system_errors = np.asarray(system_errors, dtype=np.float64)
    baseline_errors = np.asarray(baseline_errors, dtype=np.float64)
    ref_words = np.asarray(ref_words, dtype=np.float64)
    n = len(ref_words)
    if not (len(system_errors) == len(baseline_errors) == n) or n == 0:
        raise ValueError("paired bootstrap needs equally long, non-empty per-utterance arrays")
    _check_words_and_confidence(ref_words, confidence)
    diff = system_errors - baseline_errors
    delta = 100.0 * diff.sum() / ref_words.sum()
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // n)
    samples = []
    for start in range(0, num_resamples, block):
        idx = rng.integers(0, n, size=(min(block, num_resamples - start), n))
        words = ref_words[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            samples.append(100.0 * diff[idx].sum(axis=1) / words)
    return _summarise(delta, np.concatenate(samples), confidence, n, num_seeds=1)


def _summarise(delta: float, deltas: np.ndarray, confidence: float, n: int, num_seeds: int) -> BootstrapResult:
    deltas = np.round(deltas[np.isfinite(deltas)], _TIE_DECIMALS)  # a resample of only empty references has no WER
    if len(deltas) == 0:
        raise ValueError("no bootstrap resample had reference words")
    alpha = 1.0 - confidence
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    p_value = min(1.0, 2.0 * min(float(np.mean(deltas <= 0)), float(np.mean(deltas >= 0))))
    return BootstrapResult(
        delta=float(delta),
        ci_low=float(low),
        ci_high=float(high),
        confidence=float(confidence),
        prob_improvement=float(np.mean(deltas < 0)),
        num_utterances=n,
        num_resamples=len(deltas),
        p_value=p_value,
        num_seeds=num_seeds,
    )


def two_level_bootstrap(
    system_errors: np.ndarray,
    baseline_errors: np.ndarray,
    ref_words: np.ndarray,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Seeds, then utterances within each drawn seed (see the module docstring).

    ``system_errors`` and ``baseline_errors`` are (K seeds, N utterances), row i of one paired
    with row i of the other; ``ref_words`` is (N,).
    """
    system_errors = np.asarray(system_errors, dtype=np.float64)
    baseline_errors = np.asarray(baseline_errors, dtype=np.float64)
    ref_words = np.asarray(ref_words, dtype=np.float64)
    if system_errors.ndim != 2 or system_errors.shape != baseline_errors.shape:
        raise ValueError(
            f"two-level bootstrap needs two (seeds, utterances) arrays of one shape, got "
            f"{system_errors.shape} and {baseline_errors.shape}"
        )
    k, n = system_errors.shape
    if k < MIN_SEEDS or n == 0 or len(ref_words) != n:
        raise ValueError(f"two-level bootstrap needs at least {MIN_SEEDS} seeds and {n or 1}+ aligned utterances")
    _check_words_and_confidence(ref_words, confidence)
    diff = system_errors - baseline_errors
    delta = 100.0 * diff.sum() / (k * ref_words.sum())
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // (k * n))
    samples = []
    for start in range(0, num_resamples, block):
        size = min(block, num_resamples - start)
        seeds = rng.integers(0, k, size=(size, k, 1))
        utterances = rng.integers(0, n, size=(size, k, n))
        words = ref_words[utterances].sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            samples.append(100.0 * diff[seeds, utterances].sum(axis=(1, 2)) / words)
    return _summarise(delta, np.concatenate(samples), confidence, n, num_seeds=k)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (a comparison is significant at level a when its adjusted p < a).

    NaN entries (comparisons not made) are left out of the family and stay NaN.
    """
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def compare(
    system_paths: Sequence[Path],
    baseline_paths: Sequence[Path],
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Paired bootstrap of a system against the baseline from their ``errors.jsonl`` files.

    Each side may have several seeds (one file each); see the module docstring.
    """
    system = seed_averaged_errors(list(system_paths))
    baseline = seed_averaged_errors(list(baseline_paths))
    _check_paired(system, baseline, system_paths, baseline_paths)
    return paired_bootstrap(
        system["errors"].to_numpy(),
        baseline["errors"].to_numpy(),
        system["ref_words"].to_numpy(),
        num_resamples=num_resamples,
        confidence=confidence,
        seed=seed,
    )


def seed_error_matrix(paths: Sequence[Path]) -> pd.DataFrame:
    """Per-utterance errors of each seed (one column per file, in the order given) plus ref_words."""
    averaged = seed_averaged_errors(list(paths))  # checks that the seeds score the same utterances
    frames = [read_errors(p)["errors"].rename(f"seed{i}") for i, p in enumerate(paths)]
    return pd.concat(frames, axis=1).assign(ref_words=averaged["ref_words"])


def compare_seeds(
    system_paths: Sequence[Path],
    baseline_paths: Sequence[Path],
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Two-level bootstrap from ``errors.jsonl`` files, the i-th path of each side paired (same seed index)."""
    if len(system_paths) != len(baseline_paths):
        raise ErrorsFileError(
            f"seed-level test needs the same number of seeds on both sides, got {len(system_paths)} "
            f"and {len(baseline_paths)}"
        )
    system = seed_error_matrix(system_paths)
    baseline = seed_error_matrix(baseline_paths)
    _check_paired(system, baseline, system_paths, baseline_paths)
    seeds = [c for c in system.columns if c != "ref_words"]
    return two_level_bootstrap(
        system[seeds].to_numpy().T,
        baseline[seeds].to_numpy().T,
        system["ref_words"].to_numpy(),
        num_resamples=num_resamples,
        confidence=confidence,
        seed=seed,
    )
