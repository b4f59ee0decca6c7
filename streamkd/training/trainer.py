"""One trainer for every model: the teacher, the baseline student and distilled students.

What differs between them is the objective (a module that returns a loss and knows which of
its parts is deployed); the loop, data parallelism, checkpointing, resumption and logging are
shared.

Data parallelism
    Under ``torchrun`` every process trains a replica wrapped in DistributedDataParallel
    (one process per GPU with NCCL, or CPU processes with gloo). The data are split into
    ``world_size * accum_grad`` *slots*: slot ``s`` is lhotse's dynamic bucketing sampler
    with ``world_size=num_slots, rank=s``, and process ``r`` feeds slots
    ``r*accum_grad ... r*accum_grad + accum_grad - 1`` one after the other within a step,
    summing their gradients. An optimiser step therefore sees the same global batch (one
    batch of every slot) whether it runs as 2 processes x 1 batch or 1 process x 2 batches,
    and the gradient is normalised by the global number of encoder frames, so both compute
    the gradient of the same per-frame loss (up to floating-point summation order).

Checkpoints and resumption
    Rank 0 writes ``checkpoints/epoch-N.pt`` after every epoch and, with
    ``checkpoint_interval > 0``, ``checkpoints/step-K.pt`` every that many optimiser steps
    (only the newest step checkpoint is kept). A checkpoint holds the objective, the
    optimiser, the loop state, every process's RNG states and the samplers' positions
    (lhotse ``state_dict()``), so a run that is killed and started again continues from the
    last checkpoint and, on the same hardware and settings, finishes with exactly the
    parameters of an uninterrupted run. SIGTERM and SIGUSR1 (what SLURM sends on
    pre-emption, ``scancel`` or ahead of the time limit with ``--signal``) make every process
    stop after the current step, write a checkpoint and raise :class:`TrainingInterrupted`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from lhotse import CutSet
from torch.nn.parallel import DistributedDataParallel

from streamkd.cpu import cpu_model, mkl_settings
from streamkd.data.loaders import Batch, eval_dataloader, train_dataloader, unpack_batch
from streamkd.data.tokenizer import Tokenizer
from streamkd.model.checkpoint import save_model, weights_digest
from streamkd.training.config import OptimisationConfig
from streamkd.training.distributed import DistributedContext
from streamkd.training.monitor import TrainingMonitor
from streamkd.training.precision import autocast, check_precision, make_grad_scaler
from streamkd.utils import atomic_path, file_digest, format_seconds, source_commit, write_json

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "streamkd-train-checkpoint-v2"
STEP_LOG = "train_steps.jsonl"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainingInterrupted(RuntimeError):
    """Training stopped on a signal after writing a checkpoint; running again resumes it."""

    def __init__(self, signum: int, checkpoint: Path):
        self.signum = signum
        self.checkpoint = checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name}; resume from {checkpoint} by running again")


@dataclass
class TrainState:
    epoch: int = 0  # number of finished epochs
    step: int = 0  # optimiser steps taken
    train_seconds: float = 0.0
    # CPU seconds of this (rank-0) process: what the run costs whatever else shares the machine.
    train_cpu_seconds: float = 0.0
    history: List[Dict[str, float]] = field(default_factory=list)
    # Progress within the epoch in progress (all zero at an epoch boundary).
    epoch_steps: int = 0
    epoch_loss: float = 0.0  # summed over the global batches of the epoch so far
    epoch_frames: float = 0.0
    epoch_audio_seconds: float = 0.0
    steps_per_epoch: Optional[int] = None  # known once an epoch has finished
    skipped_steps: int = 0  # optimiser steps skipped for non-finite gradients


def _rng_state(device: torch.device) -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def latest_checkpoint(ckpt_dir: Path) -> Optional[Path]:
    """The checkpoint a restarted run continues from: the newest epoch or step checkpoint."""
    pointer = ckpt_dir / "latest"
    if pointer.is_file():
        target = ckpt_dir / pointer.read_text().strip()
        if target.is_file():
            return target
        log.warning("%s names %s, which does not exist; looking for epoch checkpoints", pointer, target)
    # Runs from before step checkpoints existed have only epoch-N.pt files.
    ckpts = sorted(ckpt_dir.glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    return ckpts[-1] if ckpts else None


@dataclass
class StepResult:
    """Global (all-process) sums of one optimiser step."""

    loss: float
    frames: float
    audio_seconds: float
    stats: Dict[str, float]  # per frame
    lr: float
    stop: bool  # some process was asked to stop


class _StopRequest:
    """Remembers the first stop signal; installed only in the main thread of the process."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            log.warning("received %s: stopping after this step and writing a checkpoint", signal.Signals(signum).name)
            self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(
        self,
        objective: torch.nn.Module,
        tokenizer: Tokenizer,
        train_cuts: CutSet,
        dev_cuts: CutSet,
        out_dir: Path,
        config: OptimisationConfig,
        seed: int,
        meta: Optional[Dict[str, Any]] = None,
        dist: Optional[DistributedContext] = None,
        teacher_fields: Sequence[str] = (),
    ):
        self._owns_dist = dist is None
        self.dist = dist if dist is not None else DistributedContext.from_env()
        # Training cuts from a teacher cache carry these fields; batches then bring the targets.
        self.teacher_fields = list(teacher_fields)
        self.device = self.dist.device
        self.objective = objective.to(self.device)
        self.tokenizer = tokenizer
        self.train_cuts = train_cuts
        self.dev_cuts = dev_cuts
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.config = config
        self.seed = seed
        self.meta = dict(meta or {})
        self.params = [p for p in objective.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.peak_lr, weight_decay=config.weight_decay)
        check_precision(config.precision, self.device)
        self.scaler = make_grad_scaler(config.precision, self.device)
        self.state = TrainState()
        self.train_hours = sum(c.duration for c in train_cuts) / 3600
        if self.dist.is_distributed:
            self.model: torch.nn.Module = DistributedDataParallel(
                self.objective,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # An objective with parameters that some steps leave unused must say so.
                find_unused_parameters=getattr(objective, "ddp_find_unused_parameters", False),
            )
        else:
            self.model = self.objective
        self.num_slots = self.dist.world_size * config.accum_grad
        self.local_slots = [self.dist.rank * config.accum_grad + j for j in range(config.accum_grad)]
        self._resume_samplers: Optional[List[Dict[str, Any]]] = None
        self._resume_rng: Optional[Dict[str, Any]] = None
        self._stop = _StopRequest()
        # TensorBoard events and progress.json for `streamkd progress` (rank 0 only).
        self.monitor = TrainingMonitor(
            self.out_dir, config.num_epochs, self.train_hours * 3600, enabled=self.dist.is_main
        )

    # -- checkpoints -------------------------------------------------------------------------

    def _save_checkpoint(self, name: str, samplers: Optional[List[Any]] = None) -> Path:
        """Write ``checkpoints/<name>`` (rank 0) with every process's RNG and sampler states.

        A collective call: every process must make it at the same point.
        """
        rngs = self.dist.all_gather_object(_rng_state(self.device))
        sampler_states = None
        if samplers is not None:
            local = [(slot, s.state_dict()) for slot, s in zip(self.local_slots, samplers)]
            sampler_states = [None] * self.num_slots
            for per_rank in self.dist.all_gather_object(local):
                for slot, sd in per_rank:
                    sampler_states[slot] = sd
        path = self.ckpt_dir / name
        if self.dist.is_main:
            payload = {
                "format": CHECKPOINT_FORMAT,
                "objective": self.objective.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "state": asdict(self.state),
                "rng": rngs,
                "samplers": sampler_states,
                "world_size": self.dist.world_size,
                "accum_grad": self.config.accum_grad,
            }
            with atomic_path(path) as tmp:
                torch.save(payload, tmp)
            with atomic_path(self.ckpt_dir / "latest") as tmp:
                tmp.write_text(name + "\n")
            # Keep every epoch checkpoint but only the newest step checkpoint.
            for old in self.ckpt_dir.glob("step-*.pt"):
                if old.name != name:
                    old.unlink()
            log.info(
                "saved checkpoint %s (step %d, %s)",
                path,
                self.state.step,
                f"epoch {self.state.epoch + 1}, batch {self.state.epoch_steps}"
                if self.state.epoch_steps
                else f"end of epoch {self.state.epoch}",
            )
        self.dist.barrier()
        return path

    def _maybe_resume(self) -> None:
        latest = latest_checkpoint(self.ckpt_dir)
        if latest is None:
            return
        payload = torch.load(latest, map_location="cpu", weights_only=False)
        self.objective.load_state_dict(payload["objective"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.state = TrainState(**payload["state"])
        if "rng" in payload:
            rngs = payload["rng"]
        else:  # the epoch checkpoints of earlier versions
            rngs = [{"torch": payload["torch_rng"], "numpy": payload["numpy_rng"], "python": payload["python_rng"]}]
        same_layout = payload.get("world_size", 1) == self.dist.world_size
        if not same_layout:
            log.warning(
                "%s was written by %d process(es), this run has %d: training continues from it, "
                "but not bit-identically to an uninterrupted run",
                latest,
                payload.get("world_size", 1),
                self.dist.world_size,
            )
        rng = rngs[self.dist.rank] if same_layout else rngs[0]
        samplers = payload.get("samplers")
        saved_slots = payload.get("world_size", 1) * payload.get("accum_grad", 1)
        if self.state.epoch_steps and (samplers is None or saved_slots != self.num_slots):
            log.warning(
                "%s stopped mid-epoch with %d data slot(s) and this run has %d: epoch %d restarts "
                "from its first batch (weights, optimiser and step count are kept)",
                latest,
                saved_slots,
                self.num_slots,
                self.state.epoch + 1,
            )
            self.state.epoch_steps = 0
            self.state.epoch_loss = self.state.epoch_frames = self.state.epoch_audio_seconds = 0.0
            samplers = None
        if self.state.epoch_steps:
            # The loader iterators of the epoch are created first (which draws from the torch
            # RNG), then the RNG states are put back as they were when the checkpoint was taken.
            self._resume_samplers = [samplers[slot] for slot in self.local_slots]
            self._resume_rng = rng
        else:
            _set_rng_state(rng, self.device)
        self._truncate_step_log()
        log.info(
            "resumed from %s (epoch %d finished, step %d, %d step(s) into the next epoch)",
            latest,
            self.state.epoch,
            self.state.step,
            self.state.epoch_steps,
        )

    # -- step log ----------------------------------------------------------------------------

    def _truncate_step_log(self) -> None:
        """Drop the steps that a resumed run is about to repeat."""
        path = self.out_dir / STEP_LOG
        if not self.dist.is_main or not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= self.state.step]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept))

    def _log_step(self, row: Dict[str, Any]) -> None:
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / STEP_LOG, "a") as f:
                f.write(json.dumps(row) + "\n")
            self.monitor.on_step(row, self.state)

    # -- loop --------------------------------------------------------------------------------

    def _set_lr(self) -> float:
        lr = self.config.lr_at(self.state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _loss(self, batch: Batch, module: Optional[torch.nn.Module] = None):
        targets = self.tokenizer.encode(batch.texts)
        batch = batch.to(self.device)
        if batch.teacher is not None:
            return (module or self.objective)(batch.feats, batch.feat_lens, targets, teacher_targets=batch.teacher)
        return (module or self.objective)(batch.feats, batch.feat_lens, targets)

    def _train_loaders(self, epoch: int) -> Tuple[List[Any], List[Iterator]]:
        # An objective that augments its own input (for a clean teacher copy) gets clean batches.
        dataset_augments = self.config.spec_augment and not getattr(self.objective, "applies_spec_augment", False)
        loaders = [
            train_dataloader(
                self.train_cuts,
                self.config.max_duration,
                seed=self.seed,
                spec_augment=dataset_augments,
                world_size=self.num_slots,
                rank=slot,
                num_buckets=self.config.num_buckets,
                teacher_fields=self.teacher_fields,
            )
            for slot in self.local_slots
        ]
        for i, loader in enumerate(loaders):
            loader.sampler.set_epoch(epoch)
            if self._resume_samplers is not None:
                loader.sampler.load_state_dict(copy.deepcopy(self._resume_samplers[i]))
        self._resume_samplers = None
        iterators = [iter(loader) for loader in loaders]
        if self._resume_rng is not None:
            _set_rng_state(self._resume_rng, self.device)
            self._resume_rng = None
        return [loader.sampler for loader in loaders], iterators

    def _next_global_batch(self, iterators: List[Iterator]) -> Optional[List[dict]]:
        batches = []
        for it in iterators:
            try:
                batches.append(next(it))
            except StopIteration:
                batches.append(None)
        if all(b is None for b in batches):
            return None
        if any(b is None for b in batches):
            raise RuntimeError("data slots ran out of batches at different steps")
        return batches

    def _step(self, micro_batches: List[dict]) -> StepResult:
        """One optimiser step over this process's micro-batches; returns global sums."""
        lr = self._set_lr()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, frames_sum, audio_sum = 0.0, 0.0, 0.0
        stat_sums: Dict[str, float] = {}
        for j, raw in enumerate(micro_batches):
            batch = unpack_batch(raw)
            last = j == len(micro_batches) - 1
            # Gradients are exchanged between processes once per step, after the last micro-batch.
            sync = contextlib.nullcontext() if last or not self.dist.is_distributed else self.model.no_sync()
            with sync:
                with autocast(self.config.precision, self.device):
                    loss, stats, frames = self._loss(batch, self.model)
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            loss_sum += loss.item()
            frames_sum += frames
            audio_sum += float(batch.feat_lens.sum()) / 100
            for key, value in stats.items():
                stat_sums[key] = stat_sums.get(key, 0.0) + value * frames
        keys = sorted(stat_sums)
        stop = 1.0 if self._stop.signum is not None else 0.0
        totals = self.dist.all_reduce_sum([loss_sum, frames_sum, audio_sum, stop] + [stat_sums[k] for k in keys])
        loss_total, frames_total, audio_total, stop_total = totals[:4]
        # DDP averaged the gradients of the summed losses over processes; scale them to the
        # gradient of the global per-frame loss.
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        scale = self.dist.world_size / max(frames_total, 1.0)
        for p in self.params:
            if p.grad is not None:
                p.grad.mul_(scale)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        self._optimizer_step(bool(torch.isfinite(grad_norm)))
        self.state.step += 1
        global_stats = {k: v / max(frames_total, 1.0) for k, v in zip(keys, totals[4:])}
        return StepResult(loss_total, frames_total, audio_total, global_stats, lr, stop_total > 0)

    def _optimizer_step(self, finite: bool) -> None:
        """Step, unless the gradients are not finite: then skip it, count it and say so.

        Every process sees the same all-reduced gradients, so all skip the same steps. With
        fp16 the scaler also lowers its scale after an overflow.
        """
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips by itself on inf/NaN
            self.scaler.update()
        elif finite:
            self.optimizer.step()
        if not finite:
            self.state.skipped_steps += 1
            log.warning(
                "step %d: non-finite gradients, optimiser step skipped (%d so far)%s",
                self.state.step + 1,
                self.state.skipped_steps,
                f"; loss scale now {self.scaler.get_scale():g}" if self.scaler is not None else "",
            )

    def _train_epoch(self, epoch: int) -> float:
        """Train to the end of the epoch and return its loss per frame.

        Raises :class:`TrainingInterrupted` (after a checkpoint) when a stop signal arrived.
        """
        self.objective.train()
        samplers, iterators = self._train_loaders(epoch)
        start = last = time.time()
        last_cpu = time.process_time()
        audio_at_start = self.state.epoch_audio_seconds
        while True:
            micro_batches = self._next_global_batch(iterators)
            if micro_batches is None:
                break
            result = self._step(micro_batches)
            st = self.state
            st.epoch_steps += 1
            st.epoch_loss += result.loss
            st.epoch_frames += result.frames
            st.epoch_audio_seconds += result.audio_seconds
            now, now_cpu = time.time(), time.process_time()
            st.train_seconds += now - last
            st.train_cpu_seconds += now_cpu - last_cpu
            last, last_cpu = now, now_cpu
            stats, lr = result.stats, result.lr
            self._log_step(
                {
                    "step": st.step,
                    "epoch": epoch,
                    "loss": result.loss / max(result.frames, 1.0),
                    "frames": result.frames,
                    "lr": lr,
                    **stats,
                }
            )
            if st.epoch_steps % self.config.log_interval == 0:
                elapsed = time.time() - start
                rate = (st.epoch_audio_seconds - audio_at_start) / max(elapsed, 1e-9)
                eta = (self.train_hours * 3600 - st.epoch_audio_seconds) / max(rate, 1e-9)
                log.info(
                    "epoch %d/%d batch %d%s (step %d) loss/frame=%.4f (%s) lr=%.2e | %.1f s audio/s | epoch ETA %s",
                    epoch,
                    self.config.num_epochs,
                    st.epoch_steps,
                    f"/{st.steps_per_epoch}" if st.steps_per_epoch else "",
                    st.step,
                    st.epoch_loss / max(st.epoch_frames, 1.0),
                    " ".join(f"{k}={v:.4f}" for k, v in stats.items()),
                    lr,
                    rate,
                    format_seconds(max(eta, 0.0)),
                )
            if result.stop:
                path = self._save_checkpoint(f"step-{st.step}.pt", samplers)
                raise TrainingInterrupted(self._stop.signum or signal.SIGTERM, path)
            if self.config.checkpoint_interval and st.step % self.config.checkpoint_interval == 0:
                self._save_checkpoint(f"step-{st.step}.pt", samplers)
        if self.state.epoch_steps == 0:
            raise ValueError("the training set produced no batches (all utterances filtered out?)")
        return self.state.epoch_loss / max(self.state.epoch_frames, 1.0)

    @torch.no_grad()
    def validate(self) -> Tuple[float, float]:
        """(Loss, ASR loss) per frame on the dev set; each process scores every world_size-th utterance.

        The dev set has no cached targets: a KD objective runs its frozen teacher here. The
        ASR loss alone is what compares a KD student with the baseline.
        """
        self.objective.eval()
        shard = self.dev_cuts
        if self.dist.is_distributed:
            shard = CutSet.from_cuts(
                c for i, c in enumerate(self.dev_cuts) if i % self.dist.world_size == self.dist.rank
            )
        total_loss, total_asr, total_frames = 0.0, 0.0, 0.0
        if len(shard):
            for raw in eval_dataloader(shard, self.config.max_duration):
                loss, stats, frames = self._loss(unpack_batch(raw))
                total_loss += loss.item()
                total_asr += stats["asr"] * frames
                total_frames += frames
        total_loss, total_asr, total_frames = self.dist.all_reduce_sum([total_loss, total_asr, total_frames])
        return total_loss / max(total_frames, 1.0), total_asr / max(total_frames, 1.0)

    def run(self) -> Dict[str, Any]:
        """Train to ``num_epochs`` (resuming if checkpoints exist); write model.pt and a summary."""
        try:
            with self._stop:
                seed_everything(self.seed + self.dist.rank)
                self._maybe_resume()
                while self.state.epoch < self.config.num_epochs:
                    epoch = self.state.epoch + 1
                    train_loss = self._train_epoch(epoch)
                    val_start, val_cpu = time.time(), time.process_time()
                    dev_loss, dev_asr_loss = self.validate()
                    st = self.state
                    st.train_seconds += time.time() - val_start
                    st.train_cpu_seconds += time.process_time() - val_cpu
                    st.epoch = epoch
                    st.steps_per_epoch = st.epoch_steps
                    st.history.append(
                        {
                            "epoch": epoch,
                            "train_loss": train_loss,
                            "dev_loss": dev_loss,
                            "dev_asr_loss": dev_asr_loss,
                            "step": st.step,
                        }
                    )
                    st.epoch_steps = 0
                    st.epoch_loss = st.epoch_frames = st.epoch_audio_seconds = 0.0
                    log.info(
                        "epoch %d done: train loss/frame %.4f, dev loss/frame %.4f (ASR alone %.4f), %s elapsed",
                        epoch,
                        train_loss,
                        dev_loss,
                        dev_asr_loss,
                        format_seconds(st.train_seconds),
                    )
                    self.monitor.on_epoch(st.history[-1], st)
                    self._save_checkpoint(f"epoch-{epoch}.pt")
                return self._finish()
        finally:
            self.monitor.close()
            if self._owns_dist:
                self.dist.shutdown()

    def _finish(self) -> Dict[str, Any]:
        model = self.objective.deployable()
        summary = {
            **self.meta,
            "seed": self.seed,
            "num_params": sum(p.numel() for p in model.parameters()),
            "train_seconds": round(self.state.train_seconds, 1),
            "train_cpu_seconds": round(self.state.train_cpu_seconds, 1),
            "train_hours_of_audio": round(self.train_hours, 3),
            "num_epochs": self.state.epoch,
            "num_steps": self.state.step,
            "skipped_steps": self.state.skipped_steps,
            "history": self.state.history,
            "optimisation": self.config.to_dict(),
            "data_parallel": {
                "processes": self.dist.world_size,
                "device": self.device.type,
                "global_batch_slots": self.num_slots,
            },
            # Where the run trained: the processor or GPU, and the threads of each process.
            "hardware": {
                "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else cpu_model(),
                "threads": torch.get_num_threads(),
                # MKL's code path decides the float results (docs/clusters.md).
                "mkl_settings": mkl_settings(),
            },
            "source_commit": source_commit(),
        }
        if self.dist.is_main:
            save_model(self.out_dir / "model.pt", model, meta=summary)
            # Beside the checkpoint, not in it: the file's digest, and the model's (config and
            # weights), by which a KD student's summary names its teacher.
            summary["checkpoint_sha256"] = file_digest(self.out_dir / "model.pt")
            summary["model_sha256"] = weights_digest(model.config, model.state_dict())
            if summary.get("role") == "teacher":
                # The teacher is its own teacher: its runs group with the students that learnt from it.
                summary["teacher_sha256"] = summary["model_sha256"]
            write_json(self.out_dir / "train_summary.json", summary)
            log.info("wrote %s (%d parameters)", self.out_dir / "model.pt", summary["num_params"])
        self.dist.barrier()
        return summary
