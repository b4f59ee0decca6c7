"""How fast this machine runs streamkd's arithmetic: processor, BLAS, GEMM rates, training steps.

Everything is measured in one run, so the ratios it prints compare like with like:

- float32 GEMM GFLOP/s at a large square size and at the default model's own shapes, on one
  thread and on every core, as the process runs it (with :mod:`streamkd.cpu`'s BLAS choice);
- the same GEMMs in a child process that keeps the BLAS library's own choice of code path
  (``MKL_DEBUG_CPU_TYPE`` set empty), where that choice differs: the speed-up of the fix;
- one training step of the default student, ``none`` and ``aux`` (targets from the teacher
  cache, as the default run trains), on synthetic batches of the default batch size, one thread.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from streamkd.cpu import MKL_CPU_TYPE_VARIABLE, cpu_model, cpu_vendor, cpuinfo

# (M, K, N): a large square product, then the default model's own products for a batch of
# 512 encoder frames of width 96 (attention projections, the FFN's 96 -> 384 and 384 -> 96).
GEMM_SHAPES: Tuple[Tuple[int, int, int], ...] = ((2048, 2048, 2048), (512, 96, 384), (512, 384, 96), (512, 96, 96))


def blas_info() -> Dict[str, Optional[str]]:
    """The BLAS torch was built with, its version where the build says, and torch's CPU capability."""
    shown = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", shown)
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", shown)
    openblas = re.search(r"OpenBLAS ([\d.]+)", shown)
    capability = None
    if hasattr(torch.backends, "cpu") and hasattr(torch.backends.cpu, "get_cpu_capability"):
        capability = torch.backends.cpu.get_cpu_capability()
    else:
        found = re.search(r"CPU capability usage: (\w+)", shown)
        capability = found.group(1) if found else None
    version = mkl.group(1) if mkl else openblas.group(1) if openblas else None
    return {"blas": blas.group(1) if blas else None, "blas_version": version, "cpu_capability": capability}


