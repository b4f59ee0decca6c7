"""Distillation: APC shift pairing, distances, branches, teacher handling, objectives (tiny, CPU)."""

import math
import random

import pytest
import torch

from streamkd.distill.branches import AuxBranch, Projection, Unchanged, branch_for
from streamkd.distill.config import AuxConfig, KdConfig
from streamkd.distill.distances import FRAME_DISTANCES, cos, l1, l1_cos, l2, masked_mean
from streamkd.distill.losses import HiddenLayerKd, TokenKd, TransducerTokenKd
from streamkd.distill.mapping import layer_pairs, proportional_layer
from streamkd.distill.shift import shifted_pairs
from streamkd.distill.teacher import FrozenTeacher, TeacherCheckpointError, load_teacher
from streamkd.model import HeadConfig, TransducerHead, build_asr_model
from streamkd.model.checkpoint import load_model, save_model
from streamkd.training.config import OptimisationConfig
from streamkd.training.objectives import CtcObjective, DistillationObjective
from streamkd.training.run import build_objective

FEAT_DIM = 80
VOCAB = 10
TEACHER = dict(
    feat_dim=FEAT_DIM,
    d_model=32,
    num_layers=4,
    num_heads=2,
    ff_dim=64,
    conv_kernel=5,
    dropout=0.1,
    subsampling_channels=8,
)
STUDENT = dict(TEACHER, d_model=16, num_layers=2, ff_dim=32, causal=True, chunk_size=4)


def teacher_model():
    torch.manual_seed(0)
    return build_asr_model(TEACHER, VOCAB)


def student_model():
    torch.manual_seed(1)
    return build_asr_model(STUDENT, VOCAB)


def batch():
    torch.manual_seed(2)
    return torch.randn(2, 120, FEAT_DIM), torch.tensor([120, 83]), [[1, 2, 3], [4, 5]]


# --- APC shift ------------------------------------------------------------------------


def test_shift_pairs_position_t_with_teacher_frame_t_plus_k():
    # Values are frame indices; utterance 1 has 3 valid frames, then padding.
    source = torch.arange(5.0).repeat(2, 1).unsqueeze(-1)
    target = 100 + source
    lengths = torch.tensor([5, 3])
    src, tgt, valid = shifted_pairs(source, target, lengths, shift=2)
    assert valid.tolist() == [[True, True, True], [True, False, False]]
    assert src[..., 0].tolist() == [[0, 1, 2], [0, 1, 2]]
    assert tgt[..., 0].tolist() == [[102, 103, 104], [102, 103, 104]]

    _, _, valid0 = shifted_pairs(source, target, lengths, shift=0)
    assert valid0.tolist() == [[True] * 5, [True, True, True, False, False]]
    _, _, beyond = shifted_pairs(source, target, lengths, shift=4)
    assert beyond.tolist() == [[True], [False]]
    _, empty_target, none_valid = shifted_pairs(source, target, lengths, shift=7)
    assert empty_target.shape == (2, 0, 1) and none_valid.shape == (2, 0)


def test_shifted_layer_loss_ignores_tail_and_padding():
    # The teacher's frame t+2 equals the student's frame t; padded frames hold huge values.
    lengths = torch.tensor([6, 4])
    student = torch.arange(6.0).repeat(2, 1).unsqueeze(-1)
    teacher = student - 2
    for h in (student, teacher):
        h[1, 4:] = 1e6
    kd = HiddenLayerKd([(1, 1)], [Unchanged()], "l1", shift=2)
    assert kd([student], [teacher], lengths).item() == 0.0
    # Shift 1 misses by exactly one everywhere it pairs frames: (6-1) + (4-1) pairs, each 1.
    kd1 = HiddenLayerKd([(1, 1)], [Unchanged()], "l1", shift=1)
    assert kd1([student], [teacher], lengths).item() == pytest.approx(1.0)
    # Shift 0 pairs t with t: |t - (t - 2)| = 2 on the 10 valid frames.
    kd0 = HiddenLayerKd([(1, 1)], [Unchanged()], "l1", shift=0)
    assert kd0([student], [teacher], lengths).item() == pytest.approx(2.0)


def test_negative_shift_is_refused():
    with pytest.raises(ValueError, match="-1"):
        shifted_pairs(torch.zeros(1, 3, 1), torch.zeros(1, 3, 1), torch.tensor([3]), shift=-1)
    with pytest.raises(ValueError, match="apc_shift must be >= 0 frames, got -2"):
        KdConfig(method="aux", student_layers=(1,), apc_shift=-2)


