#!/usr/bin/env bash
# Set up from nothing, then run the test suite. Extra arguments go to pytest.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bash "$REPO/workflow/scripts/setup.sh"
export PATH="$REPO/.venv/bin:$PATH"
cd "$REPO"
python -m pytest -q "$@"
