"""What the workflow's jobs ask a cluster for, and how a training job starts its processes.

The rules declare their resources through :func:`rule_resources` (see
``workflow/rules/resources.smk``); a Snakemake profile can override any of them per rule
(``set-resources``) and supplies what only a cluster knows (partition, account).

Resource names follow Snakemake's SLURM support: ``mem_mb``, ``runtime`` (minutes),
``slurm_partition``, and for GPUs ``gpu`` (Snakemake 8's SLURM executor plugin turns it into
``--gpus``) or, for Snakemake 7's built-in ``--slurm``, ``slurm_extra: --gres=gpu:N``.
CPUs are the rules' ``threads`` (``--cpus-per-task``). Training jobs are marked requeue-able
(``--requeue`` in Snakemake 7; ``slurm-requeue`` in the Snakemake 8 profile): a pre-empted
training job is put back in the queue and resumes from its last checkpoint.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

STAGES = ("default", "corpus", "features", "train", "decode")

#: Defaults per stage, used where the config's ``resources`` section says nothing (config.yaml;
#: the LibriSpeech configs set their own). Memory is 2-4 times the peak resident memory
#: measured for config.yaml's model sizes on the CPU: training 543-565 MiB, decoding
#: 482-531 MiB, corpus 918 and features 405 (micro run); workflow/profiles/README.md has the
#: commands. Training gets more because a GPU job's CUDA libraries add 1-3 GB of host memory.
DEFAULT_RESOURCES: Mapping[str, Mapping[str, Any]] = {
    "default": {"mem_mb": 2000, "runtime": 60},
    "corpus": {"mem_mb": 2000, "runtime": 360},
    "features": {"mem_mb": 2000, "runtime": 720},
    "train": {"mem_mb": 4000, "runtime": 2880},
    "decode": {"mem_mb": 2000, "runtime": 240},
}


def snakemake_major() -> int:
    import snakemake

    return int(snakemake.__version__.split(".")[0])


def stage_settings(config: Mapping[str, Any], stage: str) -> Dict[str, Any]:
    """Merged resource settings of a stage: built-in defaults < config default < config stage."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    section = config.get("resources", {}) or {}
    merged: Dict[str, Any] = {}
    for layer in (
        DEFAULT_RESOURCES["default"],
        DEFAULT_RESOURCES[stage],
        section.get("default", {}),
        section.get(stage, {}),
    ):
        merged.update(layer)
    return merged


def training_gpus(config: Mapping[str, Any]) -> int:
    return int(config["training"]["gpus"])


def training_processes(config: Mapping[str, Any]) -> int:
    """Processes of one training job: one per GPU, or ``cpu_processes`` on the CPU."""
    gpus = training_gpus(config)
    return gpus if gpus > 0 else int(config["training"]["cpu_processes"])


def rule_resources(config: Mapping[str, Any], stage: str, major: Optional[int] = None) -> Dict[str, Any]:
    """The ``resources:`` of a rule of ``stage`` (keyword arguments for Snakemake)."""
    settings = stage_settings(config, stage)
    resources: Dict[str, Any] = {"mem_mb": int(settings["mem_mb"]), "runtime": int(settings["runtime"])}
    if settings.get("partition"):
        resources["slurm_partition"] = settings["partition"]
    if stage != "train":
        return resources
    major = snakemake_major() if major is None else major
    gpus = training_gpus(config)
    resources["gpu"] = gpus
    if major >= 8:
        if gpus:
            # torchrun starts the per-GPU processes inside one SLURM task.
            resources["tasks_per_gpu"] = 0
    else:
        extra = ([f"--gres=gpu:{gpus}"] if gpus else []) + ["--requeue"]
        resources["slurm_extra"] = " ".join(extra)
    return resources


def train_launcher(config: Mapping[str, Any]) -> str:
    """Shell prefix that starts ``streamkd train`` with the configured processes and devices.

    ``training.gpus: 0`` hides any GPU (the job trains on the CPU, as configured); more than
    one process runs under torchrun (one per GPU with NCCL, or gloo CPU processes), with the
    rendezvous on a free local port so that several training jobs can share a machine. The
    processes of a job share one node, so gloo talks over the loopback interface rather than
    whatever address the host name resolves to.
    """
    gpus = training_gpus(config)
    processes = training_processes(config)
    prefix = "" if gpus else "CUDA_VISIBLE_DEVICES= "
    if processes == 1:
        return prefix
    if not gpus:
        prefix += "GLOO_SOCKET_IFNAME=lo "
    return (
        f"{prefix}torchrun --nnodes 1 --nproc_per_node {processes} --rdzv_backend c10d "
        "--rdzv_endpoint localhost:0 --no_python "
    )


def train_threads(config: Mapping[str, Any], distils: bool = False) -> int:
    """CPU threads (SLURM --cpus-per-task) of a training job: threads per process x processes.

    A distilling student may have its own thread count (``training.kd_threads``): on a small
    machine the KD students start after the teacher, when its cores are free again.
    """
    training = config["training"]
    threads = (training.get("kd_threads") or training["threads"]) if distils else training["threads"]
    return int(threads) * training_processes(config)
