"""Without k2: CTC models train, distil, decode greedily and stream; what needs k2 says so by name.

Each check runs in a subprocess in which ``import k2`` fails (``env_without_k2``), so it holds
in the k2 environment too; in an environment without k2 it is the real thing.
"""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from streamkd.data.tokenizer import Tokenizer
from streamkd.model import build_asr_model
from streamkd.model.checkpoint import save_model

from helpers import (
    REPO,
    env_without_k2,
    error_line,
    job_counts,
    requires_tts,
    run_snakemake,
    streamkd_cli,
    train_tiny_bpe,
    write_feature_cuts,
)

# The modules that are k2 through and through; everything else must import without it.
K2_MODULES = {"streamkd.decode.align", "streamkd.decode.ctc", "streamkd.decode.transducer", "streamkd.lang.hlg"}
TEXTS = ["THE CAT SAT", "A DOG", "ON THE MAT THE CAT", "DOG"]
NO_K2_CONFIG = REPO / "workflow/configs/micro-no-k2.yaml"


def python_without_k2(tmp_path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env_without_k2(tmp_path), timeout=300
    )


def test_only_the_k2_modules_need_k2(tmp_path):
    code = """
import importlib, json, pkgutil, streamkd
failed = {}
for module in pkgutil.walk_packages(streamkd.__path__, "streamkd."):
    try:
        importlib.import_module(module.name)
    except ImportError as e:
        failed[module.name] = str(e)
print(json.dumps(failed))
"""
    result = python_without_k2(tmp_path, code)
    assert result.returncode == 0, result.stderr[-3000:]
    failed = json.loads(result.stdout)
    assert set(failed) == K2_MODULES
    assert all("k2 is hidden" in reason for reason in failed.values())


def test_a_transducer_head_names_k2_when_it_is_built(tmp_path):
    code = """
from streamkd.model import build_asr_model
build_asr_model(dict(feat_dim=80, d_model=16, num_layers=1, num_heads=2, ff_dim=32, conv_kernel=3), 10,
                {"type": "transducer+ctc"})
"""
    result = python_without_k2(tmp_path, code)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("streamkd.k2_support.K2NotInstalledError: a transducer head (the pruned RNN-T loss)")
    assert "needs k2" in last and "k2-fsa.github.io/k2" in last


@pytest.fixture(scope="module")
def ctc_student(tmp_path_factory):
    """A saved streaming CTC student that emits tokens, its BPE model and four feature cuts."""
    d = tmp_path_factory.mktemp("no-k2")
    bpe = train_tiny_bpe(d, TEXTS * 10, vocab_size=24)
    torch.manual_seed(0)
    cuts = write_feature_cuts(d, [torch.randn(n, 80) for n in (83, 150, 61, 117)], TEXTS)
    encoder = dict(feat_dim=80, d_model=16, num_layers=2, num_heads=2, ff_dim=32, conv_kernel=3, dropout=0.0)
    model = build_asr_model(dict(encoder, causal=True, chunk_size=3, left_chunks=1), Tokenizer(bpe).vocab_size)
    with torch.no_grad():
        model.ctc.proj.bias[0] = -2.0  # a random model: make it emit tokens rather than only blanks
    save_model(d / "student.pt", model, meta={"role": "student"})
    return d, bpe, cuts


def decode_without_k2(ctc_student, method):
    d, bpe, cuts = ctc_student
    out = d / f"{method}.jsonl"
    args = ["decode", "--checkpoint", d / "student.pt", "--cuts", cuts, "--bpe-model", bpe, "--method", method]
    return streamkd_cli(*args, "--hyps", out, env=env_without_k2(d)), out


def test_greedy_decoding_whole_and_streaming_without_k2(ctc_student):
    hyps = {}
    for method in ("ctc-greedy", "ctc-greedy-streaming"):
        result, out = decode_without_k2(ctc_student, method)
        assert result.returncode == 0, result.stderr[-3000:]
        hyps[method] = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(hyps["ctc-greedy"]) == 4 and any(row["hyp"] for row in hyps["ctc-greedy"])
    # Chunk by chunk with caches, the causal student gives its masked whole-utterance hypotheses.
    assert hyps["ctc-greedy-streaming"] == hyps["ctc-greedy"]


def test_a_k2_search_names_k2_and_the_install(ctc_student):
    d, _, _ = ctc_student
    result, _ = decode_without_k2(ctc_student, "ctc-1best-streaming")
    line = error_line(result)
    assert "decoding method 'ctc-1best-streaming' needs k2, which is not installed" in line
    assert f"torch {torch.__version__.split('+')[0]}" in line


def test_snakemake_names_every_setting_that_needs_k2_at_start_up(tmp_path):
    result = run_snakemake(tmp_path, "-n", "--cores", "1", env=env_without_k2(tmp_path))
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "K2NotInstalledError" in message and "snakemake config needs k2" in message
    default_methods = yaml.safe_load((REPO / "config.yaml").read_text())["decoding"]["methods"]
    assert f"decoding.methods {', '.join(default_methods)}" in message
    assert "decoding.emission_delay: true" in message


def test_the_no_k2_micro_config_plans_no_k2_job(tmp_path):
    configs = [REPO / "workflow/configs/micro.yaml", NO_K2_CONFIG]
    result = run_snakemake(tmp_path, "-n", "--cores", "1", configfiles=configs, env=env_without_k2(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = job_counts(result.stdout)
    assert jobs["train_student"] == 2 and jobs["cache_teacher"] == 1 and jobs["decode"] == 5
    assert not {"compile_ctc_topo", "compile_hlg", "align_reference", "emission_delay"} & set(jobs)


@requires_tts
@pytest.mark.slow
def test_micro_pipeline_without_k2(tmp_path):
    """Teacher, teacher cache, baseline and aux student, greedy decoding and the tables, with no k2."""
    configs = [REPO / "workflow/configs/micro.yaml", NO_K2_CONFIG]
    result = run_snakemake(tmp_path, "--cores", "2", configfiles=configs, env=env_without_k2(tmp_path))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    table = pd.read_csv(tmp_path / "results/tables/wer.csv")
    assert set(table["method"]) == {"teacher", "none", "aux"}
    assert table["wer_mean"].between(0, 100).all()
    assert (tmp_path / "results/tables/wer.md").read_text().startswith("WER (%) on test with ctc-greedy decoding")
    for run in ("teacher", "none-chunk4-seed1", "aux-chunk4-layers1_2-shift1-seed1"):
        record = json.loads((tmp_path / "exp" / run / "record.json").read_text())
        assert record["versions"]["k2"] is None
        expected = {"ctc-greedy"} if run == "teacher" else {"ctc-greedy", "ctc-greedy-streaming"}
        assert set(record["wer"]["test"]) == expected
    # The aux student read the teacher's targets from the cache, and nothing k2 was built.
    assert (tmp_path / "exp/teacher/targets/layers1_2/targets.lca").is_file()
    assert not list((tmp_path / "data").rglob("*.pt")) and not (tmp_path / "exp/teacher/align").exists()