# --- distances ------------------------------------------------------------------------


def test_distances_on_known_vectors():
    pred, target = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 0.0]])
    assert l1(pred, target).item() == pytest.approx(3.5)
    assert l2(pred, target).item() == pytest.approx(12.5)
    same, orthogonal, opposite = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]), torch.tensor([-3.0, 0.0])
    assert cos(same, 5 * same).item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert cos(same, orthogonal).item() == pytest.approx(math.log(2))
    assert cos(same, opposite).item() == pytest.approx(math.log(1 + math.e))
    # l1 = (|1-0| + |0-2|) / 2 = 1.5, plus -log sigmoid(0).
    assert l1_cos(same, orthogonal).item() == pytest.approx(1.5 + math.log(2))
    assert set(FRAME_DISTANCES) == {"l1", "l2", "cos", "l1_cos"}


def test_masked_mean_counts_valid_frames_only():
    values = torch.tensor([[1.0, 3.0, float("nan")], [5.0, 1e9, 1e9]], requires_grad=True)
    valid = torch.tensor([[True, True, False], [True, False, False]])
    mean = masked_mean(values, valid)
    assert mean.item() == pytest.approx(3.0)
    mean.backward()
    torch.testing.assert_close(values.grad, valid / 3.0)
    nothing = masked_mean(values, torch.zeros_like(valid))
    assert nothing.item() == 0.0 and nothing.requires_grad


# --- token KD ---------------------------------------------------------------------------


def test_token_kd_compares_student_frame_t_plus_delay_with_teacher_frame_t():
    torch.manual_seed(3)
    teacher = torch.randn(1, 8, 5).log_softmax(-1)
    student = torch.full_like(teacher, -math.log(5))  # uniform
    student[:, 2:] = teacher[:, :6]  # the student emits two frames late
    lengths = torch.tensor([8])
    assert TokenKd(delay=2)(student, teacher, lengths).item() == pytest.approx(0.0, abs=1e-6)
    assert TokenKd(delay=0)(student, teacher, lengths).item() > 0.05
    # KL against a uniform student is log V - H(teacher), per frame.
    uniform = torch.full_like(teacher, -math.log(5))
    p = teacher.exp()
    expected = (math.log(5) + (p * teacher).sum(-1)).mean().item()
    assert TokenKd()(uniform, teacher, lengths).item() == pytest.approx(expected, rel=1e-5)


# --- layer mapping ----------------------------------------------------------------------


def test_proportional_mapping():
    assert [proportional_layer(l, 6, 6) for l in range(1, 7)] == [1, 2, 3, 4, 5, 6]
    assert [proportional_layer(l, 3, 6) for l in (1, 2, 3)] == [2, 4, 6]
    assert [proportional_layer(l, 6, 2) for l in range(1, 7)] == [1, 1, 1, 2, 2, 2]
    assert layer_pairs([3, 6], 6, 12) == [(3, 6), (6, 12)]
    assert layer_pairs([1, 2], 2, 4, teacher_layers=[1, 4]) == [(1, 1), (2, 4)]
    with pytest.raises(ValueError, match="student layer 7 is outside 1..6"):
        layer_pairs([7], 6, 6)
    with pytest.raises(ValueError, match="teacher layer 9 is outside 1..6"):
        layer_pairs([1], 6, 6, teacher_layers=[9])


# --- auxiliary branches -----------------------------------------------------------------


def aux_branch(**options):
    torch.manual_seed(4)
    return AuxBranch(16, 24, num_heads=2, ff_dim=32, dropout=0.0, config=AuxConfig(**options), conv_kernel=5).eval()


def test_default_aux_branch_is_permutation_equivariant_over_time():
    # Without positions, a full-attention branch cannot tell which frame is k steps ahead.
    torch.manual_seed(5)
    x, lengths, perm = torch.randn(2, 11, 16), torch.tensor([11, 11]), torch.randperm(11)
    branch = aux_branch()
    with torch.no_grad():
        torch.testing.assert_close(branch(x, lengths)[:, perm], branch(x[:, perm], lengths), atol=1e-5, rtol=0)
    for variant in (dict(positional="relative"), dict(attention="causal"), dict(type="conformer")):
        other = aux_branch(**variant)
        with torch.no_grad():
            assert not torch.allclose(other(x, lengths)[:, perm], other(x[:, perm], lengths), atol=1e-3), variant


