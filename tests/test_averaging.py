"""Checkpoint averaging: the deployable model's weights averaged over the last N epoch
checkpoints, found under the objective's prefix even beside a teacher of the same shape."""

from __future__ import annotations

import copy

import pytest
import torch

from streamkd.config import ConfigError, validate_config
from streamkd.model.asr import build_asr_model
from streamkd.model.checkpoint import load_model, save_model
from streamkd.training.averaging import average_last_epochs, averaged_model_name, last_epoch_checkpoints

TINY = dict(feat_dim=80, d_model=16, num_layers=1, num_heads=2, ff_dim=32, conv_kernel=3, dropout=0.0)


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=generator))
    return other


def write_run(run_dir, prefix: str, epochs: int, with_teacher: bool = False):
    """A run folder as the trainer leaves it: epoch-K.pt (objective state) and model.pt (last epoch)."""
    base = build_asr_model(TINY, vocab_size=10)
    students = [perturbed(base, seed) for seed in range(epochs)]
    teacher = perturbed(base, 99)  # same shape as the student: the prefix must be told apart by value
    for epoch, student in enumerate(students, start=1):
        objective = {prefix + k: v for k, v in student.state_dict().items()}
        if with_teacher:
            objective.update({"teacher.model." + k: v for k, v in teacher.state_dict().items()})
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        torch.save({"objective": objective, "state": {"epoch": epoch}}, run_dir / "checkpoints" / f"epoch-{epoch}.pt")
    save_model(run_dir / "model.pt", students[-1], meta={"role": "student", "num_epochs": epochs})
    return students


@pytest.mark.parametrize("prefix, with_teacher", [("model.", False), ("student.", True)])
def test_averaged_weights_are_the_mean_of_the_last_epochs(tmp_path, prefix, with_teacher):
    students = write_run(tmp_path, prefix, epochs=4, with_teacher=with_teacher)
    out = average_last_epochs(tmp_path, 3, tmp_path / "model-avg-last-3.pt")
    model, meta = load_model(out)
    assert meta["decoded_model"] == "avg-last-3" and meta["averaged_epochs"] == [2, 3, 4]
    assert meta["role"] == "student"  # the training summary is kept
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            expected = sum(s.state_dict()[name] for s in students[1:]) / 3
            torch.testing.assert_close(value, expected)
    # The average is not the final model's weights.
    final, _ = load_model(tmp_path / "model.pt")
    assert not torch.equal(next(model.parameters()), next(final.parameters()))


def test_averaging_one_epoch_gives_the_final_weights(tmp_path):
    write_run(tmp_path, "model.", epochs=2)
    model, _ = load_model(average_last_epochs(tmp_path, 1, tmp_path / "one.pt"))
    final, _ = load_model(tmp_path / "model.pt")
    for (name, a), (_, b) in zip(model.state_dict().items(), final.state_dict().items()):
        assert torch.equal(a, b), name
    assert averaged_model_name(1) == "final"


def test_missing_epochs_are_named(tmp_path):
    write_run(tmp_path, "model.", epochs=3)
    (tmp_path / "checkpoints/epoch-2.pt").unlink()
    with pytest.raises(FileNotFoundError, match="missing: epoch-2.pt"):
        last_epoch_checkpoints(tmp_path / "checkpoints", 2)
    with pytest.raises(FileNotFoundError, match="1 epoch\\(s\\) before epoch-1.pt"):
        last_epoch_checkpoints(tmp_path / "checkpoints", 4)


def test_average_last_beyond_the_epochs_trained_is_a_config_error(repo):
    import yaml

    config = yaml.safe_load((repo / "config.yaml").read_text())
    epochs = config["training"]["teacher"]["num_epochs"]
    config["decoding"]["average_last"] = epochs + 1
    with pytest.raises(
        ConfigError, match=rf"decoding.average_last={epochs + 1} exceeds training.teacher.num_epochs={epochs}"
    ):
        validate_config(config)
    config["decoding"]["average_last"] = 0
    with pytest.raises(ConfigError, match="decoding.average_last"):
        validate_config(config)
