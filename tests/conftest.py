"""Fixtures shared by the tests; plain helpers are in tests/helpers.py."""

from pathlib import Path

import pytest
import torch

from helpers import REPO

# The models under test are tiny: one thread avoids contention on a busy machine.
torch.set_num_threads(1)


@pytest.fixture
def repo() -> Path:
    return REPO
