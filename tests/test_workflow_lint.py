"""`snakemake --lint` finds nothing, every rule declares its software, heavy rules are benchmarked."""

from __future__ import annotations

import re

import pytest
import yaml

from helpers import REPO, run_snakemake

MICRO = REPO / "workflow/configs/micro.yaml"
CONFIGS = {"default": [], "micro": [MICRO], "micro-no-k2": [MICRO, REPO / "workflow/configs/micro-no-k2.yaml"]}
NEEDS_K2 = {"default", "micro"}  # they decode with k2's graphs
HEAVY_RULES = ("prepare_corpus", "compute_fbank", "compile_hlg", "train_teacher", "train_student", "decode")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.k2) if n in NEEDS_K2 else n for n in sorted(CONFIGS)]
)
def test_snakemake_lint_is_clean(tmp_path, name):
    result = run_snakemake(tmp_path, "--lint", configfiles=CONFIGS[name], timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Lints for" not in output, output[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in output


def _rule_bodies():
    """rule name -> its text, from the rule files."""
    text = "\n".join(path.read_text() for path in sorted((REPO / "workflow/rules").glob("*.smk")))
    parts = re.split(r"^\s*rule (\w+):\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_heavy_rules_write_benchmarks():
    """Their benchmark files are where the per-rule peak memory (max_rss) comes from."""
    bodies = _rule_bodies()
    for rule in HEAVY_RULES:
        assert re.search(r"^\s+benchmark:\n\s+f\"[^\"]+\.tsv\"", bodies[rule], re.M), rule
    assert "benchmark:" not in bodies["score"]  # light rules do without


def _pins(lines):
    return sorted(line.split("#")[0].strip() for line in lines if line.split("#")[0].strip())


def test_conda_environment_pins_the_requirements():
    env = yaml.safe_load((REPO / "workflow/envs/streamkd.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "python=3.9" in env["dependencies"]
    assert _pins(pip) == _pins((REPO / "requirements.txt").read_text().splitlines())
