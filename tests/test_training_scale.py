"""Data-parallel training (torchrun, gloo on the CPU), checkpoints and resumption.

What must match, precisely:

* DDP: ``torchrun`` with 2 CPU processes and ``accum_grad: 1`` and a single process with
  ``accum_grad: 2`` train on the same global batches (2 data slots either way) with the same
  per-frame loss normalisation, so every step's global loss agrees up to floating-point
  summation order (asserted: relative difference < 1e-6 at every step; with two processes
  the averaging is exact in practice and the parameters come out identical).
* Resume: a run killed with SIGKILL (or stopped with SIGTERM) mid-epoch and started again
  ends with bit-identical parameters and the same per-step loss log as an uninterrupted run
  (same seed, CPU, one thread; SpecAugment and dropout on, so RNG and sampler state matter).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from streamkd.model.checkpoint import model_digest
from streamkd.utils import file_digest, source_commit

from fakes import tone_corpus_with_features
from helpers import REPO

TORCHRUN = Path(sys.executable).with_name("torchrun")
ENCODER = {"d_model": 32, "num_layers": 2, "num_heads": 2, "ff_dim": 64, "conv_kernel": 5, "subsampling_channels": 8}
STEP_TIMEOUT = 600  # seconds for one training command, generous for a loaded CI machine


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """32 training and 6 dev utterances of synthetic tones with transcripts, fbank, BPE."""
    out = tmp_path_factory.mktemp("tones")
    tone_corpus_with_features(out, {"train": 32, "dev": 6}, vocab_size=40)
    return out


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    e["CUDA_VISIBLE_DEVICES"] = ""  # these tests are about the CPU/gloo path
    e["GLOO_SOCKET_IFNAME"] = "lo"  # as train_launcher sets it for one-node gloo jobs
    # A stuck collective fails with a traceback well before the test's own timeout.
    e["STREAMKD_DIST_TIMEOUT"] = "120"
    return e


def train_command(
    data: Path, out_dir: Path, optimisation: dict, dropout: float = 0.0, role: str = "teacher", train_cuts: Path = None
) -> list:
    """``python -m streamkd.cli train ...`` (under torchrun, everything after ``python``)."""
    cmd = [
        sys.executable,
        "-m",
        "streamkd.cli",
        "train",
        "--role",
        role,
        "--train-cuts",
        str(train_cuts or data / "cuts_train.jsonl.gz"),
        "--dev-cuts",
        str(data / "cuts_dev.jsonl.gz"),
        "--bpe-model",
        str(data / "bpe.model"),
        "--out-dir",
        str(out_dir),
        "--encoder",
        json.dumps({**ENCODER, "dropout": dropout}),
        "--optimisation",
        json.dumps(optimisation),
        "--seed",
        "3",
        "--threads",
        "1",
    ]
    if role == "student":
        cmd += ["--chunk-size", "4"]
    return cmd


def run(cmd: list) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"timed out after {STEP_TIMEOUT} s; the end of its log:\n{stderr[-5000:]}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def steps(out_dir: Path) -> list:
    return [json.loads(line) for line in (out_dir / "train_steps.jsonl").read_text().splitlines()]


def params(out_dir: Path) -> dict:
    return torch.load(out_dir / "model.pt", map_location="cpu", weights_only=False)["state_dict"]


# -- data parallelism ----------------------------------------------------------------------


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(data, tmp_path):
    optimisation = {
        "num_epochs": 2,
        "max_duration": 8,
        "peak_lr": 0.002,
        "warmup_steps": 4,
        "log_interval": 1,
        "spec_augment": False,
    }
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run(train_command(data, single, {**optimisation, "accum_grad": 2}))
    # As the workflow starts it (streamkd.cluster.train_launcher), with a module instead of the
    # console script so that the test needs no installed entry point.
    result = run(
        [
            str(TORCHRUN),
            "--nnodes",
            "1",
            "--nproc_per_node",
            "2",
            "--rdzv_backend",
            "c10d",
            "--rdzv_endpoint",
            "localhost:0",
        ]
        + train_command(data, ddp, {**optimisation, "accum_grad": 1})[1:]
    )

    one, two = steps(single), steps(ddp)
    assert len(one) == len(two) >= 8
    assert [s["frames"] for s in one] == [s["frames"] for s in two]  # the same global batches
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6), (a, b)
    first, last = params(single), params(ddp)
    for name in first:
        torch.testing.assert_close(last[name], first[name], rtol=1e-5, atol=1e-6)

    summary = json.loads((ddp / "train_summary.json").read_text())
    assert summary["data_parallel"] == {"processes": 2, "device": "cpu", "global_batch_slots": 2}
    # Rank 0 logs progress; rank 1 logs nothing at INFO level.
    assert "epoch 2 done" in result.stderr
    assert "[rank 1]" not in result.stderr


# -- checkpoints and resumption --------------------------------------------------------------

RESUME_OPTIMISATION = {
    "num_epochs": 3,
    "max_duration": 8,
    "peak_lr": 0.002,
    "warmup_steps": 4,
    "log_interval": 2,
    "spec_augment": True,
    "checkpoint_interval": 4,
}


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    run(train_command(data, out, RESUME_OPTIMISATION, dropout=0.1, role="student"))
    return out


def start_and_stop(cmd: list, wait_for: str, sig: int) -> subprocess.CompletedProcess:
    """Start training, send ``sig`` once ``wait_for`` appears in its log, wait for it to end.

    The log is read on a thread, so a child that stalls without writing fails the test at the
    deadline instead of blocking it.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env())
    lines: list = []
    signalled = threading.Event()

    def read_log() -> None:
        for line in proc.stderr:
            lines.append(line)
            if not signalled.is_set() and wait_for in line:
                signalled.set()
                proc.send_signal(sig)

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        reader.join(timeout=STEP_TIMEOUT)  # the log ends when the process does
        if reader.is_alive():
            pytest.fail(f"training neither reached {wait_for!r} nor ended in {STEP_TIMEOUT} s")
        if not signalled.is_set():
            pytest.fail("training ended before " + wait_for + ":\n" + "".join(lines[-30:]))
        proc.wait(timeout=STEP_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(cmd, proc.returncode, "", "".join(lines))


def assert_same_run(resumed: Path, uninterrupted: Path) -> None:
    reference, got = params(uninterrupted), params(resumed)
    assert reference.keys() == got.keys()
    for name in reference:
        assert torch.equal(got[name], reference[name]), name
    assert steps(resumed) == steps(uninterrupted)


def test_killed_run_resumes_mid_epoch_to_identical_parameters(data, uninterrupted, tmp_path):
    out = tmp_path / "run"
    cmd = train_command(data, out, RESUME_OPTIMISATION, dropout=0.1, role="student")
    # Step 16 lies inside epoch 2 (11 steps per epoch): kill -9 right after its checkpoint.
    killed = start_and_stop(cmd, "saved checkpoint " + str(out / "checkpoints" / "step-16.pt"), signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "model.pt").exists()
    assert (out / "checkpoints" / "latest").read_text().strip().startswith("step-")

    resumed = run(cmd)
    assert "resumed from" in resumed.stderr and "step(s) into the next epoch" in resumed.stderr
    assert_same_run(out, uninterrupted)
    # Only the newest step checkpoint is kept; every epoch checkpoint is.
    names = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
    assert [n for n in names if n.startswith("epoch-")] == ["epoch-1.pt", "epoch-2.pt", "epoch-3.pt"]
    assert len([n for n in names if n.startswith("step-")]) <= 1


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    run(train_command(data, out, {"num_epochs": 1, "max_duration": 8, "peak_lr": 0.002, "warmup_steps": 2}))
    return out / "model.pt"


def aux_command(data: Path, out_dir: Path, teacher: Path) -> list:
    """A distilled student: auxiliary branches on layers 1 and 2, APC shift 1, SpecAugment and dropout on."""
    return train_command(data, out_dir, RESUME_OPTIMISATION, dropout=0.1, role="student") + [
        "--method",
        "aux",
        "--kd-layers",
        "1,2",
        "--apc-shift",
        "1",
        "--teacher",
        str(teacher),
        "--kd",
        json.dumps({"loss": "l1_cos", "weight": 1.0}),
    ]


def test_killed_aux_student_resumes_mid_epoch_to_identical_parameters(data, teacher, tmp_path):
    """The branches, the KD projections and their optimiser state are restored with the student."""
    reference = tmp_path / "reference"
    run(aux_command(data, reference, teacher))
    out = tmp_path / "run"
    cmd = aux_command(data, out, teacher)
    killed = start_and_stop(cmd, "saved checkpoint " + str(out / "checkpoints" / "step-16.pt"), signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "model.pt").exists()

    resumed = run(cmd)
    assert "resumed from" in resumed.stderr and "kd=" in resumed.stderr
    assert_same_run(out, reference)
    # The summary names the teacher by its model's digest, and the student's own file and model.
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["teacher_sha256"] == model_digest(teacher) != file_digest(teacher)
    assert summary["checkpoint_sha256"] == file_digest(out / "model.pt")
    assert summary["model_sha256"] == model_digest(out / "model.pt")
    # The interrupted and the uninterrupted run trained the same weights: one model digest.
    assert summary["model_sha256"] == json.loads((reference / "train_summary.json").read_text())["model_sha256"]
    assert summary["source_commit"] == source_commit() and summary["source_commit"]  # this checkout


def test_sigterm_writes_a_checkpoint_and_the_rerun_finishes_identically(data, uninterrupted, tmp_path):
    out = tmp_path / "run"
    cmd = train_command(data, out, RESUME_OPTIMISATION, dropout=0.1, role="student")
    stopped = start_and_stop(cmd, "epoch 1/3 batch 6", signal.SIGTERM)
    # The trainer finishes the step it is in, checkpoints it and exits with 128 + SIGTERM.
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "stopped by SIGTERM" in stopped.stderr
    latest = (out / "checkpoints" / "latest").read_text().strip()
    payload = torch.load(out / "checkpoints" / latest, map_location="cpu", weights_only=False)
    assert payload["state"]["epoch"] == 0 and payload["state"]["epoch_steps"] >= 6
    assert payload["samplers"][0]["diagnostics"]  # the sampler's position is saved

    run(cmd)
    assert_same_run(out, uninterrupted)


def test_resume_from_an_old_epoch_checkpoint_without_pointer(data, uninterrupted, tmp_path):
    """Runs checkpointed before step checkpoints existed have epoch-N.pt files only: they resume
    from the newest one and end where the uninterrupted run ended."""
    from streamkd.training.trainer import latest_checkpoint

    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    for finished in ("model.pt", "train_summary.json"):
        (out / finished).unlink()
    (out / "checkpoints" / "latest").unlink()
    for step_ckpt in (out / "checkpoints").glob("step-*.pt"):
        step_ckpt.unlink()
    (out / "checkpoints" / "epoch-3.pt").unlink()
    assert latest_checkpoint(out / "checkpoints").name == "epoch-2.pt"

    resumed = run(train_command(data, out, RESUME_OPTIMISATION, dropout=0.1, role="student"))
    assert "resumed from" in resumed.stderr and "epoch-2.pt" in resumed.stderr
    assert "epoch 3/3 batch" in resumed.stderr and "epoch 1/3 batch" not in resumed.stderr
    assert_same_run(out, uninterrupted)


def test_finished_run_is_not_trained_again(data, uninterrupted, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    (out / "model.pt").unlink()
    result = run(train_command(data, out, RESUME_OPTIMISATION, dropout=0.1, role="student"))
    assert "resumed from" in result.stderr and "epoch 3 finished" in result.stderr
    assert "batch" not in result.stderr.split("resumed from")[1]  # no training step ran
    assert_same_run(out, uninterrupted)


# -- features computed on the fly ------------------------------------------------------------


def test_on_the_fly_features_match_stored_ones_and_train(data, tmp_path):
    from lhotse import load_manifest_lazy

    from streamkd.data.features import compute_fbank
    from streamkd.data.loaders import eval_dataloader, has_precomputed_features, unpack_batch

    recordings, supervisions = data / "recordings_dev.jsonl.gz", data / "supervisions_dev.jsonl.gz"
    cuts = compute_fbank(
        recordings,
        supervisions,
        tmp_path / "cuts_dev.jsonl.gz",
        tmp_path / "unused",
        speed_perturb=True,
        on_the_fly=True,
    )
    assert not has_precomputed_features(cuts) and not (tmp_path / "unused").exists()
    assert len(cuts) == 3 * 6 and sum(c.id.endswith("_sp0.9") for c in cuts) == 6

    stored = {c.id: c for c in load_manifest_lazy(data / "cuts_dev.jsonl.gz")}
    original = cuts.filter(lambda c: c.id in stored).to_eager()
    batch = unpack_batch(next(iter(eval_dataloader(original, max_duration=100))))
    reference = unpack_batch(next(iter(eval_dataloader(load_manifest_lazy(data / "cuts_dev.jsonl.gz"), 100))))
    assert batch.cut_ids == reference.cut_ids
    assert torch.equal(batch.feat_lens, reference.feat_lens)
    # Stored features went through lilcom's lossy compression, which is coarsest for the
    # lowest log energies (the near-silent bins of these tones).
    difference = (batch.feats - reference.feats).abs()
    assert difference.mean() < 0.01
    assert (difference < 0.1).float().mean() > 0.99

    train = tmp_path / "cuts_train.jsonl.gz"
    compute_fbank(
        data / "recordings_train.jsonl.gz",
        data / "supervisions_train.jsonl.gz",
        train,
        tmp_path / "unused",
        speed_perturb=True,
        on_the_fly=True,
    )
    result = run(
        train_command(
            data,
            tmp_path / "otf",
            {"num_epochs": 1, "max_duration": 8, "peak_lr": 0.002, "warmup_steps": 2},
            train_cuts=train,
        )
    )
    assert "epoch 1 done" in result.stderr
    summary = json.loads((tmp_path / "otf" / "train_summary.json").read_text())
    stored_hours = sum(c.duration for c in load_manifest_lazy(data / "cuts_train.jsonl.gz")) / 3600
    assert summary["train_hours_of_audio"] == pytest.approx(3 * stored_hours, rel=0.02)  # 0.9x + 1x + 1.1x


def test_collective_timeout_comes_from_the_environment(monkeypatch):
    from datetime import timedelta

    from streamkd.training.distributed import collective_timeout

    monkeypatch.delenv("STREAMKD_DIST_TIMEOUT", raising=False)
    assert collective_timeout() == timedelta(minutes=30)
    monkeypatch.setenv("STREAMKD_DIST_TIMEOUT", "90")
    assert collective_timeout() == timedelta(seconds=90)
    for bad in ("0", "soon"):
        monkeypatch.setenv("STREAMKD_DIST_TIMEOUT", bad)
        with pytest.raises(
            ValueError, match=f"STREAMKD_DIST_TIMEOUT must be a positive number of seconds, got '{bad}'"
        ):
            collective_timeout()


def test_resuming_mid_epoch_with_another_number_of_data_slots_restarts_that_epoch(data, tmp_path):
    """The sampler positions of one data slot cannot be split over two: the epoch restarts,
    keeping weights, optimiser and step count, and the log says why."""
    out = tmp_path / "run"
    cmd = train_command(data, out, RESUME_OPTIMISATION, dropout=0.1, role="student")
    stopped = start_and_stop(cmd, "epoch 1/3 batch 6", signal.SIGTERM)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    two_slots = train_command(data, out, {**RESUME_OPTIMISATION, "accum_grad": 2}, dropout=0.1, role="student")
    resumed = run(two_slots)
    assert "stopped mid-epoch with 1 data slot(s) and this run has 2: epoch 1 restarts from its first batch" in (
        resumed.stderr
    )
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["data_parallel"]["global_batch_slots"] == 2 and summary["num_epochs"] == 3


def test_bench_kd_step_command_times_every_method_against_none(data, teacher, tmp_path):
    import yaml

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["model"]["student"] = {**ENCODER, "dropout": 0.0}
    config["model"]["teacher"] = {**ENCODER, "dropout": 0.0}
    config["training"]["student"] = {"num_epochs": 1, "max_duration": 8, "peak_lr": 0.002, "warmup_steps": 2}
    config["grid"] = {**config["grid"], "chunk_sizes": [4], "kd_layers": [[1, 2]]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "bench.json"
    args = ["--config", path, "--teacher", teacher, "--train-cuts", data / "cuts_train.jsonl.gz"]
    args += ["--bpe-model", data / "bpe.model", "--out", out, "--num-cuts", "12", "--steps", "2", "--rounds", "1"]
    run([sys.executable, "-m", "streamkd.cli", "bench-kd-step", *map(str, args)])
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"none", "token", "layer", "aux"}
    assert report["results"]["none"]["live"]["ratio"] == 1.0
    for method in ("token", "layer", "aux"):
        for mode in ("live", "cache"):
            timing = report["results"][method][mode]
            assert timing["seconds_per_step"] > 0
            assert timing["ratio"] == pytest.approx(
                timing["seconds_per_step"] / report["results"]["none"]["live"]["seconds_per_step"], rel=0.02
            )
    assert out.with_suffix(".md").read_text().startswith("KD cost per training step")
