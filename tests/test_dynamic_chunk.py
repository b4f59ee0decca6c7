"""Dynamic-chunk students: the sampled chunk sizes, the config checks, the grid, decoding and
export at an explicit chunk size, and records decoded at several chunk sizes."""

import json
from collections import Counter

import pandas as pd
import pytest
import torch

from streamkd.config import ConfigError, load_config, validate_config
from streamkd.deploy.chunk_encoder import ChunkEncoder
from streamkd.distill.grid import GridCell, decode_chunk_sizes, expand_grid
from streamkd.dynamic_chunk import DynamicChunk, decode_key, split_decode_key
from streamkd.model import ConformerEncoder, build_asr_model
from streamkd.model.checkpoint import save_model
from streamkd.results.config import ResultsConfig, ResultsConfigError
from streamkd.results.load import RecordError, load_records
from streamkd.results.record import build_record, write_record
from streamkd.results.table_writer import aggregate

from helpers import REPO, job_counts, run_snakemake, train_tiny_bpe

TINY = dict(feat_dim=20, d_model=16, num_layers=2, num_heads=2, ff_dim=32, conv_kernel=3, dropout=0.0)
DYNAMIC = {"chunk_sizes": [1, 4, 16], "probabilities": [0.2, 0.5, 0.3]}


def test_sampled_chunk_sizes_follow_the_configured_distribution():
    dynamic = DynamicChunk.from_dict({**DYNAMIC, "left_chunks": [-1, 2], "left_chunk_probabilities": [0.75, 0.25]})
    generator = torch.Generator().manual_seed(7)
    draws = [dynamic.sample(generator) for _ in range(20000)]
    chunks = Counter(c for c, _ in draws)
    lefts = Counter(left for _, left in draws)
    # Binomial standard deviation at n=20000 is at most 0.0036: 0.015 is over 4 of them.
    for size, p in zip(DYNAMIC["chunk_sizes"], DYNAMIC["probabilities"]):
        assert chunks[size] / len(draws) == pytest.approx(p, abs=0.015), (size, chunks)
    assert lefts[-1] / len(draws) == pytest.approx(0.75, abs=0.015)
    assert set(chunks) == {1, 4, 16} and set(lefts) == {-1, 2}
    # Deterministic under the seed.
    again = torch.Generator().manual_seed(7)
    assert [dynamic.sample(again) for _ in range(200)] == draws[:200]


def test_the_encoder_samples_a_chunk_per_training_forward_reproducibly(monkeypatch):
    import streamkd.model.encoder as encoder_module

    used = []
    real_mask = encoder_module.attention_mask

    def recording_mask(lengths, max_len, chunk_size=None, left_chunks=-1):
        used.append((chunk_size, left_chunks))
        return real_mask(lengths, max_len, chunk_size, left_chunks)

    monkeypatch.setattr(encoder_module, "attention_mask", recording_mask)
    encoder = ConformerEncoder(**TINY, causal=True, left_chunks=3, dynamic_chunk=DYNAMIC).train()
    feats, lens = torch.randn(2, 80, 20), torch.tensor([80, 60])

    def run(seed):
        used.clear()
        torch.manual_seed(seed)
        for _ in range(60):
            encoder(feats, lens)
        return list(used)

    first = run(1)
    assert first == run(1)  # the run's seed fixes the sequence of chunk sizes
    assert first != run(2)
    assert {c for c, _ in first} == {1, 4, 16} and {left for _, left in first} == {3}  # model.left_chunks
    # A call that names its chunk size (decoding) is not sampled.
    used.clear()
    encoder(feats, lens, chunk_size=4)
    assert used == [(4, 3)]
    # Eval mode: the trainer's dev loss at a set size, otherwise an error.
    encoder.eval()
    with pytest.raises(ValueError, match="no single chunk size"):
        encoder(feats, lens)
    encoder.eval_chunk_size = 16
    used.clear()
    encoder(feats, lens)
    assert used == [(16, 3)]


