"""One teacher per table: students distilled from different teachers are not comparable.

Every run is grouped by the digest of the teacher model it came from: a student's
``teacher_sha256``, the teacher's own (its ``model_sha256``; the checkpoint file's digest in
records from before the model digest). Records written before the record carried it are
read from the training summary they name. Runs without a teacher
(the ``none`` baseline) and an older teacher without a digest join any group.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from streamkd.results.record import resolve_record_path, teacher_digest

log = logging.getLogger(__name__)

NO_TEACHER_METHODS = ("none", "teacher")


class MixedTeachersError(ValueError):
    """Runs of one report came from different teachers, or a KD student names none."""


def _summary_of(path: Path, record: dict) -> dict:
    stored = record.get("train_summary")
    summary = resolve_record_path(path, stored) if stored else None
    if summary is None or not summary.is_file():
        return {}
    try:
        return json.loads(summary.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def record_teacher(path: Path, record: dict) -> Optional[str]:
    """The teacher digest of a record, from the training summary where the record has none."""
    if "teacher_sha256" in record:
        return record["teacher_sha256"]
    summary = _summary_of(path, record)
    return teacher_digest({**summary, "role": record.get("role")}) if summary else None


def check_one_teacher(records: Iterable[Tuple[Path, dict]], allow_mixed: bool = False) -> Dict[str, List[str]]:
    """``{teacher digest: [runs]}``; raises :class:`MixedTeachersError` unless ``allow_mixed``
    when there is more than one digest or a KD student has none."""
    groups: Dict[str, List[str]] = {}
    unknown: List[str] = []
    for path, record in records:
        digest = record_teacher(Path(path), record)
        if digest:
            groups.setdefault(digest, []).append(record["run"])
        elif record.get("role") == "student" and record.get("method") not in NO_TEACHER_METHODS:
            unknown.append(f"{record['run']} ({path})")
    problems = []
    if len(groups) > 1:
        problems.append(
            "runs from different teachers: "
            + "; ".join(f"teacher sha256 {d}: {', '.join(sorted(runs))}" for d, runs in sorted(groups.items()))
        )
    if unknown:
        problems.append(f"KD students that name no teacher digest: {', '.join(sorted(unknown))}")
    if problems and not allow_mixed:
        raise MixedTeachersError(
            "cannot put these runs in one table:\n  "
            + "\n  ".join(problems)
            + "\n(pass --allow-mixed-teachers to report them together anyway)"
        )
    for problem in problems:
        log.warning("reported together although allowed only by --allow-mixed-teachers: %s", problem)
    return groups