def test_aux_branch_sees_the_whole_utterance_but_not_padding():
    torch.manual_seed(6)
    x, lengths = torch.randn(1, 10, 16), torch.tensor([7])
    changed_future, changed_padding = x.clone(), x.clone()
    changed_future[:, 6] = torch.randn(16)  # not a constant offset: LayerNorm would remove it
    changed_padding[:, 7:] = 100 * torch.randn(3, 16)
    full, causal = aux_branch(), aux_branch(attention="causal")
    with torch.no_grad():
        assert (full(x, lengths)[:, 0] - full(changed_future, lengths)[:, 0]).abs().max() > 1e-4
        torch.testing.assert_close(causal(x, lengths)[:, :6], causal(changed_future, lengths)[:, :6])
        torch.testing.assert_close(full(x, lengths)[:, :7], full(changed_padding, lengths)[:, :7])


def permute_after(x, t, seed):
    """``x`` with the frames after ``t`` shuffled among themselves (not one left in place)."""
    gen = torch.Generator().manual_seed(seed)
    tail = x.size(1) - t - 1
    perm = torch.randperm(tail, generator=gen)
    while bool((perm == torch.arange(tail)).any()):
        perm = torch.randperm(tail, generator=gen)
    shuffled = x.clone()
    shuffled[:, t + 1 :] = x[:, t + 1 :][:, perm]
    return shuffled


CONFORMER_BRANCHES = [
    dict(type="conformer"),
    dict(type="conformer", attention="causal"),
    dict(type="conformer", conv_kernel=4),
]


@pytest.mark.parametrize(
    "options", [{}, *CONFORMER_BRANCHES], ids=["default", "conformer", "conformer-causal", "conformer-even-kernel"]
)
def test_aux_branch_cannot_tell_which_later_frame_is_k_ahead(options):
    # A shifted target asks position t for frame t + k. Shuffling the frames after t keeps what
    # the branch can see but moves frame t + k: outputs up to t must not change, so the branch
    # cannot copy the target; the student's own features must carry it.
    torch.manual_seed(7)
    x, lengths, t = torch.randn(1, 13, 16), torch.tensor([13]), 5
    options = dict(options)  # a copy: the parameter lists are shared between tests
    conv_kernel = options.pop("conv_kernel", 5)
    torch.manual_seed(4)
    branch = AuxBranch(
        16, 24, num_heads=2, ff_dim=32, dropout=0.0, config=AuxConfig(**options), conv_kernel=conv_kernel
    ).eval()
    with torch.no_grad():
        for seed in range(3):
            shuffled = permute_after(x, t, seed)
            torch.testing.assert_close(
                branch(x, lengths)[:, : t + 1], branch(shuffled, lengths)[:, : t + 1], atol=1e-5, rtol=0
            )
    if options.get("attention") == "causal":
        return  # nothing after t reaches t at all
    with torch.no_grad():  # the check can fail: relative positions do tell the later frames apart
        located = aux_branch(**options, positional="relative")
        assert not torch.allclose(
            located(x, lengths)[:, : t + 1], located(permute_after(x, t, 0), lengths)[:, : t + 1], atol=1e-3
        )


@pytest.mark.parametrize("options", CONFORMER_BRANCHES, ids=["full", "causal", "even-kernel"])
def test_conformer_branch_convolution_reads_no_future_frame(options):
    torch.manual_seed(8)
    x = torch.randn(1, 12, 16)
    options = dict(options)  # a copy: the parameter lists are shared between tests
    conv_kernel = options.pop("conv_kernel", 5)
    torch.manual_seed(4)
    branch = AuxBranch(
        16, 24, num_heads=2, ff_dim=32, dropout=0.0, config=AuxConfig(**options), conv_kernel=conv_kernel
    ).eval()
    conv = branch.layer.conv
    assert conv.causal
    for t in (0, 4, 10):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn(1, 11 - t, 16)
        with torch.no_grad():
            torch.testing.assert_close(conv(x)[:, : t + 1], conv(changed)[:, : t + 1])
            if options.get("attention") == "causal":  # then nothing after t reaches t at all
                lengths = torch.tensor([12])
                torch.testing.assert_close(branch(x, lengths)[:, : t + 1], branch(changed, lengths)[:, : t + 1])


