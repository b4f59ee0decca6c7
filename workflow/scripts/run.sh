#!/usr/bin/env bash
# Set up from nothing, then run the whole pipeline on the default config and print the WER table.
# Extra arguments go to snakemake (e.g. --configfile, --cores 4, -n).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bash "$REPO/workflow/scripts/setup.sh"
export PATH="$REPO/.venv/bin:$PATH"
cd "$REPO"
snakemake --cores "${CORES:-2}" "$@"
