import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _have(binary: str) -> bool:
    return shutil.which(binary) is not None


requires_tts = pytest.mark.skipif(
    not (_have("espeak-ng") and _have("flite")),
    reason="espeak-ng and flite are needed (workflow/scripts/setup.sh installs them)",
)


@pytest.fixture
def repo() -> Path:
    return REPO