def test_layer_kd_projects_only_across_widths():
    aux = AuxConfig()
    assert isinstance(branch_for("layer", 16, 32, 2, 32, 0.0, aux, 5), Projection)
    assert isinstance(branch_for("layer", 32, 32, 2, 32, 0.0, aux, 5), Unchanged)
    assert isinstance(branch_for("aux", 32, 32, 2, 32, 0.0, aux, 5), AuxBranch)


# --- objectives -------------------------------------------------------------------------


def objective(method, **kd):
    layers = {} if method == "token" else {"student_layers": (1,)}
    config = KdConfig(method=method, **layers, **kd)
    return DistillationObjective(student_model(), FrozenTeacher(teacher_model()), config, spec_augment=True)


@pytest.mark.parametrize("method, shift", [("layer", None), ("aux", 2)])
def test_hidden_kd_gradients_reach_distilled_student_layers_only(method, shift):
    obj = objective(method, apc_shift=shift).train()
    feats, lens, _ = batch()
    _, lengths, hidden = obj.student(feats, lens)
    _, _, teacher_hidden = obj.teacher(feats, lens)
    obj.kd(hidden, teacher_hidden, lengths).backward()
    blocks = obj.student.encoder.blocks
    # Layer 1 is distilled: its weights and the front-end get KD gradients; layer 2 gets none.
    assert blocks[0].ff1.net[1].weight.grad.abs().sum() > 0
    assert obj.student.encoder.subsampling.out.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in blocks[1].parameters())
    assert all(p.grad is None and not p.requires_grad for p in obj.teacher.parameters())
    assert all(p.grad is not None for p in obj.kd.parameters())


@pytest.mark.parametrize("method, shift", [("layer", None), ("layer", 2), ("aux", 0), ("aux", 2)])
def test_kd_term_alone_moves_the_student_towards_the_teachers_targets(method, shift):
    """A few optimiser steps on the KD term alone lower the distance it measures, on the
    batch trained and on another batch: the gradient points towards the teacher."""
    obj = objective(method, apc_shift=shift).train()
    obj.student.encoder.cmvn.requires_grad_(False)
    feats, lens, _ = batch()
    torch.manual_seed(3)
    other_feats, other_lens = torch.randn(2, 120, FEAT_DIM), torch.tensor([110, 97])

    def distance(x, lengths) -> float:
        with torch.no_grad():
            obj.eval()
            _, out_lengths, hidden = obj.student(x, lengths)
            _, _, teacher_hidden = obj.teacher(x, lengths)
            value = float(obj.kd(hidden, teacher_hidden, out_lengths))
            obj.train()
            return value

    before, before_other = distance(feats, lens), distance(other_feats, other_lens)
    params = [p for p in obj.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    for _ in range(15):
        optimizer.zero_grad()
        _, lengths, hidden = obj.student(feats, lens)
        _, _, teacher_hidden = obj.teacher(feats, lens)
        obj.kd(hidden, teacher_hidden, lengths).backward()
        optimizer.step()
    after, after_other = distance(feats, lens), distance(other_feats, other_lens)
    assert after < 0.8 * before, (before, after)
    assert after_other < before_other, (before_other, after_other)


def test_token_kd_gradients_reach_the_student_not_the_teacher():
    obj = objective("token", temperature=2.0).train()
    feats, lens, _ = batch()
    log_probs, lengths, _ = obj.student(feats, lens)
    teacher_log_probs, _, _ = obj.teacher(feats, lens)
    obj.kd(log_probs, teacher_log_probs, lengths).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.student.encoder.blocks[-1].parameters())
    assert all(p.grad is None for p in obj.teacher.parameters())


def transducer_head(seed: int) -> TransducerHead:
    torch.manual_seed(seed)
    config = HeadConfig(type="transducer", decoder_dim=8, joiner_dim=8, context_size=2, prune_range=3)
    return TransducerHead(16, VOCAB, config)