@pytest.fixture
def config():
    config = load_config(REPO / "config.yaml")
    config["grid"].update(chunk_sizes=[4, "dynamic"], dynamic_chunk=dict(DYNAMIC))
    return config


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("chunk_sizes", [], "grid.dynamic_chunk.chunk_sizes: [] should be non-empty"),
        ("chunk_sizes", [4, 0, 16], "grid.dynamic_chunk.chunk_sizes.1: 0 is less than the minimum of 1"),
        ("chunk_sizes", [4, -2, 16], "grid.dynamic_chunk.chunk_sizes.1: -2 is less than the minimum of 1"),
        ("probabilities", [0.2, 0.5, 0.2], "grid.dynamic_chunk.probabilities: [0.2, 0.5, 0.2] sum to 0.9, not 1"),
        ("probabilities", [0.7, -0.2, 0.5], "grid.dynamic_chunk.probabilities.1: -0.2 is less than the minimum of 0"),
        (
            "probabilities",
            [0.5, 0.5],
            "grid.dynamic_chunk.probabilities: [0.5, 0.5] has 2 entries but chunk_sizes has 3",
        ),
        ("left_chunks", [-2, 4], "grid.dynamic_chunk.left_chunks.0: -2 is less than the minimum of -1"),
        ("left_chunk_probabilities", [1.0], "left_chunk_probabilities is given without dynamic_chunk.left_chunks"),
        ("sizes", [1, 2], "grid.dynamic_chunk: Additional properties are not allowed ('sizes' was unexpected)"),
    ],
)
def test_impossible_dynamic_chunk_settings_are_refused_by_name(config, key, value, message):
    config["grid"]["dynamic_chunk"][key] = value
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert message in str(err.value)


def test_dynamic_chunk_settings_must_come_together(config):
    validate_config(config)
    assert decode_chunk_sizes(config) == [4]  # the grid's integer sizes by default
    config["decoding"]["chunk_sizes"] = [1, 16]
    assert decode_chunk_sizes(validate_config(config)) == [1, 16]
    config["grid"]["chunk_sizes"] = ["dynamic"]
    del config["decoding"]["chunk_sizes"]
    with pytest.raises(ConfigError, match="there are none .*set decoding.chunk_sizes"):
        validate_config(config)
    config["grid"]["chunk_sizes"] = [4, "fast"]
    with pytest.raises(ConfigError, match="grid.chunk_sizes.1: 'fast' does not match"):
        validate_config(config)
    config["grid"]["chunk_sizes"] = ["dynamic"]
    config["decoding"]["chunk_sizes"] = [4]
    del config["grid"]["dynamic_chunk"]
    with pytest.raises(ConfigError, match="grid.chunk_sizes lists 'dynamic' but grid.dynamic_chunk is not set"):
        validate_config(config)
    config["grid"]["chunk_sizes"] = [4]
    with pytest.raises(ConfigError, match="decoding.chunk_sizes applies to dynamic-chunk students only"):
        validate_config(config)


def test_dynamic_cells_are_named_chunkdynamic_and_take_no_chunk_size():
    grid = {"chunk_sizes": [4, "dynamic"], "seeds": [1], "methods": ["none", "aux"], "kd_layers": [[2, 4]]}
    names = [c.run_name for c in expand_grid(grid)]
    assert names == [
        "none-chunk4-seed1",
        "aux-chunk4-layers2_4-shift0-seed1",
        "none-chunkdynamic-seed1",
        "aux-chunkdynamic-layers2_4-shift0-seed1",
    ]
    assert GridCell("none", "dynamic", 2).train_args() == ["--method", "none", "--seed", "2"]
    assert decode_key("ctc-1best", 4) == "ctc-1best@chunk4" and decode_key("ctc-1best", None) == "ctc-1best"
    assert split_decode_key("ctc-1best-streaming@chunk16") == ("ctc-1best-streaming", 16)
    assert split_decode_key("ctc-hlg") == ("ctc-hlg", None)
    with pytest.raises(ValueError, match="not a decode name"):
        split_decode_key("ctc-1best@chunk0")


