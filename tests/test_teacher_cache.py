"""The teacher-target cache: stored targets, their checks, and KD losses equal to the live teacher's."""

import json
import subprocess
import sys

import pytest
import torch
from lhotse import CutSet

from streamkd.config import ConfigError, check_distillation
from streamkd.data.loaders import eval_dataloader, make_spec_augment, spec_augment_batch, train_dataloader, unpack_batch
from streamkd.distill.config import KdConfig
from streamkd.distill.grid import expand_grid, parse_teacher_cache_name, teacher_cache_name
from streamkd.distill.teacher import load_teacher
from streamkd.distill.teacher_cache import (
    MAX_ABS_ERROR,
    POSTERIOR_FIELD,
    TargetSpec,
    TeacherCacheError,
    build_teacher_cache,
    layer_field,
    open_teacher_cache,
    targets_for_objective,
)
from streamkd.model import build_asr_model
from streamkd.model.checkpoint import save_model
from streamkd.provenance import content_digest
from streamkd.training.objectives import DistillationObjective

from helpers import write_feature_cuts

FEAT_DIM = 80
VOCAB = 12
TEACHER = dict(
    feat_dim=FEAT_DIM,
    d_model=32,
    num_layers=3,
    num_heads=2,
    ff_dim=64,
    conv_kernel=5,
    dropout=0.0,
    subsampling_channels=8,
)
STUDENT = dict(TEACHER, d_model=24, num_layers=2, ff_dim=48, causal=True, chunk_size=2)
ALL_TARGETS = TargetSpec(layers=(1, 2, 3), posteriors=True)
LENGTHS = (97, 143, 120, 64, 181)
# The teacher's float32 outputs for an utterance change with the batch it is padded into: by
# ~1e-6 on some CPUs, up to 3.5e-5 on AVX-512 ones. Still far below float16's rounding error
# (~1e-3 at the values checked) and a mix-up of cuts (~1).
BATCHING_NOISE = 1e-4


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A saved tiny teacher, five feature cuts, and the cache of every teacher output for them."""
    root = tmp_path_factory.mktemp("cache")
    torch.manual_seed(0)
    teacher = build_asr_model(TEACHER, VOCAB)
    # Larger weights than at initialisation, so hidden values span several units as a trained
    # model's do and quantisation is tested over a realistic range.
    with torch.no_grad():
        for p in teacher.parameters():
            p.mul_(3.0)
    save_model(root / "teacher.pt", teacher, meta={"role": "teacher", "config_hash": "abc"})
    feats = [torch.randn(n, FEAT_DIM) * 2 + 1 for n in LENGTHS]
    texts = ["A B C", "B C D E", "C D", "D", "E F A B"]
    cuts = write_feature_cuts(root, feats, texts)
    frozen = load_teacher(root / "teacher.pt")
    summary = build_teacher_cache(frozen, root / "teacher.pt", cuts, root / "targets" / "cuts.jsonl.gz", ALL_TARGETS)
    return {
        "root": root,
        "teacher": frozen,
        "cuts": cuts,
        "cached": root / "targets" / "cuts.jsonl.gz",
        "summary": summary,
    }


def cached_batch(cache, fields):
    """The whole cut set as one batch, from the cache, with its targets."""
    cuts = open_teacher_cache(
        cache["cached"], cache["root"] / "teacher.pt", ALL_TARGETS, [c.id for c in CutSet.from_file(cache["cuts"])]
    )
    loader = eval_dataloader(cuts, max_duration=1000, teacher_fields=fields)
    batches = [unpack_batch(raw) for raw in loader]
    assert len(batches) == 1
    return batches[0]


def test_cached_targets_are_the_teachers_outputs_within_the_stated_bound(cache):
    batch = cached_batch(cache, ALL_TARGETS.fields)
    log_probs, lengths, hidden = cache["teacher"](batch.feats, batch.feat_lens)
    assert torch.equal(batch.teacher["lengths"], lengths)
    for b, n in enumerate(lengths.tolist()):
        for layer in ALL_TARGETS.layers:
            live, stored = hidden[layer - 1][b, :n], batch.teacher[layer_field(layer)][b, :n]
            assert live.abs().max() > 2.0  # a range where float16 would lose more than lilcom does
            assert (live - stored).abs().max() <= MAX_ABS_ERROR + BATCHING_NOISE
        stored = batch.teacher[POSTERIOR_FIELD][b, :n]
        assert (log_probs[b, :n] - stored).abs().max() <= MAX_ABS_ERROR + BATCHING_NOISE
    # Not a lossless copy either: quantisation really happened.
    assert not torch.equal(hidden[0][0, :10], batch.teacher[layer_field(1)][0, :10])


def test_summary_reports_size_per_hour_and_what_is_stored(cache):
    summary = cache["summary"]
    assert summary["num_cuts"] == len(LENGTHS)
    assert summary["fields"] == ["teacher_layer1", "teacher_layer2", "teacher_layer3", POSTERIOR_FIELD]
    storage = cache["cached"].parent / "targets.lca"
    assert summary["bytes"] == storage.stat().st_size > 0
    hours = sum(LENGTHS) * 0.01 / 3600
    assert summary["megabytes_per_hour"] == pytest.approx(summary["bytes"] / 1e6 / hours, rel=1e-2)
    # Compressed below float32 (4 bytes per stored value).
    values = sum((n - 7) // 4 * (32 * 3 + VOCAB) for n in LENGTHS)
    assert summary["bytes"] < 4 * values


def objective(cache, method, loss="l1_cos", shift=None):
    torch.manual_seed(5)
    student = build_asr_model(STUDENT, VOCAB)
    layers = {"token": {}, "layer": {"student_layers": (1, 2)}, "aux": {"student_layers": (1, 2)}}[method]
    kd = KdConfig(method=method, loss=loss, apc_shift=shift, teacher_targets="cache", **layers)
    return DistillationObjective(student, cache["teacher"], kd, spec_augment=False).train()


def kd_loss_and_grads(obj, batch, targets, cached):
    obj.zero_grad()
    loss, stats, frames = obj(batch.feats, batch.feat_lens, targets, teacher_targets=batch.teacher if cached else None)
    (loss / frames).backward()
    grads = {n: p.grad.clone() for n, p in obj.named_parameters() if p.grad is not None}
    return stats["kd"], grads


def first_order_bound(obj, batch, targets):
    """eps * ||dL_kd / d(teacher targets)||_1: how far quantising every target by at most eps
    can move the KD loss, to first order (the bound the cached loss is held to)."""
    log_probs, lengths, hidden = obj.student(batch.feats, batch.feat_lens)
    t_log_probs, _, t_hidden = obj.teacher(batch.feats, batch.feat_lens)
    t_log_probs = t_log_probs.clone().requires_grad_(True)
    t_hidden = [h.clone().requires_grad_(True) for h in t_hidden]
    if obj.kd_config.method == "token":
        kd = obj.kd(log_probs, t_log_probs, lengths)
        leaves = [t_log_probs]
    else:
        kd = obj.kd(hidden, t_hidden, lengths)
        leaves = t_hidden
    grads = torch.autograd.grad(kd, leaves, allow_unused=True)
    return MAX_ABS_ERROR * sum(g.abs().sum().item() for g in grads if g is not None)


CASES = [("token", "l1_cos", None)] + [
    (method, loss, shift)
    for method in ("layer", "aux")
    for loss in ("l1", "l2", "cos", "l1_cos")
    for shift in (None, 2)
]


@pytest.mark.parametrize("method, loss, shift", CASES)
def test_kd_loss_and_gradients_from_the_cache_equal_the_live_teachers(cache, method, loss, shift):
    if method == "aux" and shift is None:
        shift = 0
    batch = cached_batch(cache, ALL_TARGETS.fields)
    obj = objective(cache, method, loss, shift)
    targets = [[1 + (i + j) % (VOCAB - 1) for j in range(3)] for i in range(len(LENGTHS))]
    live, live_grads = kd_loss_and_grads(obj, batch, targets, cached=False)
    cached, cached_grads = kd_loss_and_grads(obj, batch, targets, cached=True)
    bound = first_order_bound(obj, batch, targets)
    assert abs(live - cached) <= 1.5 * bound + 1e-7
    assert bound < 1e-2 * abs(live)  # the bound itself is small: the cache changes the loss by < 1 %
    assert live_grads.keys() == cached_grads.keys()
    for name, g in live_grads.items():
        assert (g - cached_grads[name]).norm() <= 1e-2 * g.norm() + 1e-7, name


def test_training_batches_carry_the_targets_of_their_own_cuts(cache):
    cuts = open_teacher_cache(
        cache["cached"],
        cache["root"] / "teacher.pt",
        TargetSpec(layers=(2,)),
        [c.id for c in CutSet.from_file(cache["cuts"])],
    )
    loader = train_dataloader(
        cuts, max_duration=3.0, seed=1, spec_augment=False, num_buckets=2, teacher_fields=[layer_field(2)]
    )
    seen = 0
    for raw in loader:
        batch = unpack_batch(raw)
        _, lengths, hidden = cache["teacher"](batch.feats, batch.feat_lens)
        assert torch.equal(batch.teacher["lengths"], lengths)
        for b, n in enumerate(lengths.tolist()):
            assert (
                batch.teacher[layer_field(2)][b, :n] - hidden[1][b, :n]
            ).abs().max() <= MAX_ABS_ERROR + BATCHING_NOISE
        seen += len(batch.cut_ids)
    assert seen == len(LENGTHS)


def test_cached_lengths_that_disagree_with_the_student_are_refused():
    cached = {"lengths": torch.tensor([5, 3]), layer_field(1): torch.zeros(2, 5, 4)}
    with pytest.raises(TeacherCacheError, match=r"\[5, 3\] frames but the student produced \[5, 4\]"):
        targets_for_objective(cached, torch.tensor([5, 4]), 5, 2)
    log_probs, hidden = targets_for_objective(cached, torch.tensor([5, 3]), 7, 2)
    assert log_probs is None and hidden[1] is None and hidden[0].shape == (2, 7, 4)


def test_a_cache_from_another_teacher_or_other_cuts_or_without_a_field_is_refused(cache, tmp_path):
    ids = [c.id for c in CutSet.from_file(cache["cuts"])]
    other = tmp_path / "other.pt"
    torch.manual_seed(9)
    save_model(other, build_asr_model(TEACHER, VOCAB), meta={"role": "teacher"})
    with pytest.raises(TeacherCacheError, match="another teacher checkpoint than .*other.pt"):
        open_teacher_cache(cache["cached"], other, TargetSpec(layers=(1,)), ids)
    with pytest.raises(TeacherCacheError, match="no targets for 1 training cut.*unknown-cut"):
        open_teacher_cache(
            cache["cached"], cache["root"] / "teacher.pt", TargetSpec(layers=(1,)), ids + ["unknown-cut"]
        )
    with pytest.raises(TeacherCacheError, match="lacks teacher_layer4"):
        open_teacher_cache(cache["cached"], cache["root"] / "teacher.pt", TargetSpec(layers=(4,)), ids)
    with pytest.raises(TeacherCacheError, match="teacher cache not found"):
        open_teacher_cache(tmp_path / "none.jsonl.gz", cache["root"] / "teacher.pt", TargetSpec(layers=(1,)), ids)


def test_a_cache_from_another_training_manifest_or_features_is_refused(cache, tmp_path):
    ids = [c.id for c in CutSet.from_file(cache["cuts"])]
    teacher = cache["root"] / "teacher.pt"
    assert cache["summary"]["cuts_sha256"] == content_digest(cache["cuts"])
    assert open_teacher_cache(cache["cached"], teacher, TargetSpec(layers=(1,)), ids, cache["cuts"])

    # The same cut ids, one cut shorter: a changed training manifest.
    changed = tmp_path / "cuts.jsonl.gz"
    cuts = list(CutSet.from_file(cache["cuts"]))
    CutSet.from_cuts([cuts[0].truncate(duration=cuts[0].duration / 2), *cuts[1:]]).to_file(changed)
    with pytest.raises(TeacherCacheError) as refused:
        open_teacher_cache(cache["cached"], teacher, TargetSpec(layers=(1,)), ids, changed)
    message = str(refused.value)
    assert "another training cuts manifest" in message and str(changed) in message
    assert cache["summary"]["cuts_sha256"] in message and content_digest(changed) in message

    # The same manifest over rewritten features.
    copy = tmp_path / "features"
    feats = [torch.randn(n, FEAT_DIM) for n in LENGTHS]
    moved = write_feature_cuts(copy, feats, ["A"] * len(LENGTHS))
    summary_path = cache["cached"].parent / "summary.json"
    summary = json.loads(summary_path.read_text())
    try:
        summary_path.write_text(json.dumps({**summary, "cuts_sha256": content_digest(moved)}))
        with pytest.raises(TeacherCacheError, match="another feature archive"):
            open_teacher_cache(cache["cached"], teacher, TargetSpec(layers=(1,)), ids, moved)
    finally:
        summary_path.write_text(json.dumps(summary))


def test_the_cache_is_refused_where_its_targets_would_be_stale(repo):
    with pytest.raises(ValueError, match="kd.teacher_targets='cache' needs kd.teacher_input='clean'"):
        KdConfig(method="layer", student_layers=(1,), teacher_input="augmented", teacher_targets="cache")
    import yaml

    config = yaml.safe_load((repo / "config.yaml").read_text())
    config["grid"]["methods"] = ["none", "aux"]
    config["kd"]["teacher_input"] = "augmented"
    with pytest.raises(ConfigError, match="kd.teacher_targets=cache needs kd.teacher_input=clean"):
        check_distillation(config)
    config["kd"]["teacher_targets"] = "live"
    check_distillation(config)


def test_each_kd_cell_reads_the_cache_of_exactly_the_teacher_outputs_it_needs(repo):
    import yaml

    config = yaml.safe_load((repo / "config.yaml").read_text())
    config["model"]["teacher"]["num_layers"] = 6
    grid = {
        "chunk_sizes": [4],
        "seeds": [1],
        "methods": ["none", "token", "layer", "aux"],
        "kd_layers": [[2, 4], {"student": [1], "teacher": [5]}],
        "apc_shifts": [0, 2],
    }
    names = {cell.run_name: teacher_cache_name(cell, config) for cell in expand_grid(grid)}
    assert names["none-chunk4-seed1"] is None
    assert names["token-chunk4-seed1"] == "posteriors"
    assert names["layer-chunk4-layers2_4-seed1"] == "layers3_6"  # 2 -> 3 and 4 -> 6 of 6 layers
    assert names["aux-chunk4-layers2_4-shift2-seed1"] == "layers3_6"  # the shift does not matter
    assert names["aux-chunk4-layers1-teacher5-shift0-seed1"] == "layers5"
    assert parse_teacher_cache_name("layers3_6") == ([3, 6], False)
    assert parse_teacher_cache_name("posteriors") == ([], True)
    config["model"]["head"] = {"type": "transducer"}
    token = next(c for c in expand_grid(grid) if c.method == "token")
    assert teacher_cache_name(token, config) == "layers6"  # the transducer joiner reads the last layer
    config["kd"]["teacher_targets"] = "live"
    assert all(teacher_cache_name(c, config) is None for c in expand_grid(grid))


def test_kd_spec_augment_masks_but_never_moves_frames():
    """With time warping a student frame t would hold content of teacher frame t +- 30."""
    t = torch.arange(300, dtype=torch.float32)
    feats = (t.view(1, -1, 1) + torch.arange(80).view(1, 1, -1) / 100).repeat(3, 1, 1)
    lens = torch.tensor([300, 250, 180])
    torch.manual_seed(0)
    augmented = spec_augment_batch(make_spec_augment(time_warp=False), feats, lens)
    changed = augmented != feats
    assert changed.any() and (~changed).float().mean() > 0.5
    for b in range(3):
        # Every changed entry holds the mask value, never another frame's content.
        assert augmented[b][changed[b]].unique().numel() <= 1
    warped = spec_augment_batch(make_spec_augment(time_warp=True), feats, lens)
    assert any(warped[b][(warped != feats)[b]].unique().numel() > 100 for b in range(3))


def test_cache_teacher_command_writes_the_cache(cache, tmp_path):
    out = tmp_path / "targets" / "cuts_train.jsonl.gz"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamkd.cli",
            "cache-teacher",
            "--teacher",
            str(cache["root"] / "teacher.pt"),
            "--cuts",
            str(cache["cuts"]),
            "--out-cuts",
            str(out),
            "--layers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out.parent / "summary.json").read_text())
    assert summary["fields"] == ["teacher_layer2"] and summary["num_cuts"] == len(LENGTHS)
    assert {c.id for c in CutSet.from_file(out)} == {c.id for c in CutSet.from_file(cache["cuts"])}
    assert not list(out.parent.glob(".*"))  # no temporary files left behind