@pytest.mark.k2
def test_transducer_token_kd_pairs_student_frame_t_plus_delay_with_teacher_frame_t():
    head = transducer_head(0)
    torch.manual_seed(3)
    # Scaled up so that the joiner's distributions are far from uniform.
    teacher_out, lengths, targets = 5 * torch.randn(2, 12, 16), torch.tensor([12, 9]), [[1, 2, 3], [4, 5]]
    assert TransducerTokenKd()(head, head, teacher_out, teacher_out, lengths, targets).item() == pytest.approx(
        0.0, abs=1e-6
    )
    # The student emits everything two frames later than the teacher.
    student_out = torch.cat([5 * torch.randn(2, 2, 16), teacher_out[:, :-2]], dim=1)
    assert TransducerTokenKd(delay=2)(head, head, student_out, teacher_out, lengths, targets).item() == pytest.approx(
        0.0, abs=1e-6
    )
    assert TransducerTokenKd(delay=0)(head, head, student_out, teacher_out, lengths, targets).item() > 0.01
    # Padded frames (beyond length 9 of the second utterance) never count.
    noisy = teacher_out.clone()
    noisy[1, 9:] = 1e3
    assert TransducerTokenKd()(head, head, teacher_out, noisy, lengths, targets).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.k2
def test_transducer_token_kd_gradients_reach_the_student_not_the_teacher():
    student, teacher = transducer_head(0), transducer_head(1).requires_grad_(False)
    torch.manual_seed(4)
    student_out = torch.randn(2, 12, 16, requires_grad=True)
    teacher_out, lengths, targets = torch.randn(2, 12, 16), torch.tensor([12, 9]), [[1, 2, 3], [4, 5]]
    kd = TransducerTokenKd(temperature=2.0)(student, teacher, student_out, teacher_out, lengths, targets)
    assert kd.item() > 0
    kd.backward()
    assert student_out.grad.abs().sum() > 0 and student_out.grad[1, 9:].abs().sum() == 0
    assert student.joiner.output.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.k2
def test_token_kd_on_a_transducer_student_needs_a_transducer_teacher():
    head = {"type": "transducer", "decoder_dim": 8, "joiner_dim": 8}
    torch.manual_seed(1)
    student = build_asr_model(STUDENT, VOCAB, head)
    kd = KdConfig(method="token")
    obj = DistillationObjective(student, FrozenTeacher(build_asr_model(TEACHER, VOCAB, head)), kd, spec_augment=False)
    assert isinstance(obj.kd, TransducerTokenKd)
    feats, lens, targets = batch()
    loss, stats, frames = obj(feats, lens, targets)
    assert stats["kd"] > 0 and "rnnt_pruned" in stats and "ctc" not in stats
    with pytest.raises(ValueError, match="needs a teacher with a transducer head; the teacher's head is 'ctc'"):
        DistillationObjective(student, FrozenTeacher(teacher_model()), kd, spec_augment=False)


def test_objective_total_is_ctc_plus_weighted_kd_and_teacher_stays_frozen():
    obj = objective("aux", apc_shift=1, weight=0.5).eval()
    feats, lens, targets = batch()
    loss, stats, frames = obj(feats, lens, targets)
    assert loss.item() / frames == pytest.approx(stats["ctc"] + 0.5 * stats["kd"], rel=1e-5)
    obj.train()
    assert not obj.teacher.training and not obj.teacher.model.training and obj.student.training
    (loss / frames).backward()
    assert all(p.grad is None for p in obj.teacher.parameters())


@pytest.mark.parametrize("teacher_input, teacher_sees_clean", [("clean", True), ("augmented", False)])
def test_teacher_input_switch(teacher_input, teacher_sees_clean):
    obj = objective("layer", teacher_input=teacher_input).train()
    seen = {}
    obj.teacher.register_forward_hook(lambda m, args, out: seen.__setitem__("teacher", args[0]))
    obj.student.register_forward_hook(lambda m, args, out: seen.__setitem__("student", args[0]))
    feats, lens, targets = batch()
    random.seed(0)
    torch.manual_seed(0)
    obj(feats, lens, targets)
    assert not torch.equal(seen["student"], feats)  # the student always trains on SpecAugmented input
    assert torch.equal(seen["teacher"], feats) == teacher_sees_clean
    assert torch.equal(seen["teacher"], seen["student"]) == (not teacher_sees_clean)
    obj.eval()
    obj(feats, lens, targets)
    assert torch.equal(seen["student"], feats)  # no augmentation when validating


