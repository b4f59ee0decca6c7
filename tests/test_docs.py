"""The documentation site: it builds offline and strictly, its generated reference pages are
current, a broken internal link fails the build, the README stays a short front door whose
facts live on the site, and a browser shows the pages."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

sys.path.insert(0, str(REPO / "docs"))
from hooks import PAGES, config_rows  # noqa: E402

MKDOCS = Path(sys.executable).with_name("mkdocs")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
README_MAX_LINES = 200


def build(project: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--config-file", str(project / "mkdocs.yml"), "--site-dir", str(site)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=project,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = build(REPO, out)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_generated_reference_pages_are_current():
    for name, generate in PAGES.items():
        assert (REPO / "docs" / name).read_text() == generate(), f"docs/{name} is stale: run python docs/hooks.py"


def test_the_config_reference_lists_every_schema_key_with_its_default():
    from streamkd.schema import config_default, load_schema

    text = (REPO / "docs/reference/config.md").read_text()
    keys = [key for key, *_ in config_rows(load_schema())]
    assert "kd.aux.positional" in keys and "training.teacher.num_epochs" in keys  # through $ref
    for key in keys:
        assert f"`{key}`" in text, key
    assert f'| `kd.loss` | `"l1"` \\| `"l2"` \\| `"cos"` \\| `"l1_cos"` | `"{config_default("kd.loss")}"`' in text


def test_site_builds_strictly_with_every_page(site):
    assert (site / "index.html").is_file()
    for page in ("method", "pipeline", "tables", "own-corpus", "clusters", "without-k2", "deployment"):
        assert (site / page / "index.html").is_file(), page
    for page in ("evidence-grid", "troubleshooting", "development", "reference/config", "reference/cli"):
        assert (site / page / "index.html").is_file(), page
    assert "bench-machine" in (site / "reference/cli/index.html").read_text()


def test_a_link_to_a_missing_page_fails_the_build(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(REPO / "docs", project / "docs")
    shutil.copy(REPO / "mkdocs.yml", project / "mkdocs.yml")
    (project / "streamkd").symlink_to(REPO / "streamkd")
    page = project / "docs" / "method.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    result = build(project, tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-page.md" in result.stderr


def test_readme_is_a_short_front_door_that_links_into_the_docs():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert "bash workflow/scripts/run.sh" in readme and "bash workflow/scripts/test.sh" in readme
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / target).is_file(), target


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is needed (workflow/scripts/setup.sh installs it)")
@pytest.mark.parametrize(
    "page, heading, text",
    [
        ("index.html", "Quick start", "bash workflow/scripts/run.sh"),
        ("reference/config/index.html", "Configuration reference", "kd.aux.positional"),
    ],
)
def test_a_browser_renders_the_front_page_and_a_reference_page(site, tmp_path, page, heading, text):
    """Headless Chromium's rendered DOM (after scripts ran) holds the page's heading and content."""
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            (site / page).as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    h1 = re.search(r"<h1[^>]*>(.*?)</h1>", dom, re.S)
    assert h1 is not None and heading in re.sub(r"<[^>]+>", "", h1.group(1)), dom[:2000]
    assert text in dom
