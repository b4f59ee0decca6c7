"""``streamkd progress``: where every run of an experiment folder stands, and what is left.

A run folder tells its state through files the trainer writes:

* ``model.pt`` + ``train_summary.json``: finished (epochs, steps, time per epoch);
* ``progress.json`` (:mod:`streamkd.training.monitor`): training, with epoch of total, step,
  recent loss, audio seconds per second and ETA;
* ``train_steps.jsonl`` alone (a trainer from before ``progress.json``): epoch, step, loss.

With the experiment's config, runs the workflow has not started yet are listed too, and the
rest of the workflow's training time is estimated from the measured time per epoch of runs
of the same role (teacher or student).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from streamkd.training.monitor import PROGRESS_FILE
from streamkd.utils import format_seconds

STEP_LOG = "train_steps.jsonl"
TEACHER_RUN = "teacher"
STALE_AFTER_S = 600  # a training that wrote nothing for this long is shown as quiet


@dataclass
class RunProgress:
    run: str
    role: str  # teacher | student
    status: str  # finished | training | quiet | started | pending
    epoch: Optional[int] = None
    num_epochs: Optional[int] = None
    step: Optional[int] = None
    loss: Optional[float] = None
    audio_rate: Optional[float] = None  # audio seconds trained per second
    eta_seconds: Optional[float] = None  # to the end of this run's training
    seconds_per_epoch: Optional[float] = None
    updated_ago: Optional[float] = None


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # being replaced right now, or never written


def _last_step_row(path: Path) -> Optional[dict]:
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being appended
    return None


def _role(run: str) -> str:
    return "teacher" if run == TEACHER_RUN else "student"


def read_run(run_dir: Path, now: Optional[float] = None) -> RunProgress:
    """The progress of one run folder, from the newest evidence it holds."""
    now = time.time() if now is None else now
    run_dir = Path(run_dir)
    progress = RunProgress(run=run_dir.name, role=_role(run_dir.name), status="started")
    summary = _read_json(run_dir / "train_summary.json") if (run_dir / "model.pt").is_file() else None
    if summary is not None:
        epochs = summary.get("num_epochs") or 0
        history = summary.get("history") or []
        progress.status = "finished"
        progress.epoch = progress.num_epochs = epochs
        progress.step = summary.get("num_steps")
        progress.loss = history[-1]["train_loss"] if history else None
        progress.eta_seconds = 0.0
        progress.seconds_per_epoch = (
            summary["train_seconds"] / epochs if epochs and summary.get("train_seconds") else None
        )
        return progress
    snapshot = _read_json(run_dir / PROGRESS_FILE)
    if snapshot is not None:
        progress.status = "training"
        progress.epoch = snapshot.get("epoch")
        progress.num_epochs = snapshot.get("num_epochs")
        progress.step = snapshot.get("step")
        progress.loss = snapshot.get("loss")
        progress.audio_rate = snapshot.get("audio_seconds_per_second")
        progress.seconds_per_epoch = snapshot.get("seconds_per_epoch")
        progress.updated_ago = max(now - snapshot["time"], 0.0)
        eta = snapshot.get("eta_seconds")
        # The ETA counts from the snapshot's time.
        progress.eta_seconds = max(eta - progress.updated_ago, 0.0) if eta is not None else None
        if progress.updated_ago > STALE_AFTER_S:
            progress.status = "quiet"
        return progress
    row = _last_step_row(run_dir / STEP_LOG)
    if row is not None:
        progress.status = "training"
        progress.epoch, progress.step, progress.loss = row.get("epoch"), row.get("step"), row.get("loss")
        progress.updated_ago = max(now - (run_dir / STEP_LOG).stat().st_mtime, 0.0)
    return progress


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists() for name in ("model.pt", PROGRESS_FILE, STEP_LOG, "log/train.log")
    )


def experiment_progress(
    exp_dir: Path, expected_runs: Sequence[str] = (), now: Optional[float] = None
) -> List[RunProgress]:
    """Every run folder of ``exp_dir`` (teacher first), then the expected runs not started yet."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise FileNotFoundError(f"experiment folder not found: {exp_dir}")
    found = {p.name: read_run(p, now) for p in sorted(exp_dir.iterdir()) if is_run_dir(p)}
    for run in expected_runs:
        found.setdefault(run, RunProgress(run=run, role=_role(run), status="pending"))
    order = {run: i for i, run in enumerate(expected_runs)}
    return sorted(found.values(), key=lambda r: (r.role != "teacher", order.get(r.run, len(order)), r.run))


