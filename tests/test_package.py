"""streamkd is installable: the wheel carries the schema and the report captions, and an
install outside this checkout validates a config and renders a caption with them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import REPO

PACKAGE_DATA = ["streamkd/schemas/config.schema.yaml", "streamkd/report/wer_vs_chunk.rst", "streamkd/report/table.rst"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # A copy of what the wheel is built from, so that setuptools' build/ folder stays out of the checkout.
    source = tmp_path_factory.mktemp("source")
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copytree(REPO / "streamkd", source / "streamkd", ignore=shutil.ignore_patterns("__pycache__"))
    # No build isolation: the build uses the installed setuptools instead of downloading one.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = out.glob("streamkd-*.whl")
    return path


def test_wheel_holds_the_package_data_and_declares_dependencies(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    for name in PACKAGE_DATA:
        assert name in names, name
    assert not any(n.startswith(("tests/", "workflow/")) for n in names)
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for package in ("torch", "lhotse", "jsonschema", "PyYAML", "click"):
        assert any(r.startswith(package) for r in requires), (package, requires)
    # k2 is an extra: everything but its features installs and runs without it.
    assert any(r.startswith("k2") and 'extra == "k2"' in r for r in requires), requires


def test_installed_package_reads_its_data_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    config = tmp_path / "config.yaml"
    config.write_text((REPO / "config.yaml").read_text())
    script = (
        "import streamkd, sys\n"
        "from streamkd.config import load_config\n"
        "from streamkd.results.config import ResultsConfig\n"
        "from streamkd.results.report import render_caption\n"
        "print(streamkd.__file__)\n"
        "config = load_config('config.yaml')\n"
        "print(config['decoding']['fast_beam'])\n"
        "print(render_caption('wer_vs_chunk', ResultsConfig()))\n"
        "from streamkd.utils import source_commit\n"
        "print('commit', source_commit())\n"
    )
    # The install comes first on the path, the dependencies from this interpreter's site-packages;
    # the working directory is outside the checkout, so nothing is read from it.
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert Path(lines[0]).resolve().is_relative_to(site.resolve()), lines[0]
    assert lines[1] == "4.0"  # a schema default, filled by the installed schema
    assert "WER (%) against chunk size" in run.stdout and "ctc-1best" in run.stdout
    assert lines[-1] == "commit None"  # an install is no git checkout


def test_source_commit_names_the_commit_and_marks_edits(tmp_path):
    from streamkd.utils import source_commit

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True)

    package = tmp_path / "streamkd"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert source_commit(package) == head and len(head) == 40
    (tmp_path / "notes.txt").write_text("outside the package, untracked\n")
    assert source_commit(package) == head
    (package / "a.py").write_text("x = 2\n")
    assert source_commit(package) == head + "+dirty"
    outside = tmp_path.parent / (tmp_path.name + "-plain")
    (outside / "streamkd").mkdir(parents=True)
    (outside / "streamkd" / "__init__.py").write_text("")
    assert source_commit(outside / "streamkd") is None
    # A package installed into an ignored folder of another repository is not that repository's code.
    (tmp_path / ".gitignore").write_text(".venv/\n")
    installed = tmp_path / ".venv" / "site-packages" / "streamkd"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    assert source_commit(installed) is None
