"""Mixed precision on the CPU: bf16 autocast against fp32, KD terms, resumption, skipped steps.

Tolerances (tiny models, random features, 8 steps):

* bf16 autocast changes each step's training loss by less than 2 % relative to fp32, and the
  first step's (same parameters, only the arithmetic differs) by less than 1 %.
* KD terms under bf16 are finite, computed in float32, and within 2 % of their fp32 values.
"""

from __future__ import annotations

import logging

import pytest
import torch

from streamkd.data.loaders import load_cuts
from streamkd.data.tokenizer import Tokenizer
from streamkd.distill.config import KdConfig
from streamkd.distill.teacher import FrozenTeacher
from streamkd.model import build_asr_model
from streamkd.training.config import OptimisationConfig
from streamkd.training.objectives import DistillationObjective, asr_objective
from streamkd.training.precision import PrecisionError, autocast, check_precision
from streamkd.training.trainer import Trainer

from helpers import train_tiny_bpe, write_feature_cuts

ENCODER = dict(
    feat_dim=80, d_model=32, num_layers=2, num_heads=2, ff_dim=64, conv_kernel=5, dropout=0.0, subsampling_channels=8
)
WORDS = "ALPHA BRAVO CHARLIE DELTA ECHO FOXTROT GOLF HOTEL".split()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    gen = torch.Generator().manual_seed(0)
    lengths = [int(x) for x in torch.randint(120, 260, (24,), generator=gen)]
    feats = [torch.randn(n, 80, generator=gen) for n in lengths]
    texts = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(2 + i % 3)) for i in range(len(lengths))]
    cuts = write_feature_cuts(root, feats, texts)
    return {"root": root, "cuts": cuts, "bpe": train_tiny_bpe(root, texts, vocab_size=30)}


def optimisation(**overrides) -> OptimisationConfig:
    options = dict(num_epochs=1, max_duration=6.0, peak_lr=2e-3, warmup_steps=2, spec_augment=False, log_interval=1000)
    return OptimisationConfig(**{**options, **overrides})


def trainer(data, out_dir, precision="fp32", num_epochs=1, objective=None) -> Trainer:
    tokenizer = Tokenizer(data["bpe"])
    if objective is None:
        torch.manual_seed(0)
        objective = asr_objective(build_asr_model(ENCODER, tokenizer.vocab_size))
    cuts = load_cuts(data["cuts"]).to_eager()
    opt = optimisation(precision=precision, num_epochs=num_epochs)
    return Trainer(objective, tokenizer, cuts, cuts, out_dir, opt, seed=1)


def step_losses(tr: Trainer, steps: int):
    tr.objective.train()
    _, iterators = tr._train_loaders(1)
    return [tr._step([next(iterators[0])]).loss for _ in range(steps)]


def test_bf16_autocast_trains_with_losses_close_to_fp32(data, tmp_path):
    fp32 = step_losses(trainer(data, tmp_path / "fp32"), 8)
    bf16 = step_losses(trainer(data, tmp_path / "bf16", "bf16"), 8)
    assert abs(bf16[0] - fp32[0]) < 0.01 * fp32[0]
    assert bf16 != fp32  # bfloat16 arithmetic really ran
    for a, b in zip(fp32, bf16):
        assert abs(a - b) < 0.02 * a
    assert bf16[-1] < bf16[0]  # and it learns


@pytest.mark.parametrize("method", ["token", "layer", "aux"])
def test_kd_terms_stay_finite_and_float32_under_bf16(method):
    torch.manual_seed(0)
    teacher = FrozenTeacher(build_asr_model(ENCODER, 12))
    student = build_asr_model({**ENCODER, "causal": True, "chunk_size": 2}, 12)
    layers = {} if method == "token" else {"student_layers": (1, 2)}
    kd = KdConfig(method=method, apc_shift=1 if method == "aux" else None, **layers)
    objective = DistillationObjective(student, teacher, kd, spec_augment=False).train()
    feats, lens = torch.randn(3, 150, 80), torch.tensor([150, 120, 90])
    targets = [[1, 2, 3], [4, 5], [6]]
    _, fp32, _ = objective(feats, lens, targets)
    with autocast("bf16", torch.device("cpu")):
        loss, bf16, _ = objective(feats, lens, targets)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss) and bf16["kd"] > 0
    assert abs(bf16["kd"] - fp32["kd"]) < 0.02 * fp32["kd"]


def test_resumed_bf16_run_ends_identical_to_an_uninterrupted_one(data, tmp_path):
    trainer(data, tmp_path / "straight", "bf16", num_epochs=2).run()
    trainer(data, tmp_path / "resumed", "bf16", num_epochs=1).run()
    resumed = trainer(data, tmp_path / "resumed", "bf16", num_epochs=2)
    summary = resumed.run()
    assert summary["num_epochs"] == 2 and summary["optimisation"]["precision"] == "bf16"
    straight = torch.load(tmp_path / "straight" / "model.pt", weights_only=False)["state_dict"]
    again = torch.load(tmp_path / "resumed" / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(straight[k], again[k]) for k in straight)


def test_fp16_on_the_cpu_resumes_from_the_saved_scaler_or_is_refused_by_name(data, tmp_path):
    """torch >= 2.3 scales fp16 losses on the CPU: a resumed run continues from the saved
    scaler state. Older torch (the k2 stack's 1.13) cannot, and fp16 is refused at start-up."""
    if not hasattr(torch.amp, "GradScaler"):
        with pytest.raises(PrecisionError, match="training.precision=fp16 needs a GPU"):
            check_precision("fp16", torch.device("cpu"))
        with pytest.raises(PrecisionError, match="fp16 needs a GPU"):
            trainer(data, tmp_path / "run", "fp16")
        return
    first = trainer(data, tmp_path / "run", "fp16", num_epochs=1)
    first.run()
    saved = torch.load(tmp_path / "run" / "checkpoints" / "epoch-1.pt", weights_only=False)["scaler"]
    assert saved is not None and saved["scale"] > 0
    again = trainer(data, tmp_path / "run", "fp16", num_epochs=2)
    again._maybe_resume()
    assert again.scaler.get_scale() == saved["scale"]
    assert again.scaler.state_dict()["_growth_tracker"] == saved["_growth_tracker"]


def test_a_step_with_non_finite_gradients_is_skipped_and_counted(data, tmp_path, caplog):
    tr = trainer(data, tmp_path / "run")
    tr.objective.train()
    _, iterators = tr._train_loaders(1)
    tr._step([next(iterators[0])])
    before = {k: v.clone() for k, v in tr.objective.state_dict().items()}
    # One poisoned step: a parameter that turns every gradient into NaN.
    weight = (
        tr.objective.model.ctc.proj.weight
        if hasattr(tr.objective.model.ctc, "proj")
        else next(tr.objective.parameters())
    )
    handle = weight.register_hook(lambda g: torch.full_like(g, float("nan")))
    with caplog.at_level(logging.WARNING):
        tr._step([next(iterators[0])])
    handle.remove()
    assert tr.state.skipped_steps == 1 and "optimiser step skipped" in caplog.text
    after = tr.objective.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing moved
    tr._step([next(iterators[0])])
    assert tr.state.skipped_steps == 1
    assert not all(torch.equal(before[k], tr.objective.state_dict()[k]) for k in before)
