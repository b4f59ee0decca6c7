"""What distillation costs per training step, with the live teacher and with the teacher cache.

Every method (none, token, layer, aux) trains the same student on the same batches, through
the trainer's own step (data loading, forward, backward, clipping, AdamW), with one thread.
Methods take turns in rounds, so a change in the machine's load hits them all alike. The
result is seconds per step and the ratio to ``none``, per method and mode (``live``: the
frozen teacher runs in every step; ``cache``: its targets come with the batch), plus what
building the cache costs against one teacher epoch over the same cuts.

Times are the process's CPU seconds (``time.process_time``): with one thread that is what a
step costs on an idle core, and it stays comparable when other jobs share the machine. Wall
seconds are reported beside them.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import torch

from streamkd.cpu import cpu_model
from streamkd.data.loaders import cut_features, load_cuts
from streamkd.data.tokenizer import Tokenizer
from streamkd.distill.config import KdConfig
from streamkd.distill.grid import representative_chunk_size
from streamkd.distill.teacher import load_teacher
from streamkd.distill.teacher_cache import TargetSpec, build_teacher_cache, open_teacher_cache
from streamkd.model.asr import build_asr_model
from streamkd.training.config import OptimisationConfig
from streamkd.training.objectives import DistillationObjective, asr_objective
from streamkd.training.trainer import Trainer
from streamkd.utils import write_json, write_text

log = logging.getLogger(__name__)

METHODS = ("none", "token", "layer", "aux")


@dataclass
class Contender:
    """One method in one mode, with its own trainer and batch stream."""

    method: str
    mode: str
    trainer: Trainer
    batches: Iterator
    seconds: float = 0.0  # CPU
    wall_seconds: float = 0.0
    steps: int = 0

    def run(self, steps: int, timed: bool = True) -> None:
        start, wall_start = time.process_time(), time.perf_counter()
        for _ in range(steps):
            self.trainer._step([next(self.batches)])
        if timed:
            self.seconds += time.process_time() - start
            self.wall_seconds += time.perf_counter() - wall_start
            self.steps += steps


def _student(encoder: Mapping[str, Any], chunk_size: int, vocab: int, cuts):
    torch.manual_seed(0)
    model = build_asr_model({**encoder, "causal": True, "chunk_size": chunk_size, "left_chunks": -1}, vocab)
    model.encoder.cmvn.fit(cut_features(c) for c in cuts.subset(first=200))
    return model


def _batches(trainer: Trainer) -> Iterator:
    """An endless stream of the trainer's own training batches (the same for every contender)."""
    epoch = 1
    while True:
        _, iterators = trainer._train_loaders(epoch)
        yield from iterators[0]
        epoch += 1


def _teacher_epoch_seconds(teacher_path: Path, tokenizer, cuts, opt, work: Path) -> float:
    """One epoch of teacher training over ``cuts`` (what one cache build is compared with)."""
    frozen = load_teacher(teacher_path)
    torch.manual_seed(0)
    model = build_asr_model(frozen.model.encoder.config.to_dict(), frozen.model.vocab_size)
    model.encoder.cmvn.load_state_dict(frozen.model.encoder.cmvn.state_dict())
    trainer = Trainer(asr_objective(model), tokenizer, cuts, cuts, work / "teacher", opt, seed=1)
    trainer.objective.train()
    _, iterators = trainer._train_loaders(1)
    start = time.process_time()
    for raw in iterators[0]:
        trainer._step([raw])
    return time.process_time() - start


