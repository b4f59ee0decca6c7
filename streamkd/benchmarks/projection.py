"""What a grid config will cost to train on this machine, before any of it runs.

Training time of a run = epochs x batches per epoch x seconds per step. Batches per epoch come
from the trainer's own sampler over the training cuts (their durations alone, no features
read); seconds per step are measured here, one thread, per method, by
:func:`streamkd.benchmarks.machine.training_step_seconds` at the config's model sizes and batch
duration. Dev-set validation, decoding and scoring come on top.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping

from streamkd.benchmarks.machine import training_step_seconds
from streamkd.utils import format_seconds


@dataclass
class MethodCost:
    method: str  # teacher, or a student's KD method
    runs: int
    epochs: int
    steps_per_epoch: int
    seconds_per_step: float

    @property
    def run_seconds(self) -> float:
        return self.epochs * self.steps_per_epoch * self.seconds_per_step

    @property
    def total_seconds(self) -> float:
        return self.runs * self.run_seconds


def batches_per_epoch(train_cuts: Path, optimisation: Mapping[str, Any], seed: int = 1) -> int:
    """Batches the trainer's sampler draws from ``train_cuts`` in one epoch (no audio is read)."""
    from streamkd.data.loaders import load_cuts, train_sampler

    cuts = load_cuts(train_cuts, optimisation["max_utterance_seconds"])
    sampler = train_sampler(cuts, optimisation["max_duration"], seed, optimisation.get("num_buckets", 10))
    return sum(1 for _ in sampler)


def project_grid(config: Mapping[str, Any], train_cuts: Path) -> List[MethodCost]:
    """Cost per method of the config's teacher and every student of its grid."""
    from streamkd.distill.grid import expand_grid

    if not Path(train_cuts).is_file():
        raise FileNotFoundError(
            f"training cuts not found: {train_cuts}; the projection counts their batches, so run the data "
            "stages first (snakemake --cores 2 --until check_data, with the same config files)"
        )
    runs = Counter(cell.method for cell in expand_grid(config["grid"]))
    training = config["training"]
    steps = {role: batches_per_epoch(train_cuts, training[role]) for role in ("teacher", "student")}
    costs = [MethodCost("teacher", 1, training["teacher"]["num_epochs"], steps["teacher"], 0.0)]
    costs += [MethodCost(m, n, training["student"]["num_epochs"], steps["student"], 0.0) for m, n in runs.items()]
    for cost in costs:
        cost.seconds_per_step = training_step_seconds(config, cost.method)
    return costs


def render_projection(costs: List[MethodCost], parallel: int, machine: str) -> str:
    header = ("method", "runs", "epochs", "batches/epoch", "s/step", "per run", "total")
    rows = [header] + [
        (
            c.method,
            str(c.runs),
            str(c.epochs),
            str(c.steps_per_epoch),
            f"{c.seconds_per_step:.3f}",
            format_seconds(c.run_seconds),
            format_seconds(c.total_seconds),
        )
        for c in costs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    total = sum(c.total_seconds for c in costs)
    teacher = next(c.run_seconds for c in costs if c.method == "teacher")
    # The teacher trains first (KD students wait for it); the rest shares `parallel` job slots.
    longest_student = max((c.run_seconds for c in costs if c.method != "teacher"), default=0.0)
    wall = teacher + max((total - teacher) / max(parallel, 1), longest_student)
    lines += [
        "",
        f"projected training on {machine}, one thread per run: {format_seconds(total)} of run time; "
        f"about {format_seconds(wall)} with {parallel} training job(s) at a time "
        f"(validation, decoding and scoring come on top)",
    ]
    return "\n".join(lines)
