"""The BLAS code-path choice per processor (streamkd/cpu.py) and `streamkd bench-machine`."""

import json
import os
import subprocess
import sys

import pytest

from streamkd.cpu import MKL_CPU_TYPE_VARIABLE, cpu_vendor, cpuinfo, mkl_settings, use_fast_blas_path

AMD_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse sse2 avx avx2 fma avx512f

processor\t: 1
vendor_id\t: GenuineIntel
"""


def test_cpuinfo_reads_the_first_processor(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(AMD_CPUINFO)
    info = cpuinfo(path)
    assert cpu_vendor(info) == "AuthenticAMD"
    assert info["model name"] == "AMD EPYC 9R14"
    assert "avx2" in info["flags"].split()
    assert cpuinfo(tmp_path / "missing") == {}
    assert cpu_vendor({}) == "unknown"


@pytest.mark.parametrize(
    "vendor, expected", [("AuthenticAMD", "5"), ("HygonGenuine", "5"), ("GenuineIntel", None), ("unknown", None)]
)
def test_mkl_is_sent_down_its_avx2_path_on_non_intel_processors_only(vendor, expected):
    environ = {}
    assert use_fast_blas_path(environ, vendor=vendor) == expected
    assert environ.get(MKL_CPU_TYPE_VARIABLE) == expected


@pytest.mark.parametrize("users_value", ["", "2"])
def test_a_value_the_user_set_is_kept(users_value):
    environ = {MKL_CPU_TYPE_VARIABLE: users_value}
    assert use_fast_blas_path(environ, vendor="AuthenticAMD") == users_value
    assert environ == {MKL_CPU_TYPE_VARIABLE: users_value}


def test_a_run_keeps_the_mkl_path_variables_set_and_nothing_else():
    environ = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", MKL_CPU_TYPE_VARIABLE: "5", "OMP_NUM_THREADS": "1"}
    assert mkl_settings(environ) == {MKL_CPU_TYPE_VARIABLE: "5", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    assert mkl_settings({}) == {}


def test_importing_streamkd_sets_the_path_for_this_processor():
    """Every entry point imports the package first, before any matrix product."""
    env = {k: v for k, v in os.environ.items() if k != MKL_CPU_TYPE_VARIABLE}
    code = "import os, streamkd; print(os.environ.get('MKL_DEBUG_CPU_TYPE'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    expected = use_fast_blas_path({})
    assert out.strip() == str(expected)


@pytest.mark.slow
def test_bench_machine_reports_processor_blas_gemm_and_training_steps(tmp_path):
    out = tmp_path / "machine.json"
    done = subprocess.run(
        [sys.executable, "-m", "streamkd.cli", "bench-machine", "--no-vendor-path", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["vendor"] == cpu_vendor()
    assert report["software"]["blas"] in {"mkl", "open", "openblas"}
    shapes = {(row["shape"], row["threads"]) for row in report["gemm"]}
    assert ("512x96x384", 1) in shapes and ("2048x2048x2048", 1) in shapes
    assert all(row["gflops"] > 0 for row in report["gemm"])
    steps = report["training_step"]["seconds"]
    assert steps["none"] > 0 and steps["aux"] > 0
    assert report["training_step"]["aux_vs_none"] == pytest.approx(steps["aux"] / steps["none"], rel=0.01)
    assert (tmp_path / "machine.md").read_text().startswith("Processor: ")
    assert "Training step of the default student" in done.stdout
