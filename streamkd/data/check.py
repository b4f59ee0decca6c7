"""The data check between feature extraction and training or decoding.

Every cut of a split is checked for what would otherwise fail late or silently: audio that
cannot be read (including cuts that feature extraction could not produce), transcripts with
no words or with characters the BPE model maps to unknown, utterances too short for the
front-end or for their own transcript (CTC needs an encoder frame per token plus one per
repeated token; the transducer loss one per token), and training utterances longer than
``max_utterance_seconds``.

Training and dev splits lose such cuts (counted, named in the report) and fail only when the
excluded share exceeds ``max_excluded_fraction``; a test split fails naming its bad cuts
unless ``allow_test_exclusion`` is set, because dropping test utterances changes the WER's
denominator. The report (JSON) lies beside the checked manifest.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from lhotse import CutSet, load_manifest, load_manifest_lazy
from lhotse.utils import compute_num_frames

from streamkd.data.embedded import recording_problem, supervision_problem
from streamkd.data.tokenizer import Tokenizer
from streamkd.model.subsampling import INPUT_FRAME_SHIFT_MS, MIN_INPUT_FRAMES, subsampled_lengths
from streamkd.utils import atomic_path, write_json

log = logging.getLogger(__name__)

# The order in which reasons are tried; a cut is reported under the first that applies.
REASONS = (
    "unreadable_audio",
    "empty_transcript",
    "unknown_characters",
    "too_short_for_frontend",
    "too_long",
    "too_short_for_transcript",
)
SPLIT_KINDS = ("train", "dev", "test")
HEAD_TYPES = ("ctc", "transducer", "transducer+ctc")
NAMED_IN_ERRORS = 10  # cut ids an error message lists before "... and N more"


class DataCheckError(ValueError):
    """A split has bad cuts that the policy does not allow to be excluded."""


@dataclass(frozen=True)
class CheckPolicy:
    """What counts as bad, and what happens to bad cuts, for one split."""

    kind: str  # train | dev | test
    head: str = "ctc"
    max_utterance_seconds: Optional[float] = None  # train and dev only: decoding has no limit
    max_excluded_fraction: float = 0.02
    allow_test_exclusion: bool = False

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise ValueError(f"split kind {self.kind!r}: expected one of {', '.join(SPLIT_KINDS)}")
        if self.head not in HEAD_TYPES:
            raise ValueError(f"head {self.head!r}: expected one of {', '.join(HEAD_TYPES)}")
        if not 0.0 <= self.max_excluded_fraction <= 1.0:
            raise ValueError(f"max_excluded_fraction={self.max_excluded_fraction} is not between 0 and 1")


@dataclass
class Exclusion:
    cut_id: str
    reason: str
    detail: str

    def to_dict(self) -> Dict[str, str]:
        return {"id": self.cut_id, "reason": self.reason, "detail": self.detail}


@dataclass
class DataCheckReport:
    split: str
    policy: CheckPolicy
    num_checked: int = 0
    kept: List[str] = field(default_factory=list, repr=False)
    excluded: List[Exclusion] = field(default_factory=list)

    @property
    def excluded_fraction(self) -> float:
        return len(self.excluded) / self.num_checked if self.num_checked else 0.0

    def counts(self) -> Dict[str, int]:
        by_reason = Counter(e.reason for e in self.excluded)
        return {reason: by_reason[reason] for reason in REASONS if by_reason[reason]}

    def summary(self) -> str:
        reasons = ", ".join(f"{r}={n}" for r, n in self.counts().items()) or "none"
        return (
            f"data check {self.split} ({self.policy.kind}): {len(self.kept)} of {self.num_checked} utterances kept, "
            f"{len(self.excluded)} excluded ({100 * self.excluded_fraction:.2f}%; {reasons})"
        )

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "kind": self.policy.kind,
            "num_checked": self.num_checked,
            "num_kept": len(self.kept),
            "num_excluded": len(self.excluded),
            "excluded_fraction": round(self.excluded_fraction, 6),
            "excluded_by_reason": self.counts(),
            "excluded": [e.to_dict() for e in self.excluded],
            "policy": {
                "head": self.policy.head,
                "max_utterance_seconds": self.policy.max_utterance_seconds,
                "max_excluded_fraction": self.policy.max_excluded_fraction,
                "allow_test_exclusion": self.policy.allow_test_exclusion,
            },
        }


class TranscriptChecker:
    """Token counts and unknown characters of transcripts under one BPE model."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.unk_id = tokenizer.sp.unk_id()
        pieces = (tokenizer.sp.id_to_piece(i) for i in range(tokenizer.vocab_size))
        self.alphabet = {ch for piece in pieces for ch in piece}

    def tokens(self, text: str) -> List[int]:
        return self.tokenizer.encode([text])[0]

    def unknown_characters(self, text: str, tokens: Sequence[int]) -> str:
        if self.unk_id not in tokens:
            return ""
        unknown = sorted({ch for ch in text if not ch.isspace() and ch not in self.alphabet})
        shown = "".join(unknown) or "?"
        return f"characters {shown!r} of {text!r} are not in the BPE model"


def frames_needed(tokens: Sequence[int], head: str) -> int:
    """Encoder frames the loss needs: CTC one per token plus one between repeated tokens,
    the (pruned) transducer loss one per token."""
    repeats = sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)
    ctc = len(tokens) + repeats
    return ctc if head in ("ctc", "transducer+ctc") else len(tokens)


