"""The training monitor (TensorBoard events, progress.json) and the `streamkd progress` view."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import yaml

from streamkd.training.monitor import PROGRESS_FILE, TrainingMonitor
from streamkd.training.progress import (
    estimate_rest,
    expected_runs,
    experiment_progress,
    read_run,
    render,
)


def state(**values):
    base = dict(epoch=0, step=0, epoch_steps=0, epoch_audio_seconds=0.0, steps_per_epoch=None, history=[])
    return SimpleNamespace(**{**base, **values})


def test_monitor_writes_scalars_and_a_progress_snapshot(tmp_path):
    monitor = TrainingMonitor(tmp_path, num_epochs=3, train_audio_seconds=100.0)
    st = state()
    for step in range(1, 5):
        st.step = st.epoch_steps = step
        st.epoch_audio_seconds = 10.0 * step
        monitor.on_step(
            {
                "step": step,
                "epoch": 1,
                "loss": 2.0 / step,
                "frames": 50.0,
                "lr": 1e-3 * step,
                "asr": 1.5 / step,
                "kd": 0.5 / step,
            },
            st,
        )
        if step == 1:  # the first step is written at once (then at most every few seconds)
            snapshot = json.loads((tmp_path / PROGRESS_FILE).read_text())
            assert (snapshot["step"], snapshot["epoch"], snapshot["num_epochs"], snapshot["status"]) == (
                1,
                1,
                3,
                "training",
            )
        time.sleep(0.05)
    st.history = [{"epoch": 1, "train_loss": 1.0, "dev_loss": 1.2, "dev_asr_loss": 1.1, "step": 4}]
    st.epoch, st.epoch_steps, st.steps_per_epoch = 1, 0, 4
    monitor.on_epoch(st.history[-1], st)
    monitor.close()
    snapshot = json.loads((tmp_path / PROGRESS_FILE).read_text())
    assert (snapshot["epoch"], snapshot["step"], snapshot["steps_per_epoch"]) == (1, 4, 4)
    # Two epochs left at the measured time of the first one.
    assert snapshot["eta_seconds"] == pytest.approx(2 * snapshot["seconds_per_epoch"])
    assert snapshot["loss"] == pytest.approx((2.0 + 1.0 + 2 / 3 + 0.5) / 4)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(tmp_path / "tensorboard"))
    board.Reload()
    scalars = set(board.Tags()["scalars"])
    assert {"train/loss", "train/asr", "train/kd", "train/lr", "epoch/dev_loss", "epoch/dev_asr_loss"} <= scalars
    assert "train/frames" not in scalars and "train/step" not in scalars
    assert [e.value for e in board.Scalars("train/kd")] == pytest.approx([0.5, 0.25, 0.5 / 3, 0.125])
    assert [(e.step, e.value) for e in board.Scalars("epoch/dev_asr_loss")] == [(4, pytest.approx(1.1))]


def test_audio_rate_and_eta_within_the_first_epoch(tmp_path):
    monitor = TrainingMonitor(tmp_path, num_epochs=2, train_audio_seconds=100.0, tensorboard=False)
    st = state()
    now = time.time()
    monitor._recent.extend([(now - 10.0, 10.0, 1.0), (now, 30.0, 1.0)])  # 20 s of audio in 10 s
    st.epoch_steps, st.epoch_audio_seconds = 5, 30.0
    assert monitor.audio_rate() == pytest.approx(2.0)
    # 70 s of audio left at 2 s/s, then one epoch of 100 s of audio at 2 s/s.
    assert monitor._eta(st, monitor.audio_rate(), in_epoch=True) == pytest.approx(35.0 + 50.0)


def write_finished(run_dir, epochs=3, seconds=90.0, steps=30):
    run_dir.mkdir(parents=True)
    (run_dir / "model.pt").write_bytes(b"x")
    history = [{"epoch": e, "train_loss": 1.0 / e, "dev_loss": 1.0, "step": 10 * e} for e in range(1, epochs + 1)]
    (run_dir / "train_summary.json").write_text(
        json.dumps({"num_epochs": epochs, "num_steps": steps, "train_seconds": seconds, "history": history})
    )


def write_training(run_dir, now, epoch=2, eta=40.0, age=5.0, per_epoch=30.0):
    run_dir.mkdir(parents=True)
    (run_dir / PROGRESS_FILE).write_text(
        json.dumps(
            {
                "status": "training",
                "time": now - age,
                "epoch": epoch,
                "num_epochs": 3,
                "step": 17,
                "loss": 0.75,
                "audio_seconds_per_second": 12.5,
                "seconds_per_epoch": per_epoch,
                "eta_seconds": eta,
            }
        )
    )


def test_progress_lists_finished_training_and_pending_runs_with_the_rest_estimated(tmp_path):
    now = time.time()
    write_finished(tmp_path / "teacher", epochs=3, seconds=90.0)
    write_training(tmp_path / "none-chunk4-seed1", now, eta=40.0, age=5.0)
    runs = experiment_progress(tmp_path, ["teacher", "none-chunk4-seed1", "aux-chunk4-layers2_4-shift0-seed1"], now=now)
    by_name = {r.run: r for r in runs}
    assert [r.run for r in runs] == ["teacher", "none-chunk4-seed1", "aux-chunk4-layers2_4-shift0-seed1"]
    assert (by_name["teacher"].status, by_name["teacher"].seconds_per_epoch) == ("finished", 30.0)
    training = by_name["none-chunk4-seed1"]
    assert (training.status, training.epoch, training.step, training.audio_rate) == ("training", 2, 17, 12.5)
    assert training.eta_seconds == pytest.approx(35.0)  # counted from the snapshot's time
    assert by_name["aux-chunk4-layers2_4-shift0-seed1"].status == "pending"

    # The pending student: 4 epochs at the students' measured 30 s each; the running one: 35 s.
    estimate = estimate_rest(runs, {"teacher": 3, "student": 4}, parallel=2)
    assert estimate.remaining_run_seconds == pytest.approx(35.0 + 120.0)
    assert estimate.wall_seconds == pytest.approx(120.0)  # never less than the longest run
    assert estimate.unknown == []
    text = render(runs, estimate, parallel=2)
    rows = {line.split()[0]: line.split() for line in text.splitlines()[1:4]}
    assert rows["none-chunk4-seed1"][:6] == ["none-chunk4-seed1", "training", "2/3", "17", "0.7500", "12.5"]
    assert rows["teacher"][:5] == ["teacher", "finished", "3/3", "30", "0.3333"]
    assert "1 finished, 1 training, 1 pending" in text


def test_a_run_that_stopped_writing_is_quiet_and_old_runs_show_their_step_log(tmp_path):
    now = time.time()
    write_training(tmp_path / "none-chunk4-seed1", now, age=3600.0)
    assert read_run(tmp_path / "none-chunk4-seed1", now).status == "quiet"
    old = tmp_path / "token-chunk4-seed1"
    old.mkdir()
    (old / "train_steps.jsonl").write_text(
        '{"step": 1, "epoch": 1, "loss": 3.0}\n{"step": 2, "epoch": 1, "loss": 2.5}\n'
    )
    run = read_run(old, now)
    assert (run.status, run.epoch, run.step, run.loss, run.eta_seconds) == ("training", 1, 2, 2.5, None)
    estimate = estimate_rest([run], {})
    assert estimate.unknown == ["token-chunk4-seed1"]


def test_expected_runs_follow_the_grid(repo):
    config = yaml.safe_load((repo / "config.yaml").read_text())
    config["grid"]["methods"] = ["none", "aux"]
    assert expected_runs(config) == ["teacher", "none-chunk4-seed1", "aux-chunk4-layers2_4-shift0-seed1"]


def test_project_prints_the_whole_grids_training_time_from_measured_steps(tmp_path, monkeypatch):
    """`progress --project`: batches per epoch from the sampler over the real cuts, seconds per
    step measured now, per method; the total is runs x epochs x batches x seconds per step."""
    import re

    import torch

    from helpers import streamkd_cli, write_feature_cuts

    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(int(n), 80, generator=gen) for n in torch.randint(150, 400, (30,), generator=gen)]
    cuts = write_feature_cuts(tmp_path / "data", feats, ["A B C"] * len(feats))
    tiny = {"d_model": 16, "num_layers": 2, "num_heads": 2, "ff_dim": 32, "conv_kernel": 3, "subsampling_channels": 4}
    grid = {
        "model": {"teacher": tiny, "student": tiny},
        "training": {"teacher": {"num_epochs": 3, "max_duration": 8}, "student": {"num_epochs": 2, "max_duration": 8}},
        "grid": {"chunk_sizes": [1, 4], "seeds": [1, 2], "methods": ["none", "layer", "aux"], "kd_layers": [[1, 2]]},
    }
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(grid))
    exp = tmp_path / "exp"
    exp.mkdir()
    # Run from elsewhere: --config merges over the config.yaml beside the package.
    monkeypatch.chdir(tmp_path)
    result = streamkd_cli("progress", exp, "--config", config, "--project", "--train-cuts", cuts)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:5]}
    assert set(rows) == {"teacher", "none", "layer", "aux"}
    assert [rows[m][1] for m in ("teacher", "none", "layer", "aux")] == ["1", "4", "4", "4"]  # runs
    assert [rows[m][2] for m in ("teacher", "none")] == ["3", "2"]  # epochs
    batches = int(rows["none"][3])
    assert batches == int(rows["teacher"][3]) and 4 <= batches <= 30  # 30 cuts of 1.5-4 s in 8 s batches
    assert all(float(rows[m][4]) > 0 for m in rows)
    assert re.search(r"projected training on .+, one thread per run: \S+ of run time; about \S+ with 1", result.stdout)
