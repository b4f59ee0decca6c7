"""What a running training shows the outside: TensorBoard scalars and a progress snapshot.

Rank 0 of the trainer hands every logged step and every finished epoch to a
:class:`TrainingMonitor`, which

* writes TensorBoard event files to ``<run>/tensorboard/`` (``train/loss``, the parts of
  the loss such as ``train/asr`` and ``train/kd``, ``train/lr``; per epoch
  ``epoch/train_loss``, ``epoch/dev_loss`` and ``epoch/dev_asr_loss``), when the
  ``tensorboard`` package is installed;
* keeps ``<run>/progress.json`` up to date (at most every few seconds): epoch of total, step,
  recent loss, audio seconds per second and the ETA of the run, which ``streamkd progress``
  reads.
"""

from __future__ import annotations

import collections
import logging
import time
from pathlib import Path
from typing import Any, Deque, Dict, Optional, Tuple

from streamkd.utils import write_json

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
TENSORBOARD_DIR = "tensorboard"
RATE_WINDOW = 50  # steps over which the loss and the audio rate are averaged
WRITE_EVERY_S = 2.0
# Step-row keys that are bookkeeping, not scalars worth a curve.
NOT_SCALARS = ("step", "epoch", "frames")


def _summary_writer(log_dir: Path, purge_step: int):
    """A TensorBoard writer, or None (with a warning) when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        log.warning("no TensorBoard event files: %s (pip install tensorboard)", e)
        return None
    # purge_step drops events a resumed run is about to write again.
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class TrainingMonitor:
    """Receives the trainer's steps and epochs; does nothing on ranks other than 0."""

    def __init__(
        self, out_dir: Path, num_epochs: int, train_audio_seconds: float, enabled: bool = True, tensorboard: bool = True
    ) -> None:
        self.out_dir = Path(out_dir)
        self.num_epochs = num_epochs
        self.train_audio_seconds = train_audio_seconds
        self.enabled = enabled
        self.tensorboard = tensorboard
        self._writer: Any = None
        self._writer_opened = False
        # (wall time, audio seconds trained so far in the epoch, loss) of the latest steps
        self._recent: Deque[Tuple[float, float, float]] = collections.deque(maxlen=RATE_WINDOW)
        self._epoch_started: Optional[float] = None
        self._whole_epoch = False
        self._epoch_seconds: list = []  # wall time of the epochs finished in this process
        self._last_write = 0.0

    # -- TensorBoard ---------------------------------------------------------------------

    def _board(self, step: int):
        if not self._writer_opened and self.tensorboard:
            self._writer_opened = True
            self._writer = _summary_writer(self.out_dir / TENSORBOARD_DIR, purge_step=step)
        return self._writer

    def _scalars(self, prefix: str, values: Dict[str, Any], step: int) -> None:
        writer = self._board(step)
        if writer is None:
            return
        for key, value in values.items():
            if key not in NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(f"{prefix}/{key}", value, step)

    # -- events from the trainer -----------------------------------------------------------

    def on_step(self, row: Dict[str, Any], state: Any) -> None:
        """After each optimiser step: ``row`` is the step log's row, ``state`` the TrainState."""
        if not self.enabled:
            return
        now = time.time()
        if self._epoch_started is None or state.epoch_steps == 1:
            self._epoch_started = now
            # A resumed epoch's time is not an epoch's time.
            self._whole_epoch = state.epoch_steps == 1
            self._recent.clear()
        self._recent.append((now, state.epoch_audio_seconds, float(row["loss"])))
        self._scalars("train", row, row["step"])
        if now - self._last_write >= WRITE_EVERY_S:
            self._write_progress(state, "training", now)

    def on_epoch(self, history_row: Dict[str, Any], state: Any) -> None:
        """After validation: ``history_row`` holds the epoch's train, dev and dev ASR losses."""
        if not self.enabled:
            return
        now = time.time()
        if self._epoch_started is not None and self._whole_epoch:
            self._epoch_seconds.append(now - self._epoch_started)
        self._epoch_started = None
        self._scalars("epoch", {k: v for k, v in history_row.items() if k != "step"}, history_row["step"])
        if self._writer is not None:
            self._writer.flush()
        self._write_progress(state, "training" if state.epoch < self.num_epochs else "finished", now)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- progress snapshot ---------------------------------------------------------------

    def audio_rate(self) -> Optional[float]:
        """Audio seconds trained per wall second over the recent steps of this epoch."""
        if len(self._recent) < 2:
            return None
        (t0, a0, _), (t1, a1, _) = self._recent[0], self._recent[-1]
        return (a1 - a0) / (t1 - t0) if t1 > t0 else None

    def _eta(self, state: Any, rate: Optional[float], in_epoch: bool) -> Optional[float]:
        """Seconds to the end of the run: the rest of this epoch, then whole epochs."""
        if self._epoch_seconds:
            per_epoch = sum(self._epoch_seconds) / len(self._epoch_seconds)
        elif rate:
            per_epoch = self.train_audio_seconds / rate
        else:
            return None
        epochs_after = self.num_epochs - state.epoch - (1 if in_epoch else 0)
        rest_of_epoch = 0.0
        if in_epoch:
            rest_of_epoch = max(self.train_audio_seconds - state.epoch_audio_seconds, 0.0) / rate if rate else per_epoch
        return rest_of_epoch + max(epochs_after, 0) * per_epoch

    def _write_progress(self, state: Any, status: str, now: float) -> None:
        in_epoch = state.epoch_steps > 0
        rate = self.audio_rate() if in_epoch else None
        losses = [loss for _, _, loss in self._recent]
        snapshot = {
            "status": status,
            "time": now,
            "epoch": state.epoch + 1 if in_epoch else state.epoch,  # the one in progress, else the last finished
            "num_epochs": self.num_epochs,
            "epoch_step": state.epoch_steps,
            "steps_per_epoch": state.steps_per_epoch,
            "step": state.step,
            "loss": sum(losses) / len(losses) if losses else None,
            "audio_seconds_per_second": rate,
            "epoch_audio_done": state.epoch_audio_seconds,
            "train_audio_seconds": self.train_audio_seconds,
            "seconds_per_epoch": (sum(self._epoch_seconds) / len(self._epoch_seconds))
            if self._epoch_seconds
            else (self.train_audio_seconds / rate if rate else None),
            "eta_seconds": self._eta(state, rate, in_epoch),
            "history": state.history,
        }
        write_json(self.out_dir / PROGRESS_FILE, snapshot)
        self._last_write = now