def gemm_gflops(m: int, k: int, n: int, threads: int, min_seconds: float = 0.3) -> float:
    """Median GFLOP/s of ``A @ B`` (float32, M x K times K x N) over five timed bursts."""
    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    start, reps = time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds / 5 or reps < 2:  # size a burst
        a @ b
        reps += 1
    rates = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        rates.append(2 * m * k * n * reps / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def gemm_table(shapes: Sequence[Tuple[int, int, int]], thread_counts: Sequence[int]) -> List[Dict[str, Any]]:
    return [
        {"shape": "x".join(map(str, shape)), "threads": t, "gflops": round(gemm_gflops(*shape, threads=t), 1)}
        for shape in shapes
        for t in thread_counts
    ]


def _benchmark_in_child(environ: Mapping[str, str], config: Mapping[str, Any]) -> Dict[str, Any]:
    """The benchmark from a fresh process with ``environ`` (MKL fixes its code path per process)."""
    code = (
        "import json, sys; from streamkd.benchmarks.machine import benchmark_machine; "
        "json.dump(benchmark_machine(json.load(sys.stdin), compare_vendor_path=False), sys.stdout)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(config),
        env=dict(environ),
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return json.loads(done.stdout)


def _synthetic_batch(batch_seconds: float, utterance_seconds: float, vocab: int, seed: int = 0):
    """Random 80-dim features and token targets shaped like one default training batch."""
    gen = torch.Generator().manual_seed(seed)
    count = max(1, int(batch_seconds // utterance_seconds))
    frames = int(utterance_seconds * 100)
    feats = torch.randn(count, frames, 80, generator=gen)
    feat_lens = torch.full((count,), frames, dtype=torch.int64)
    tokens = max(1, frames // 12)  # ~8 BPE pieces per second of speech at vocab 100
    targets = [torch.randint(1, vocab, (tokens,), generator=gen).tolist() for _ in range(count)]
    return feats, feat_lens, targets


def training_step_seconds(
    config: Mapping[str, Any], method: str, steps: int = 8, warmup: int = 2, vocab: int = 100
) -> float:
    """Median wall seconds of one optimiser step (one thread) of a run of the config.

    ``method`` is ``teacher`` (the full-context teacher's own training) or a student's KD
    method. KD students read their teacher's outputs as a prepared batch field, as they do
    from the teacher cache, so the step holds exactly what a cached KD step computes.
    """
    from streamkd.distill.config import KdConfig
    from streamkd.distill.grid import representative_chunk_size
    from streamkd.distill.teacher import FrozenTeacher
    from streamkd.distill.teacher_cache import POSTERIOR_FIELD, layer_field
    from streamkd.model.asr import build_asr_model
    from streamkd.training.objectives import DistillationObjective, asr_objective

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model_cfg, grid = config["model"], config["grid"]
    role = "teacher" if method == "teacher" else "student"
    head = model_cfg.get("head")
    feats, feat_lens, targets = _synthetic_batch(config["training"][role]["max_duration"], 3.0, vocab)
    teacher_targets = None
    if method == "teacher":
        objective = asr_objective(build_asr_model({**model_cfg["teacher"], "causal": False}, vocab, head))
    else:
        streaming = {
            "causal": True,
            "chunk_size": representative_chunk_size(grid),
            "left_chunks": model_cfg["left_chunks"],
        }
        student = build_asr_model({**model_cfg["student"], **streaming}, vocab, head)
        if method == "none":
            objective = asr_objective(student)
        else:
            kd_options = {k: v for k, v in config["kd"].items() if k not in ("teacher_targets", "weight")}
            layers = {"student_layers": tuple(grid["kd_layers"][0]), "apc_shift": 0} if method != "token" else {}
            kd = KdConfig.from_dict({**kd_options, "method": method, **layers})
            teacher = FrozenTeacher(build_asr_model({**model_cfg["teacher"], "causal": False}, vocab, head))
            objective = DistillationObjective(student, teacher, kd, spec_augment=False)
            log_probs, lengths, hidden = teacher(feats, feat_lens)
            teacher_targets = {"lengths": lengths, POSTERIOR_FIELD: log_probs}
            teacher_targets.update({layer_field(m): hidden[m - 1] for m in range(1, len(hidden) + 1)})
    objective.train()
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, _, _ = objective(feats, feat_lens, targets, teacher_targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def benchmark_machine(config: Mapping[str, Any], compare_vendor_path: bool = True) -> Dict[str, Any]:
    """The whole benchmark as one JSON-ready dict."""
    info = cpuinfo()
    cores = os.cpu_count() or 1
    thread_counts = sorted({1, cores})
    blas_env = os.environ.get(MKL_CPU_TYPE_VARIABLE)
    report: Dict[str, Any] = {
        "machine": {
            "vendor": cpu_vendor(info),
            "model": cpu_model(info),
            "cores": cores,
            "flags": sorted(f for f in info.get("flags", "").split() if re.match(r"avx|amx|fma", f)),
        },
        "software": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            **blas_info(),
            MKL_CPU_TYPE_VARIABLE: blas_env,
        },
        "gemm": gemm_table(GEMM_SHAPES, thread_counts),
    }
    # Methods take turns, twice; the faster round counts (the first call of a process pays for
    # warming its allocator and caches).
    rounds = [{m: training_step_seconds(config, m) for m in ("none", "aux")} for _ in range(2)]
    steps = {m: min(r[m] for r in rounds) for m in ("none", "aux")}
    report["training_step"] = {
        "threads": 1,
        "batch_seconds": config["training"]["student"]["max_duration"],
        "seconds": {m: round(s, 4) for m, s in steps.items()},
        "aux_vs_none": round(steps["aux"] / steps["none"], 3),
    }
    if compare_vendor_path and blas_env:
        # The same measurements with the BLAS library's own choice of path: what runs without the fix.
        vendor = _benchmark_in_child({**os.environ, MKL_CPU_TYPE_VARIABLE: ""}, config)
        for row, other in zip(report["gemm"], vendor["gemm"]):
            row["gflops_vendor_path"] = other["gflops"]
            row["speedup"] = round(row["gflops"] / other["gflops"], 2)
        report["training_step"]["seconds_vendor_path"] = vendor["training_step"]["seconds"]
        report["training_step"]["speedup"] = {
            m: round(vendor["training_step"]["seconds"][m] / s, 2) for m, s in steps.items()
        }
    return report


def markdown(report: Mapping[str, Any]) -> str:
    m, s, step = report["machine"], report["software"], report["training_step"]
    with_vendor = any("gflops_vendor_path" in r for r in report["gemm"])
    head = "| GEMM M x K x N | threads | GFLOP/s |" + (" GFLOP/s, BLAS's own path | speed-up |" if with_vendor else "")
    rule = "|---|---|---|" + ("---|---|" if with_vendor else "")
    rows = [
        f"| {r['shape']} | {r['threads']} | {r['gflops']} |"
        + (f" {r['gflops_vendor_path']} | {r['speedup']} |" if with_vendor else "")
        for r in report["gemm"]
    ]
    return "\n".join(
        [
            f"Processor: {m['model']} ({m['vendor']}), {m['cores']} cores; {', '.join(m['flags'])}",
            f"Software: Python {s['python']}, torch {s['torch']}, BLAS {s['blas']} {s['blas_version'] or ''}, "
            f"torch CPU capability {s['cpu_capability']}, {MKL_CPU_TYPE_VARIABLE}={s[MKL_CPU_TYPE_VARIABLE]!r}",
            "",
            head,
            rule,
            *rows,
            "",
            f"Training step of the default student, {step['batch_seconds']} s batches, {step['threads']} thread: "
            f"none {step['seconds']['none']} s, aux {step['seconds']['aux']} s (aux/none {step['aux_vs_none']})"
            + (
                f"; on the BLAS's own path none {step['seconds_vendor_path']['none']} s, "
                f"aux {step['seconds_vendor_path']['aux']} s (speed-up {step['speedup']['none']} and "
                f"{step['speedup']['aux']})."
                if "speedup" in step
                else "."
            ),
            "",
        ]
    )