def expected_epochs(config: Mapping[str, Any]) -> Dict[str, int]:
    return {role: config["training"][role]["num_epochs"] for role in ("teacher", "student")}


def expected_runs(config: Mapping[str, Any]) -> List[str]:
    """The teacher and every student of the config's grid, as the workflow names their folders."""
    from streamkd.distill.grid import expand_grid

    return [TEACHER_RUN] + [cell.run_name for cell in expand_grid(config["grid"])]


@dataclass
class WorkflowEstimate:
    remaining_run_seconds: float  # training still to do, summed over runs
    wall_seconds: float  # with `parallel` trainings side by side
    unknown: List[str]  # runs whose time cannot be estimated yet


def estimate_rest(runs: Sequence[RunProgress], epochs: Mapping[str, int], parallel: int = 1) -> WorkflowEstimate:
    """Training time left: running runs' ETAs plus pending runs x epochs x measured time per epoch.

    Time per epoch is the mean over runs of the same role that measured one (a student's is
    used for a teacher and the other way round when only one role has been measured).
    """
    measured: Dict[str, List[float]] = {"teacher": [], "student": []}
    for r in runs:
        if r.seconds_per_epoch:
            measured[r.role].append(r.seconds_per_epoch)
    per_epoch = {role: sum(v) / len(v) for role, v in measured.items() if v}
    remaining: List[float] = []
    unknown = []
    for r in runs:
        if r.status == "finished":
            continue
        if r.status in ("training", "quiet") and r.eta_seconds is not None:
            remaining.append(r.eta_seconds)
            continue
        seconds = per_epoch.get(r.role) or next(iter(per_epoch.values()), None)
        total_epochs = r.num_epochs or epochs.get(r.role)
        if seconds is None or total_epochs is None:
            unknown.append(r.run)
            continue
        remaining.append(seconds * (total_epochs - (r.epoch or 0) if r.status != "pending" else total_epochs))
    total = sum(remaining)
    wall = max(total / max(parallel, 1), max(remaining, default=0.0))
    return WorkflowEstimate(total, wall, unknown)


def _fmt(value: Optional[float], pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _duration(seconds: Optional[float]) -> str:
    return "-" if seconds is None else format_seconds(seconds)


def render(runs: Sequence[RunProgress], estimate: Optional[WorkflowEstimate] = None, parallel: int = 1) -> str:
    """The progress view as text: one line per run, then the estimate for the rest."""
    header = ("run", "status", "epoch", "step", "loss", "audio s/s", "ETA", "s/epoch", "updated")
    rows = [header]
    for r in runs:
        epoch = "-" if r.epoch is None else f"{r.epoch}/{r.num_epochs or '?'}"
        updated = "-" if r.updated_ago is None else f"{format_seconds(r.updated_ago)} ago"
        rows.append(
            (
                r.run,
                r.status,
                epoch,
                _fmt(r.step, "{:d}"),
                _fmt(r.loss, "{:.4f}"),
                _fmt(r.audio_rate, "{:.1f}"),
                _duration(r.eta_seconds),
                _fmt(r.seconds_per_epoch, "{:.0f}"),
                updated,
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    counts = {s: sum(r.status == s for r in runs) for s in ("finished", "training", "quiet", "started", "pending")}
    lines.append("")
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if estimate is not None:
        text = (
            f"rest of the workflow's training: {format_seconds(estimate.remaining_run_seconds)} of run time, "
            f"about {format_seconds(estimate.wall_seconds)} with {parallel} training job(s) at a time"
        )
        if estimate.unknown:
            text += f"; not yet estimable: {', '.join(estimate.unknown)}"
        lines.append(text + " (decoding and scoring come on top)")
    return "\n".join(lines)
