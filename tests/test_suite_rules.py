"""Rules of the test suite itself, checked by running pytest on a small test file."""

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SKIPPING_TEST = """
import pytest

def test_runs():
    assert True

@pytest.mark.skip(reason="a system package is missing")
def test_skipped():
    pass
"""


def run_pytest(directory: Path, ci: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": ci, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "conftest",
            "--rootdir",
            str(directory),
            "-c",
            os.devnull,
            str(directory / "test_skipping.py"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=directory,
        timeout=300,
    )


def test_a_skipped_test_fails_the_run_under_ci(tmp_path):
    (tmp_path / "test_skipping.py").write_text(SKIPPING_TEST)
    local = run_pytest(tmp_path, "")
    assert local.returncode == 0, local.stdout[-2000:]
    ci = run_pytest(tmp_path, "true")
    assert ci.returncode == 1, ci.stdout[-2000:]
    assert "CI=true: 1 skipped test(s) fail the run" in ci.stdout
    assert "test_skipping.py::test_skipped: Skipped: a system package is missing" in ci.stdout
