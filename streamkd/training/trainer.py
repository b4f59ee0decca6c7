"""One trainer for every model: the teacher, the baseline student and (later) distilled students.

What differs between them is the objective (a module that returns a loss and knows which of
its parts is deployed); the loop, checkpointing, resumption and logging are shared.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from lhotse import CutSet

from streamkd.data.loaders import Batch, eval_dataloader, train_dataloader, unpack_batch
from streamkd.data.tokenizer import Tokenizer
from streamkd.model.checkpoint import save_model
from streamkd.training.config import OptimisationConfig
from streamkd.utils import atomic_path, format_seconds, write_json

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainState:
    epoch: int = 0  # number of finished epochs
    step: int = 0
    train_seconds: float = 0.0
    history: List[Dict[str, float]] = field(default_factory=list)


def _latest_checkpoint(ckpt_dir: Path) -> Optional[Path]:
    ckpts = sorted(ckpt_dir.glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    return ckpts[-1] if ckpts else None


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
    ):
        self.objective = objective
        self.tokenizer = tokenizer
        self.train_cuts = train_cuts
        self.dev_cuts = dev_cuts
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.config = config
        self.seed = seed
        self.meta = dict(meta or {})
        params = [p for p in objective.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.peak_lr, weight_decay=config.weight_decay)
        self.state = TrainState()
        self.train_hours = sum(c.duration for c in train_cuts) / 3600

    # -- checkpoints -------------------------------------------------------------------------

    def _save_checkpoint(self) -> None:
        payload = {
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": self.state.__dict__,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
        }
        with atomic_path(self.ckpt_dir / f"epoch-{self.state.epoch}.pt") as tmp:
            torch.save(payload, tmp)

    def _maybe_resume(self) -> None:
        latest = _latest_checkpoint(self.ckpt_dir)
        if latest is None:
            return
        payload = torch.load(latest, map_location="cpu")
        self.objective.load_state_dict(payload["objective"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = TrainState(**payload["state"])
        torch.set_rng_state(payload["torch_rng"])
        np.random.set_state(payload["numpy_rng"])
        random.setstate(payload["python_rng"])
        log.info("resumed from %s (epoch %d, step %d)", latest, self.state.epoch, self.state.step)

    # -- loop --------------------------------------------------------------------------------

    def _set_lr(self) -> float:
        lr = self.config.lr_at(self.state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _loss(self, batch: Batch):
        targets = self.tokenizer.encode(batch.texts)
        return self.objective(batch.feats, batch.feat_lens, targets)

    def _train_epoch(self, epoch: int, expected_batches: Optional[int]) -> float:
        self.objective.train()
        # An objective that augments its own input (for a clean teacher copy) gets clean batches.
        dataset_augments = self.config.spec_augment and not getattr(self.objective, "applies_spec_augment", False)
        loader = train_dataloader(
            self.train_cuts, self.config.max_duration, seed=self.seed, spec_augment=dataset_augments
        )
        loader.sampler.set_epoch(epoch)
        total_loss, total_frames, audio_seconds = 0.0, 0, 0.0
        start = time.time()
        num_batches = 0
        for num_batches, raw in enumerate(loader, start=1):
            batch = unpack_batch(raw)
            lr = self._set_lr()
            loss, stats, frames = self._loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            (loss / max(frames, 1)).backward()
            torch.nn.utils.clip_grad_norm_(self.objective.parameters(), self.config.grad_clip)
            self.optimizer.step()
            self.state.step += 1
            total_loss += loss.item()
            total_frames += frames
            audio_seconds += float(batch.feat_lens.sum()) / 100
            if num_batches % self.config.log_interval == 0:
                elapsed = time.time() - start
                rate = audio_seconds / elapsed
                eta = (self.train_hours * 3600 - audio_seconds) / max(rate, 1e-9)
                stat_text = " ".join(f"{k}={v:.4f}" for k, v in stats.items())
                log.info(
                    "epoch %d/%d batch %d%s loss/frame=%.4f (%s) lr=%.2e | %.1f s audio/s | epoch ETA %s",
                    epoch, self.config.num_epochs, num_batches,
                    f"/{expected_batches}" if expected_batches else "",
                    total_loss / max(total_frames, 1), stat_text, lr, rate, format_seconds(max(eta, 0.0)),
                )
        if num_batches == 0:
            raise ValueError("the training set produced no batches (all utterances filtered out?)")
        return total_loss / max(total_frames, 1)

    @torch.no_grad()
    def validate(self) -> float:
        self.objective.eval()
        total_loss, total_frames = 0.0, 0
        for raw in eval_dataloader(self.dev_cuts, self.config.max_duration):
            loss, _, frames = self._loss(unpack_batch(raw))
            total_loss += loss.item()
            total_frames += frames
        return total_loss / max(total_frames, 1)

    def run(self) -> Dict[str, Any]:
        """Train to ``num_epochs`` (resuming if checkpoints exist); write model.pt and a summary."""
        seed_everything(self.seed)
        self._maybe_resume()
        expected_batches = None
        while self.state.epoch < self.config.num_epochs:
            epoch = self.state.epoch + 1
            epoch_start = time.time()
            step_before = self.state.step
            train_loss = self._train_epoch(epoch, expected_batches)
            expected_batches = self.state.step - step_before
            dev_loss = self.validate()
            self.state.train_seconds += time.time() - epoch_start
            self.state.epoch = epoch
            self.state.history.append({"epoch": epoch, "train_loss": train_loss, "dev_loss": dev_loss})
            log.info(
                "epoch %d done: train loss/frame %.4f, dev loss/frame %.4f, %s elapsed",
                epoch, train_loss, dev_loss, format_seconds(self.state.train_seconds),
            )
            self._save_checkpoint()
        return self._finish()

    def _finish(self) -> Dict[str, Any]:
        model = self.objective.deployable()
        summary = {
            **self.meta,
            "seed": self.seed,
            "num_params": sum(p.numel() for p in model.parameters()),
            "train_seconds": round(self.state.train_seconds, 1),
            "train_hours_of_audio": round(self.train_hours, 3),
            "num_epochs": self.state.epoch,
            "num_steps": self.state.step,
            "history": self.state.history,
            "optimisation": self.config.to_dict(),
        }
        save_model(self.out_dir / "model.pt", model, meta=summary)
        write_json(self.out_dir / "train_summary.json", summary)
        log.info("wrote %s (%d parameters)", self.out_dir / "model.pt", summary["num_params"])
        return summary
