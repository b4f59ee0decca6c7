"""Data-parallel training: the process group, the device of each process and small collectives.

Training runs as one process per GPU under ``torchrun`` (NCCL), or as several CPU processes
(gloo) for testing and debugging. ``torchrun`` tells every process who it is through the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``);
:meth:`DistributedContext.from_env` reads it, joins the process group and picks the device.
A plain ``streamkd train`` without ``torchrun`` is the one-process case of the same code.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List, Sequence

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

# How long a collective may wait for the other processes before it fails with an error
# instead of hanging (a crashed or stuck peer); long enough for a slow validation pass.
TIMEOUT_ENV = "STREAMKD_DIST_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 1800


def collective_timeout() -> timedelta:
    value = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_SECONDS))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {value!r}")
    return timedelta(seconds=seconds)


def env_rank() -> int:
    """This process's global rank according to the launcher (0 without one)."""
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def threads_per_process(job_threads: int) -> int:
    """Share a job's CPU threads between the processes that torchrun started on this node."""
    return max(1, job_threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""  # "" when not distributed

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> "DistributedContext":
        """Join the process group that ``torchrun`` set up, or run alone.

        ``device``: ``auto`` (the local GPU when CUDA is available, else the CPU), ``cpu``
        or ``cuda``. With several processes on GPUs, process ``LOCAL_RANK`` uses GPU
        ``LOCAL_RANK`` and the backend is NCCL; on the CPU it is gloo.
        """
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
        if use_cuda and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but CUDA is not available")
        world_size = env_world_size()
        rank = env_rank()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            if local_rank >= torch.cuda.device_count():
                raise RuntimeError(
                    f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible "
                    "(start one process per GPU, e.g. torchrun --nproc_per_node <gpus>)"
                )
            torch.cuda.set_device(local_rank)
            torch_device = torch.device("cuda", local_rank)
        else:
            torch_device = torch.device("cpu")
        if world_size == 1:
            return cls(device=torch_device)
        backend = "nccl" if use_cuda else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(
                backend=backend, init_method="env://", rank=rank, world_size=world_size, timeout=collective_timeout()
            )
        log.info(
            "process %d of %d (local rank %d) on %s, backend %s", rank, world_size, local_rank, torch_device, backend
        )
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device, backend=backend)

    # -- collectives (no-ops for a single process) -------------------------------------------

    def all_reduce_sum(self, values: Sequence[float]) -> List[float]:
        """Element-wise sum of ``values`` over all processes (float64 on the CPU for gloo)."""
        if not self.is_distributed:
            return [float(v) for v in values]
        device = self.device if self.backend == "nccl" else torch.device("cpu")
        tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def all_gather_object(self, obj: Any) -> List[Any]:
        """Every process's ``obj``, in rank order."""
        if not self.is_distributed:
            return [obj]
        gathered: List[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process."""
        if not self.is_distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def shutdown(self) -> None:
        if self.is_distributed and dist.is_initialized():
            dist.destroy_process_group()
