"""Training commands: teacher and students, the teacher cache, progress and the machine and KD benchmarks."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Tuple

import click

from streamkd.cli.common import ExistingPath, PathType, layer_list, main, merged_config
from streamkd.cli.support import json_option
from streamkd.distill.config import METHODS
from streamkd.schema import config_default

log = logging.getLogger("streamkd")


@main.command("train")
@click.option("--role", required=True, type=click.Choice(["teacher", "student"]))
@click.option("--train-cuts", required=True, type=ExistingPath)
@click.option("--dev-cuts", required=True, type=ExistingPath)
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option("--out-dir", required=True, type=PathType)
@click.option("--encoder", "encoder_json", required=True, help="JSON object of encoder options.")
@click.option("--optimisation", "optimisation_json", required=True, help="JSON object of optimisation options.")
@click.option("--seed", required=True, type=int)
@click.option("--chunk-size", type=int, default=None, help="Student chunk size in 40 ms encoder frames.")
@click.option("--left-chunks", type=int, default=config_default("model.left_chunks"), show_default=True)
@click.option(
    "--dynamic-chunk",
    "dynamic_chunk_json",
    default=None,
    help="JSON object: the config's grid.dynamic_chunk; trains a dynamic-chunk student (instead of --chunk-size).",
)
@click.option(
    "--threads",
    type=int,
    default=config_default("training.threads"),
    show_default=True,
    help="CPU threads of the job, shared by the processes torchrun starts on this node.",
)
@click.option("--head", "head_json", default=None, help="JSON object of head options (default: a CTC head).")
@click.option(
    "--method",
    default="none",
    show_default=True,
    type=click.Choice(list(METHODS)),
    help="Distillation method of a student.",
)
@click.option("--kd-layers", default=None, help="Student layers to distil (1-based), e.g. 3,6 (layer, aux).")
@click.option("--kd-teacher-layers", default=None, help="Teacher layer for each student layer (default: proportional).")
@click.option(
    "--apc-shift", type=int, default=None, help="Target for position t is teacher frame t+k (aux; layer ablation)."
)
@click.option("--kd", "kd_json", default=None, help="JSON object: the config's kd section (loss, weight, aux, ...).")
@click.option("--teacher", "teacher_checkpoint", type=PathType, default=None, help="Teacher model.pt for KD methods.")
@click.option(
    "--teacher-encoder",
    "teacher_encoder_json",
    default=None,
    help="JSON object: the configured teacher encoder, checked against the checkpoint.",
)
@click.option(
    "--teacher-targets",
    type=ExistingPath,
    default=None,
    help="The teacher cache's cut manifest (kd.teacher_targets: cache), from `streamkd cache-teacher`.",
)
def train(
    role,
    train_cuts,
    dev_cuts,
    bpe_model,
    out_dir,
    encoder_json,
    optimisation_json,
    seed,
    chunk_size,
    left_chunks,
    threads,
    method,
    kd_layers,
    kd_teacher_layers,
    apc_shift,
    kd_json,
    teacher_checkpoint,
    teacher_encoder_json,
    head_json,
    teacher_targets,
    dynamic_chunk_json=None,
) -> None:
    """Train the teacher or a streaming student; resumes from the last checkpoint.

    Data-parallel training runs under torchrun, e.g. ``torchrun --standalone --nproc_per_node 4
    --no_python streamkd train ...`` (one process per GPU; gloo processes on the CPU). On
    SIGTERM or SIGUSR1 training writes a checkpoint and exits with status 128 + the signal.
    """
    from streamkd.training.distributed import threads_per_process
    from streamkd.training.run import train_asr
    from streamkd.training.trainer import TrainingInterrupted

    kd = {"method": method, **(json_option(kd_json, "--kd") if kd_json else {})}
    for key, value in (
        ("student_layers", layer_list(kd_layers, "--kd-layers")),
        ("teacher_layers", layer_list(kd_teacher_layers, "--kd-teacher-layers")),
        ("apc_shift", apc_shift),
    ):
        if value is not None:
            kd[key] = value
    try:
        train_asr(
            role=role,
            train_cuts=train_cuts,
            dev_cuts=dev_cuts,
            bpe_model=bpe_model,
            out_dir=out_dir,
            encoder=json_option(encoder_json, "--encoder"),
            optimisation=json_option(optimisation_json, "--optimisation"),
            seed=seed,
            chunk_size=chunk_size,
            left_chunks=left_chunks,
            threads=threads_per_process(threads),
            kd=kd,
            teacher_checkpoint=teacher_checkpoint,
            teacher_encoder=json_option(teacher_encoder_json, "--teacher-encoder") if teacher_encoder_json else None,
            head=json_option(head_json, "--head") if head_json else None,
            teacher_targets=teacher_targets,
            dynamic_chunk=json_option(dynamic_chunk_json, "--dynamic-chunk") if dynamic_chunk_json else None,
        )
    except TrainingInterrupted as stop:
        log.warning("%s", stop)
        raise SystemExit(128 + stop.signum) from stop


@main.command("cache-teacher")
@click.option("--teacher", "teacher_checkpoint", required=True, type=PathType, help="The teacher's model.pt.")
@click.option("--cuts", required=True, type=ExistingPath, help="Training cuts (with features) to compute targets for.")
@click.option(
    "--out-cuts",
    required=True,
    type=PathType,
    help="Output: the cuts with their targets (.jsonl.gz); targets.lca and summary.json go beside it.",
)
@click.option("--layers", default=None, help="Teacher layers (1-based) to store, e.g. 2,4.")
@click.option(
    "--posteriors/--no-posteriors",
    default=False,
    show_default=True,
    help="Also store the CTC log-posteriors (token KD).",
)
@click.option("--max-duration", default=60.0, show_default=True, help="Seconds of audio per teacher batch.")
@click.option("--threads", type=int, default=1, show_default=True)
def cache_teacher(teacher_checkpoint, cuts, out_cuts, layers, posteriors, max_duration, threads) -> None:
    """Run the frozen teacher once over the training cuts and store its KD targets (lilcom)."""
    import torch

    from streamkd.distill.teacher import load_teacher
    from streamkd.distill.teacher_cache import TargetSpec, build_teacher_cache

    torch.set_num_threads(threads)
    spec = TargetSpec(layer_list(layers, "--layers") or (), posteriors)
    teacher = load_teacher(teacher_checkpoint, teacher_layers=spec.layers)
    build_teacher_cache(teacher, teacher_checkpoint, cuts, out_cuts, spec, max_duration=max_duration)


@main.command("bench-kd-step")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=ExistingPath,
    help="Experiment config: model.student, training.student, kd, and the grid's first chunk size and layer set.",
)
@click.option("--teacher", "teacher_checkpoint", required=True, type=ExistingPath)
@click.option("--train-cuts", required=True, type=ExistingPath)
@click.option("--bpe-model", required=True, type=ExistingPath)
@click.option("--out", required=True, type=PathType, help="Output JSON; a Markdown copy goes beside it.")
@click.option("--num-cuts", default=400, show_default=True)
@click.option("--steps", default=20, show_default=True, help="Timed steps per method and round.")
@click.option("--rounds", default=3, show_default=True)
def bench_kd_step(config_path, teacher_checkpoint, train_cuts, bpe_model, out, num_cuts, steps, rounds) -> None:
    """Seconds per training step of every KD method (live teacher vs teacher cache), one thread."""
    from streamkd.benchmarks.kd_step import benchmark_kd_step, markdown, write_report
    from streamkd.config import load_config

    report = benchmark_kd_step(
        teacher_checkpoint,
        train_cuts,
        bpe_model,
        load_config(config_path),
        num_cuts=num_cuts,
        steps=steps,
        rounds=rounds,
    )
    write_report(report, out)
    click.echo(markdown(report))


@main.command("bench-machine")
@click.option(
    "--config",
    "config_files",
    multiple=True,
    type=ExistingPath,
    help="Config file(s) merged over config.yaml: the student, batch size and KD layers timed.",
)
@click.option("--out", type=PathType, help="Also write the report as JSON here, with a Markdown copy beside it.")
@click.option(
    "--no-vendor-path", is_flag=True, help="Skip the GEMMs on the BLAS library's own code path (a child process)."
)
def bench_machine(config_files, out, no_vendor_path) -> None:
    """Processor, BLAS, float32 GEMM GFLOP/s and the default student's training step on this machine."""
    from streamkd.benchmarks.machine import benchmark_machine, markdown
    from streamkd.utils import write_json, write_text

    report = benchmark_machine(merged_config(config_files), compare_vendor_path=not no_vendor_path)
    if out is not None:
        write_json(out, report)
        write_text(out.with_suffix(".md"), markdown(report))
    click.echo(markdown(report))


