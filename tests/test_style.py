"""Lint and format checks: ruff for the Python code, snakefmt for the workflow files.

Both read their settings from pyproject.toml (120 columns). ``ruff check --fix``, ``ruff
format`` and ``snakefmt .`` make these pass.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).is_file():
        pytest.fail(f"{name} is not installed (pip install -r requirements.txt)")
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_lint():
    result = _run(_tool("ruff"), "check", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_format():
    result = _run(_tool("ruff"), "format", "--check", ".")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_snakefmt():
    result = _run(_tool("snakefmt"), "--check", ".")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
