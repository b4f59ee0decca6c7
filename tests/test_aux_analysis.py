"""The aux-branch analysis: distances by shift and attention by offset of a saved run."""

import json

import pytest
import torch

from streamkd.distill.analysis import analyse_aux_run
from streamkd.distill.config import KdConfig
from streamkd.distill.teacher import FrozenTeacher
from streamkd.model import build_asr_model
from streamkd.model.checkpoint import save_model
from streamkd.training.objectives import DistillationObjective

from helpers import write_feature_cuts

ENCODER = dict(
    feat_dim=80, d_model=16, num_layers=2, num_heads=2, ff_dim=32, conv_kernel=5, dropout=0.0, subsampling_channels=8
)


@pytest.fixture
def aux_run(tmp_path):
    torch.manual_seed(0)
    teacher = build_asr_model(ENCODER, 10)
    save_model(tmp_path / "teacher.pt", teacher, meta={"role": "teacher"})
    student = build_asr_model({**ENCODER, "causal": True, "chunk_size": 2}, 10)
    kd = KdConfig(method="aux", student_layers=(1, 2), apc_shift=2)
    objective = DistillationObjective(student, FrozenTeacher(teacher), kd, spec_augment=False)
    run = tmp_path / "run"
    save_model(run / "model.pt", student, meta={"role": "student"})
    (run / "train_summary.json").write_text(json.dumps({"method": "aux", "kd": kd.to_dict()}))
    (run / "checkpoints").mkdir()
    torch.save({"objective": objective.state_dict()}, run / "checkpoints" / "epoch-1.pt")
    feats = [torch.randn(n, 80) for n in (90, 130, 70)]
    cuts = write_feature_cuts(tmp_path, feats, ["A", "B", "C"])
    return run, tmp_path / "teacher.pt", cuts, objective.eval(), feats


def test_distances_match_the_training_loss_and_attention_sums_to_one(aux_run):
    run, teacher, cuts, objective, feats = aux_run
    result = analyse_aux_run(run, teacher, cuts, max_shift=40)
    assert result["trained_shift"] == 2 and [(p["student_layer"], p["teacher_layer"]) for p in result["pairs"]] == [
        (1, 1),
        (2, 2),
    ]
    # The KD term the objective trains on is the mean over pairs of the distance at the trained shift,
    # each pair's mean taken over every (utterance, frame) pair of the set.
    lens = torch.tensor([f.size(0) for f in feats])
    padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    _, stats, _ = objective(padded, lens, [[1], [2], [3]])
    at_shift = [p["distance_by_shift"][2] for p in result["pairs"]]
    assert sum(at_shift) / 2 == pytest.approx(stats["kd"], rel=1e-3)
    for p in result["pairs"]:
        # Utterances are at most 31 frames long, so offsets -40..40 hold every query's whole attention.
        assert sum(p["attention_by_offset"].values()) == pytest.approx(1.0, abs=1e-3)
        assert len(p["distance_by_shift"]) == 41


def test_a_run_without_branches_is_refused(aux_run, tmp_path):
    run, teacher, cuts, _, _ = aux_run
    (run / "train_summary.json").write_text(json.dumps({"method": "token", "kd": {"method": "token"}}))
    with pytest.raises(ValueError, match="only aux and layer runs have branches"):
        analyse_aux_run(run, teacher, cuts)
