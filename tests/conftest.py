"""Fixtures shared by the tests; plain helpers are in tests/helpers.py."""

import os
from pathlib import Path

import pytest
import torch

from streamkd.k2_support import k2_available, k2_import_error

from helpers import REPO

# The models under test are tiny: one thread avoids contention on a busy machine.
torch.set_num_threads(1)

# Tests of what is built on k2 (graphs and their searches, transducers, the forced alignment,
# and the exported folders that ship graphs): where k2 is not installed they are not collected.
# tests/test_without_k2.py checks that everything else runs there.
K2_TEST_MODULES = [
    "test_ctc_decoding.py",
    "test_decode_run.py",
    "test_deploy.py",
    "test_emission.py",
    "test_hlg.py",
    "test_transducer.py",
]
collect_ignore = [] if k2_available() else K2_TEST_MODULES
SLOW_TEST_TIMEOUT_S = 900  # a whole micro pipeline; unit tests have pyproject.toml's limit


def pytest_configure(config):
    """The k2 stack's run (STREAMKD_REQUIRE_K2=1) stops here if k2 cannot be imported."""
    if os.environ.get("STREAMKD_REQUIRE_K2") == "1" and not k2_available():
        raise pytest.UsageError(
            f"STREAMKD_REQUIRE_K2=1 but k2 cannot be imported ({k2_import_error()}): "
            f"{len(K2_TEST_MODULES)} test modules would go uncollected"
        )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT_S))


def pytest_report_header(config):
    if not k2_available():
        return f"k2 is not installed: not collected (k2 features): {', '.join(K2_TEST_MODULES)}"


@pytest.fixture
def repo() -> Path:
    return REPO


_SKIPPED: list = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _SKIPPED.append(
            f"{report.nodeid}: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr}"
        )


def pytest_sessionfinish(session, exitstatus):
    """With CI=true a skipped test fails the run: a missing system package must not hide coverage."""
    if _SKIPPED and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        print(f"\nCI=true: {len(_SKIPPED)} skipped test(s) fail the run:\n  " + "\n  ".join(_SKIPPED))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