def input_frames(cut) -> int:
    """10 ms input frames the model will see: the stored features' or the on-the-fly fbank's."""
    if cut.has_features:
        return cut.num_frames
    return compute_num_frames(cut.duration, INPUT_FRAME_SHIFT_MS / 1000, cut.sampling_rate)


def cut_problem(cut, transcripts: TranscriptChecker, policy: CheckPolicy) -> Optional[Exclusion]:
    """The first reason (in :data:`REASONS` order) that makes ``cut`` unusable, or None."""

    def excluded(reason: str, detail: str) -> Exclusion:
        return Exclusion(cut.id, reason, detail)

    if not cut.has_features and cut.has_recording:
        problem = recording_problem(cut.recording)
        if problem:
            return excluded("unreadable_audio", f"recording {cut.recording_id}: {problem}")
    if len(cut.supervisions) != 1:
        return excluded("empty_transcript", f"{len(cut.supervisions)} supervisions (expected one)")
    supervision = cut.supervisions[0]
    problem = supervision_problem(supervision)
    if problem:
        return excluded("empty_transcript", problem)
    tokens = transcripts.tokens(supervision.text)
    problem = transcripts.unknown_characters(supervision.text, tokens)
    if problem:
        return excluded("unknown_characters", problem)
    frames = input_frames(cut)
    if frames < MIN_INPUT_FRAMES:
        return excluded(
            "too_short_for_frontend",
            f"{cut.duration:.3f} s gives {frames} input frames; the front-end needs {MIN_INPUT_FRAMES}",
        )
    limit = policy.max_utterance_seconds
    if policy.kind != "test" and limit is not None and cut.duration > limit:
        return excluded("too_long", f"{cut.duration:.2f} s is longer than max_utterance_seconds={limit}")
    encoder_frames, needed = subsampled_lengths(frames), frames_needed(tokens, policy.head)
    if encoder_frames < needed:
        return excluded(
            "too_short_for_transcript",
            f"{encoder_frames} encoder frames for {len(tokens)} tokens; the {policy.head} loss needs {needed}",
        )
    return None


def missing_from_features(cuts: CutSet, supervisions_path: Path, recordings_path: Optional[Path]) -> List[Exclusion]:
    """Supervisions that have no cut: feature extraction skipped them (lhotse only warns)."""
    present = {s.id for cut in cuts for s in cut.supervisions}
    recordings = load_manifest(recordings_path) if recordings_path is not None else None
    missing = []
    for segment in load_manifest_lazy(supervisions_path):
        if segment.id in present:
            continue
        detail = "no features were computed (see the compute-fbank log)"
        if recordings is not None and segment.recording_id in recordings:
            detail = (
                f"recording {segment.recording_id}: {recording_problem(recordings[segment.recording_id]) or detail}"
            )
        missing.append(Exclusion(segment.id, "unreadable_audio", detail))
    return missing


def check_cuts(cuts: Iterable, tokenizer: Tokenizer, policy: CheckPolicy, split: str) -> DataCheckReport:
    transcripts = TranscriptChecker(tokenizer)
    report = DataCheckReport(split, policy)
    for cut in cuts:
        report.num_checked += 1
        problem = cut_problem(cut, transcripts, policy)
        if problem is None:
            report.kept.append(cut.id)
        else:
            report.excluded.append(problem)
    return report


def enforce_policy(report: DataCheckReport, report_path: Path) -> None:
    """Raise DataCheckError when the policy does not allow the exclusions found."""
    policy = report.policy
    if not report.excluded:
        return
    names = "; ".join(f"{e.cut_id} ({e.reason}: {e.detail})" for e in report.excluded[:NAMED_IN_ERRORS])
    more = f"; ... and {len(report.excluded) - NAMED_IN_ERRORS} more" if len(report.excluded) > NAMED_IN_ERRORS else ""
    where = f"{len(report.excluded)} bad utterance(s) in {report.split} (all in {report_path}): {names}{more}"
    if policy.kind == "test" and not policy.allow_test_exclusion:
        raise DataCheckError(
            f"test set {where}. Fix or remove them, or set data_check.allow_test_exclusion: true to score without them"
        )
    if policy.kind != "test" and report.excluded_fraction > policy.max_excluded_fraction:
        raise DataCheckError(
            f"{100 * report.excluded_fraction:.2f}% of {report.split} excluded, more than "
            f"data_check.max_excluded_fraction={policy.max_excluded_fraction}: {where}"
        )


def run_data_check(
    cuts_path: Path,
    supervisions_path: Optional[Path],
    bpe_model: Path,
    out_cuts: Path,
    report_path: Path,
    policy: CheckPolicy,
    split: str,
    recordings_path: Optional[Path] = None,
) -> DataCheckReport:
    """Check a split's cuts; write the report, and the kept cuts when the policy allows."""
    cuts = load_manifest_lazy(cuts_path)
    report = check_cuts(cuts, Tokenizer(bpe_model), policy, split)
    if supervisions_path is not None:
        missing = missing_from_features(cuts, supervisions_path, recordings_path)
        report.num_checked += len(missing)
        report.excluded = missing + report.excluded
    write_json(report_path, report.to_dict())
    log.info("%s -> %s", report.summary(), report_path)
    for exclusion in report.excluded:
        log.warning("excluded %s: %s: %s", exclusion.cut_id, exclusion.reason, exclusion.detail)
    enforce_policy(report, report_path)
    if not report.kept:
        raise DataCheckError(f"{cuts_path}: no usable utterances (see {report_path})")
    kept = set(report.kept)
    with atomic_path(out_cuts) as tmp:
        CutSet.from_cuts(c for c in load_manifest_lazy(cuts_path) if c.id in kept).to_file(tmp)
    return report