def benchmark_kd_step(
    teacher_path: Path,
    train_cuts: Path,
    bpe_model: Path,
    config: Mapping[str, Any],
    num_cuts: int = 400,
    steps: int = 20,
    rounds: int = 3,
    warmup: int = 3,
    work_dir: Optional[Path] = None,
) -> Dict[str, Any]:
    """Seconds per step of every method, live and cached, and the cache's build cost."""
    torch.set_num_threads(1)
    tokenizer = Tokenizer(bpe_model)
    opt = OptimisationConfig.from_dict({**config["training"]["student"], "log_interval": 10**9})
    cuts = load_cuts(train_cuts, opt.max_utterance_seconds).subset(first=num_cuts).to_eager()
    encoder = config["model"]["student"]
    chunk_size = representative_chunk_size(config["grid"])
    layers = tuple(config["grid"].get("kd_layers", [[1]])[0])
    kd_options = {k: v for k, v in config["kd"].items() if k != "teacher_targets"}
    work = Path(work_dir or tempfile.mkdtemp(prefix="kd-bench-"))
    teacher = load_teacher(teacher_path)

    cache_spec = TargetSpec(layers=range(1, teacher.num_layers + 1), posteriors=True)
    subset_path = work / "cuts.jsonl.gz"
    cuts.to_file(subset_path)
    start = time.process_time()
    build_teacher_cache(teacher, teacher_path, subset_path, work / "cache" / "cuts.jsonl.gz", cache_spec)
    cache_seconds = time.process_time() - start
    teacher_epoch = _teacher_epoch_seconds(teacher_path, tokenizer, cuts, opt, work)

    contenders: List[Contender] = []
    for method in METHODS:
        for mode in ("live", "cache") if method != "none" else ("live",):
            student = _student(encoder, chunk_size, tokenizer.vocab_size, cuts)
            fields: List[str] = []
            train = cuts
            if method == "none":
                objective = asr_objective(student)
            else:
                weight = kd_options.get("weight", 1.0)
                kd = KdConfig.from_dict(
                    {
                        **kd_options,
                        "method": method,
                        "teacher_targets": mode,
                        "weight": weight[method] if isinstance(weight, Mapping) else weight,
                        **(
                            {"student_layers": layers, "apc_shift": 0 if method == "aux" else None}
                            if method != "token"
                            else {}
                        ),
                    }
                )
                objective = DistillationObjective(student, teacher, kd, spec_augment=opt.spec_augment)
                if mode == "cache":
                    fields = objective.target_spec.fields
                    train = open_teacher_cache(
                        work / "cache" / "cuts.jsonl.gz", teacher_path, objective.target_spec, [c.id for c in cuts]
                    )
            trainer = Trainer(
                objective, tokenizer, train, train, work / f"{method}-{mode}", opt, seed=1, teacher_fields=fields
            )
            trainer.objective.train()
            contenders.append(Contender(method, mode, trainer, _batches(trainer)))
    for c in contenders:
        c.run(warmup, timed=False)
    for r in range(rounds):
        for c in contenders:
            c.run(steps)
        log.info("round %d/%d done", r + 1, rounds)

    base = next(c for c in contenders if c.method == "none")
    base_sps = base.seconds / base.steps
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    for c in contenders:
        sps = c.seconds / c.steps
        results.setdefault(c.method, {})[c.mode] = {
            "seconds_per_step": round(sps, 4),
            "ratio": round(sps / base_sps, 3),
            "wall_seconds_per_step": round(c.wall_seconds / c.steps, 4),
        }
    return {
        "machine": {
            "processor": cpu_model(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "setup": {
            "cuts": num_cuts,
            "steps_per_method": steps * rounds,
            "rounds": rounds,
            "warmup_steps": warmup,
            "max_duration": opt.max_duration,
            "student": dict(encoder),
            "chunk_size": chunk_size,
            "kd_layers": list(layers),
            "kd_loss": kd_options.get("loss", "l1_cos"),
        },
        "results": results,
        "cache": {
            "build_seconds": round(cache_seconds, 2),
            "teacher_epoch_seconds": round(teacher_epoch, 2),
            "build_vs_teacher_epoch": round(cache_seconds / teacher_epoch, 3),
        },
    }


def markdown(report: Mapping[str, Any]) -> str:
    """The benchmark as a Markdown table (seconds per step and ratio to none)."""
    rows = ["| method | live CPU s/step | live ratio | cache CPU s/step | cache ratio |", "|---|---|---|---|---|"]
    for method, modes in report["results"].items():
        live, cache = modes.get("live", {}), modes.get("cache", {})
        rows.append(
            f"| {method} | {live.get('seconds_per_step', '–')} | {live.get('ratio', '–')} | "
            f"{cache.get('seconds_per_step', '–')} | {cache.get('ratio', '–')} |"
        )
    c = report["cache"]
    setup = report["setup"]
    return "\n".join(
        [
            f"KD cost per training step: {setup['steps_per_method']} steps per method in {setup['rounds']} rounds, "
            f"{setup['cuts']} cuts, batches of {setup['max_duration']} s, {report['machine']['threads']} thread, "
            f"torch {report['machine']['torch']}; CPU seconds of the training process, ratios to `none`.",
            "",
            *rows,
            "",
            f"Building the cache for these cuts: {c['build_seconds']} s; one teacher epoch over them: "
            f"{c['teacher_epoch_seconds']} s (ratio {c['build_vs_teacher_epoch']}).",
            "",
        ]
    )


def write_report(report: Mapping[str, Any], out_json: Path) -> None:
    write_json(out_json, report)
    write_text(Path(out_json).with_suffix(".md"), markdown(report))