def test_saved_aux_student_is_the_baseline_student(tmp_path):
    obj = objective("aux", apc_shift=2)
    baseline = CtcObjective(student_model())
    save_model(tmp_path / "model.pt", obj.deployable())
    loaded, _ = load_model(tmp_path / "model.pt")
    assert type(loaded) is type(baseline.deployable())
    assert list(loaded.state_dict()) == list(baseline.deployable().state_dict())
    deployed = sum(p.numel() for p in loaded.parameters())
    assert deployed == sum(p.numel() for p in baseline.parameters())
    training = sum(p.numel() for p in obj.parameters() if p.requires_grad)
    assert training == deployed + sum(p.numel() for p in obj.kd.parameters()) > deployed


# --- teacher checkpoint -----------------------------------------------------------------


def test_teacher_checkpoint_errors_name_the_path_and_the_mismatch(tmp_path):
    missing = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(TeacherCheckpointError, match=f"teacher checkpoint not found: {missing}"):
        load_teacher(missing, VOCAB, FEAT_DIM)

    path = tmp_path / "teacher.pt"
    save_model(path, teacher_model(), meta={"role": "teacher", "config_hash": "abc"})
    teacher = load_teacher(path, VOCAB, FEAT_DIM, teacher_layers=[4], expected_encoder={"d_model": 32})
    assert teacher.meta["config_hash"] == "abc" and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())

    for kwargs, message in [
        (dict(vocab_size=VOCAB + 1), "vocab_size=10 but the BPE model has 11 tokens"),
        (dict(teacher_layers=[5]), "teacher layer 5 is requested but it has 4 layers"),
        (dict(expected_encoder={"d_model": 64}), "model.teacher.d_model=64 in the config but the checkpoint has 32"),
    ]:
        args = {"vocab_size": VOCAB, "feat_dim": FEAT_DIM, **kwargs}
        with pytest.raises(TeacherCheckpointError, match=str(path)) as err:
            load_teacher(path, **args)
        assert message in str(err.value)

    streaming = tmp_path / "student.pt"
    save_model(streaming, student_model(), meta={"role": "student"})
    with pytest.raises(TeacherCheckpointError, match="not full-context"):
        load_teacher(streaming, VOCAB, FEAT_DIM)


def test_kd_methods_need_a_teacher_and_the_baseline_refuses_one(tmp_path):
    opt = OptimisationConfig(num_epochs=1, max_duration=10, peak_lr=1e-3, warmup_steps=0)
    with pytest.raises(ValueError, match="method 'aux' needs a teacher checkpoint"):
        build_objective(student_model(), KdConfig(method="aux", student_layers=(1,)), opt, None)
    with pytest.raises(ValueError, match="uses no teacher"):
        build_objective(student_model(), KdConfig(), opt, tmp_path / "teacher.pt")
    assert isinstance(build_objective(student_model(), KdConfig(), opt, None), CtcObjective)


def test_kd_config_rejects_bad_values_by_name():
    with pytest.raises(ValueError, match="method='distil' is not one of"):
        KdConfig(method="distil")
    with pytest.raises(ValueError, match="kd.loss='l3'"):
        KdConfig(method="layer", student_layers=(1,), loss="l3")
    with pytest.raises(ValueError, match="needs at least one student layer"):
        KdConfig(method="aux")
    with pytest.raises(ValueError, match="method 'token' has no APC shift"):
        KdConfig(method="token", apc_shift=1)
    with pytest.raises(ValueError, match="kd.aux.positional='absolute'"):
        KdConfig.from_dict({"method": "aux", "student_layers": [1], "aux": {"positional": "absolute"}})
    with pytest.raises(ValueError, match="unknown kd option"):
        KdConfig.from_dict({"method": "aux", "layers": [1]})


def test_kd_objective_checkpoint_round_trip_keeps_teacher_frozen():
    # Epoch checkpoints hold the whole objective; resuming must restore branches and student.
    trained = objective("aux", apc_shift=1).eval()
    torch.manual_seed(9)
    fresh = DistillationObjective(
        build_asr_model(STUDENT, VOCAB),
        FrozenTeacher(build_asr_model(TEACHER, VOCAB)),
        trained.kd_config,
        spec_augment=True,
    ).eval()
    feats, lens, targets = batch()
    assert fresh(feats, lens, targets)[1] != trained(feats, lens, targets)[1]
    fresh.load_state_dict(trained.state_dict())
    assert fresh(feats, lens, targets)[1] == trained(feats, lens, targets)[1]
    assert not any(p.requires_grad for p in fresh.teacher.parameters())