@main.command("analyse-aux")
@click.option(
    "--run-dir",
    required=True,
    type=ExistingPath,
    help="An aux (or layer) run: model.pt, train_summary.json, checkpoints/.",
)
@click.option("--teacher", "teacher_checkpoint", required=True, type=ExistingPath)
@click.option("--cuts", required=True, type=ExistingPath, help="Held-out cuts, e.g. the dev set.")
@click.option("--max-shift", default=6, show_default=True, help="Largest shift and attention offset measured (frames).")
@click.option("--out", type=PathType, default=None, help="Also write the measurements here (JSON).")
def analyse_aux(run_dir, teacher_checkpoint, cuts, max_shift, out) -> None:
    """KD distance of a trained branch against teacher frame t+k, and its attention by offset."""
    from streamkd.distill.analysis import analyse_aux_run
    from streamkd.utils import write_json

    result = analyse_aux_run(run_dir, teacher_checkpoint, cuts, max_shift=max_shift)
    if out:
        write_json(out, result)
    click.echo(json.dumps(result, indent=1))


@main.command("average-checkpoints")
@click.option("--run-dir", required=True, type=ExistingPath, help="A run folder: model.pt and checkpoints/epoch-K.pt.")
@click.option("--last", required=True, type=click.IntRange(min=1), help="Average the weights of the last N epochs.")
@click.option("--out", required=True, type=PathType, help="The averaged model, in model.pt's format.")
def average_checkpoints(run_dir: Path, last: int, out: Path) -> None:
    """Average the decodable model's weights over the last N epoch checkpoints (icefall's --avg)."""
    from streamkd.training.averaging import average_last_epochs

    click.echo(str(average_last_epochs(run_dir, last, out)))


