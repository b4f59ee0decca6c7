#!/usr/bin/env bash
# Set up from nothing, then run the tests on both software stacks. Extra arguments go to pytest.
#   k2 (requirements.txt): the whole suite.
#   torch2 (requirements-torch2.txt, no k2): every test that is not end to end, the k2-free micro
#   pipeline, and the micro pipeline through the SLURM profile with Snakemake 9's executor plugin.
# STREAMKD_STACKS="k2" (or "torch2") runs one of them.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
for stack in ${STREAMKD_STACKS:-k2 torch2}; do
    started=$SECONDS
    STREAMKD_STACK="$stack" bash workflow/scripts/setup.sh
    venv="$REPO/.venv"
    [ "$stack" = torch2 ] && venv="$REPO/.venv-torch2"
    echo "[test] $stack stack: $("$venv/bin/python" -c 'import sys, torch; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}")')"
    if [ "$stack" = k2 ]; then
        # The k2 leg fails at once if k2 cannot be imported, instead of leaving its tests uncollected.
        STREAMKD_REQUIRE_K2=1 PATH="$venv/bin:$PATH" python -m pytest -q --durations=12 "$@"
    else
        PATH="$venv/bin:$PATH" python -m pytest -q -m "not slow and not k2" "$@"
        PATH="$venv/bin:$PATH" python -m pytest -q -m slow "$@" tests/test_without_k2.py tests/test_slurm_profile.py
    fi
    echo "[test] $stack stack: passed in $((SECONDS - started)) s (setup included)"
done