@pytest.mark.k2
def test_the_dynamic_evidence_config_schedules_one_student_per_method_and_seed(tmp_path):
    config = REPO / "workflow/configs/embedded-grid-dynamic.yaml"
    result = run_snakemake(
        tmp_path, "-n", "--quiet", configfiles=[REPO / "workflow/configs/embedded-grid.yaml", config]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = job_counts(result.stdout)
    # none, layer (2,4), aux (2,4) x 3 seeds, decoded at 3 chunk sizes; the teacher is shared.
    assert counts["train_student"] == 9 and counts["record"] == 10
    methods = 3  # config.yaml's: ctc-1best, ctc-hlg, ctc-1best-streaming; the teacher decodes 2
    assert counts["decode"] == 9 * methods * 3 + 2
    assert counts["emission_delay"] == 9 * 3 + 1


@pytest.fixture(scope="module")
def dynamic_checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("dynamic")
    bpe = train_tiny_bpe(d, ["THE CAT SAT", "A DOG", "ON THE MAT"] * 10, vocab_size=16)
    from streamkd.data.tokenizer import Tokenizer

    torch.manual_seed(0)
    model = build_asr_model(
        {**TINY, "feat_dim": 80, "causal": True, "left_chunks": 2, "dynamic_chunk": DYNAMIC},
        Tokenizer(bpe).vocab_size,
    ).eval()
    save_model(d / "model.pt", model, meta={"role": "student", "chunk_size": "dynamic"})
    return d / "model.pt", bpe, model


def test_decoding_a_dynamic_checkpoint_needs_a_chunk_size(dynamic_checkpoint):
    from streamkd.decode.run import load_decoder

    checkpoint, bpe, _ = dynamic_checkpoint
    with pytest.raises(ValueError, match=r"decoding .*model.pt: this is a dynamic-chunk student"):
        load_decoder(checkpoint, bpe, "ctc-greedy-streaming")
    for chunk in (1, 16):
        loaded = load_decoder(checkpoint, bpe, "ctc-greedy-streaming", chunk_size=chunk)
        assert (loaded.chunk_size, loaded.streams_by_design, loaded.stream.chunk_size) == (chunk, True, chunk)


def test_export_of_a_dynamic_checkpoint_needs_a_chunk_size_and_says_what_it_trained_at(dynamic_checkpoint, tmp_path):
    from streamkd.deploy.export import export_model_dir

    checkpoint, bpe, model = dynamic_checkpoint
    with pytest.raises(ValueError, match="export: this is a dynamic-chunk student"):
        ChunkEncoder(model)
    with pytest.raises(ValueError, match="dynamic-chunk student"):
        export_model_dir(checkpoint, bpe, tmp_path / "none", onnx=False, torchscript=False)
    summary = export_model_dir(checkpoint, bpe, tmp_path / "c4", chunk_size=4, onnx=False, torchscript=True)
    metadata = summary["metadata"]
    assert (metadata["chunk_size"], metadata["trained_chunk_sizes"]) == ("4", "1,4,16")
    assert metadata["decode_chunk_len"] == "16" and metadata["algorithmic_latency_ms"] == "190.0"
    assert json.loads((tmp_path / "c4/export.json").read_text())["metadata"] == metadata


def _dynamic_record(tmp_path, run, method, seed, wers, **fields):
    run_dir = tmp_path / run
    run_dir.mkdir()
    summary = {
        "role": "student",
        "method": method,
        "seed": seed,
        "config_hash": run,
        "num_params": 1000,
        "train_seconds": 1.0,
        **fields,
    }
    (run_dir / "train_summary.json").write_text(json.dumps(summary))
    paths = {}
    for key, wer in wers.items():
        (run_dir / f"{key}.json").write_text(json.dumps({"wer": wer}))
        paths[("test", key)] = run_dir / f"{key}.json"
    write_record(run_dir / "record.json", build_record(run, run_dir / "train_summary.json", paths))
    return run_dir / "record.json"


def test_a_dynamic_student_is_one_row_across_the_chunk_columns(tmp_path):
    records = [
        _dynamic_record(tmp_path, "teacher", "teacher", 42, {"ctc-1best": 5.0}, role="teacher"),
        _dynamic_record(tmp_path, "none-chunk1-seed1", "none", 1, {"ctc-1best": 20.0}, chunk_size=1),
        _dynamic_record(tmp_path, "none-chunk4-seed1", "none", 1, {"ctc-1best": 12.0}, chunk_size=4),
    ]
    for seed, offset in ((1, 0.0), (2, 2.0)):
        records.append(
            _dynamic_record(
                tmp_path,
                f"none-chunkdynamic-seed{seed}",
                "none",
                seed,
                {"ctc-1best@chunk1": 18.0 + offset, "ctc-1best@chunk4": 11.0 + offset},
                chunk_size="dynamic",
                dynamic_chunk=DYNAMIC,
            )
        )
    runs = load_records(records).runs
    dynamic = runs[runs["run"].str.contains("dynamic")]
    assert set(dynamic["model"]) == {"none (dynamic chunk)"}
    assert sorted(zip(dynamic["seed"], dynamic["chunk_size"], dynamic["decoding"], dynamic["wer"])) == [
        (1, 1, "ctc-1best", 18.0),
        (1, 4, "ctc-1best", 11.0),
        (2, 1, "ctc-1best", 20.0),
        (2, 4, "ctc-1best", 13.0),
    ]
    tables = aggregate(records, tmp_path / "tables")
    summary = tables["wer"].summary
    row = summary[summary["model"] == "none (dynamic chunk)"].set_index("chunk_size")["wer_mean"]
    assert row.to_dict() == {1: 19.0, 4: 12.0}
    markdown = (tmp_path / "tables/wer.md").read_text()
    assert "| Chunk " in markdown and "| dynamic " in markdown and "| fixed " in markdown
    csv = pd.read_csv(tmp_path / "tables/wer.csv")
    assert set(csv["chunk_training"].dropna()) == {"dynamic"}


def test_a_table_of_dynamic_students_is_tested_against_the_dynamic_baseline(tmp_path):
    """chunk_training: dynamic keeps the dynamic students (and the teacher), and its baseline is
    the dynamic none; a table of one method compares the dynamic student with the fixed ones."""
    records = [_dynamic_record(tmp_path, "teacher", "teacher", 42, {"ctc-1best": 5.0}, role="teacher")]
    for method, wer in (("none", 20.0), ("aux", 15.0)):
        teacher = {"teacher_sha256": "ab" * 32} if method == "aux" else {}
        for chunk in (1, 4):
            records.append(
                _dynamic_record(
                    tmp_path,
                    f"{method}-chunk{chunk}-seed1",
                    method,
                    1,
                    {"ctc-1best": wer - chunk},
                    chunk_size=chunk,
                    **teacher,
                )
            )
        records.append(
            _dynamic_record(
                tmp_path,
                f"{method}-chunkdynamic-seed1",
                method,
                1,
                {"ctc-1best@chunk1": wer + 2.0, "ctc-1best@chunk4": wer},
                chunk_size="dynamic",
                dynamic_chunk=DYNAMIC,
                **teacher,
            )
        )
    tables = {
        "dynamic_kd": {"chunk_training": "dynamic", "significance": False},
        "fixed_kd": {"chunk_training": "fixed", "significance": False},
        "aux_dynamic_vs_fixed": {"methods": ["aux"], "baseline": "aux", "significance": False},
    }
    written = aggregate(records, tmp_path / "tables", ResultsConfig.from_dict({"tables": tables}))

    dynamic = written["dynamic_kd"]
    assert dynamic.baseline_model == "none (dynamic chunk)"
    assert set(dynamic.summary["model"]) == {"teacher", "none (dynamic chunk)", "aux (dynamic chunk)"}
    aux = dynamic.summary[dynamic.summary["model"] == "aux (dynamic chunk)"].set_index("chunk_size")
    assert aux["baseline_wer"].to_dict() == {1: 22.0, 4: 20.0}  # the dynamic none, not the fixed one
    fixed = written["fixed_kd"]
    assert fixed.baseline_model == "none" and "aux (dynamic chunk)" not in set(fixed.summary["model"])
    versus = written["aux_dynamic_vs_fixed"].summary.set_index(["model", "chunk_size"])
    assert versus.loc[("aux (dynamic chunk)", 1), "baseline_wer"] == 14.0  # the fixed aux at 40 ms
    assert versus.loc[("aux (dynamic chunk)", 4), "baseline_wer"] == 11.0


@pytest.mark.parametrize("value", ["both", "DYNAMIC", 1])
def test_an_unknown_chunk_training_is_refused_by_name(value):
    with pytest.raises(ResultsConfigError, match=r"results.tables.t.chunk_training: expected one of fixed, dynamic"):
        ResultsConfig.from_dict({"tables": {"t": {"chunk_training": value}}})


def test_a_dynamic_record_must_say_each_decodes_chunk_size(tmp_path):
    path = _dynamic_record(tmp_path, "none-chunkdynamic-seed1", "none", 1, {"ctc-1best": 18.0}, chunk_size="dynamic")
    with pytest.raises(RecordError, match=r"test/ctc-1best of a dynamic-chunk student names no chunk size"):
        load_records([path])


@pytest.mark.parametrize(
    "method, shift", [("none", None), ("token", None), ("layer", None), ("layer", 1), ("aux", 0), ("aux", 2)]
)
def test_every_kd_method_trains_a_dynamic_student(method, shift):
    """Each method's loss and gradients on a dynamic-chunk student, over steps that sample
    different chunk sizes; the frozen teacher is the unchanged full-context one."""
    from streamkd.distill.config import KdConfig
    from streamkd.distill.teacher import FrozenTeacher
    from streamkd.training.objectives import DistillationObjective, asr_objective

    torch.manual_seed(0)
    teacher = build_asr_model({**TINY, "feat_dim": 80, "num_layers": 4}, 10)
    student = build_asr_model({**TINY, "feat_dim": 80, "causal": True, "dynamic_chunk": DYNAMIC}, 10)
    if method == "none":
        objective = asr_objective(student)
    else:
        layers = {} if method == "token" else {"student_layers": (1, 2)}
        config = KdConfig(method=method, apc_shift=shift, **layers)
        objective = DistillationObjective(student, FrozenTeacher(teacher), config, spec_augment=False)
    objective.train()
    feats, lens, targets = torch.randn(2, 120, 80), torch.tensor([120, 83]), [[1, 2, 3], [4, 5]]
    losses = set()
    for _ in range(4):
        loss, stats, frames = objective(feats, lens, targets)
        loss.backward()
        assert torch.isfinite(loss) and frames > 0 and ("kd" in stats) == (method != "none")
        losses.add(round(float(loss), 4))
    assert len(losses) > 1  # the sampled chunk (and so the loss) changes between steps
    assert all(p.grad is not None for p in student.encoder.blocks.parameters())
    assert all(p.grad is None for p in teacher.parameters())