@main.command("progress")
@click.argument("exp_dir", type=ExistingPath)
@click.option(
    "--config",
    "config_files",
    multiple=True,
    type=ExistingPath,
    help="The run's --configfile(s), merged over config.yaml: lists runs not started yet and their epochs.",
)
@click.option(
    "--parallel",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Training jobs that run side by side (for the estimate of the rest).",
)
@click.option("--watch", is_flag=True, help="Redraw until every run has finished (Ctrl-C stops).")
@click.option("--interval", default=10.0, show_default=True, help="Seconds between redraws with --watch.")
@click.option(
    "--project",
    is_flag=True,
    help="Instead: the whole grid's training time on this machine, from step times measured now (needs --config).",
)
@click.option(
    "--train-cuts",
    type=PathType,
    default=None,
    help="With --project: the training cuts [default: DATA_DIR/fbank/cuts_train.checked.jsonl.gz].",
)
def progress(
    exp_dir: Path,
    config_files: Tuple[Path, ...],
    parallel: int,
    watch: bool,
    interval: float,
    project: bool,
    train_cuts: Optional[Path],
) -> None:
    """Per run of EXP_DIR: epoch of total, step, recent loss, audio s/s, ETA; and the rest of the workflow."""
    import time

    from streamkd.training.progress import estimate_rest, expected_epochs, expected_runs, experiment_progress, render

    config = merged_config(config_files) if config_files else None
    if project:
        if config is None:
            raise click.UsageError("--project needs the grid's --config file(s)")
        from streamkd.benchmarks.projection import project_grid, render_projection
        from streamkd.cpu import cpu_model

        cuts = train_cuts or Path(config["data_dir"]) / "fbank" / "cuts_train.checked.jsonl.gz"
        click.echo(render_projection(project_grid(config, cuts), parallel, cpu_model()))
        return
    runs_expected = expected_runs(config) if config else []
    epochs = expected_epochs(config) if config else {}
    while True:
        runs = experiment_progress(exp_dir, runs_expected)
        view = render(runs, estimate_rest(runs, epochs, parallel), parallel)
        if not watch:
            click.echo(view)
            return
        click.clear()
        click.echo(f"{exp_dir}  {time.strftime('%H:%M:%S')}\n\n{view}")
        if runs and all(r.status == "finished" for r in runs):
            return
        time.sleep(interval)
