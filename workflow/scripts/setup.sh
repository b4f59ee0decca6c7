#!/usr/bin/env bash
# Set up everything streamkd needs on a fresh Debian machine:
#   - the Debian packages the embedded corpus is synthesised with (espeak-ng, flite, fortunes)
#   - a Python 3.9 virtual environment (.venv) with the pinned requirements and streamkd itself
# Safe to re-run: it only installs what is missing or out of date.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${STREAMKD_VENV:-$REPO/.venv}"
DEBIAN_PACKAGES=(espeak-ng flite fortunes fortunes-min)

say() { echo "[setup] $*" >&2; }

install_debian_packages() {
    local missing=()
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        say "missing Debian packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}"
        exit 1
    fi
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# k2 1.23.4, the only k2 wheel on PyPI, is built for CPython 3.9 and torch 1.13.1.
find_python39() {
    local candidates=()
    [ -n "${STREAMKD_PYTHON:-}" ] && candidates+=("$STREAMKD_PYTHON")
    command -v python3.9 >/dev/null 2>&1 && candidates+=("$(command -v python3.9)")
    if command -v pyenv >/dev/null 2>&1; then
        candidates+=("$(pyenv root)"/versions/3.9.*/bin/python)
    fi
    candidates+=("$HOME"/.pyenv/versions/3.9.*/bin/python /root/.pyenv/versions/3.9.*/bin/python /usr/bin/python3.9 /usr/local/bin/python3.9)
    for py in "${candidates[@]}"; do
        if [ -x "$py" ] && "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 9))' 2>/dev/null; then
            echo "$py"
            return 0
        fi
    done
    return 1
}

create_venv() {
    local stamp="$VENV/.requirements.sha256"
    local want
    want="$(cat "$REPO/requirements.txt" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    local py
    if ! py="$(find_python39)"; then
        say "no CPython 3.9 found (k2 1.23.4 from PyPI needs exactly 3.9)."
        say "install one (e.g. 'pyenv install 3.9') or point STREAMKD_PYTHON at it."
        exit 1
    fi
    say "creating $VENV with $py"
    [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade "pip<25" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    say "installing pinned requirements (torch, k2, lhotse, snakemake, ...)"
    "$VENV/bin/python" -m pip install -q -r "$REPO/requirements.txt" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$VENV/bin/python" -m pip install -q --no-deps -e "$REPO" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$VENV/bin/python" -c "import k2, lhotse, sentencepiece, snakemake, matplotlib, pygments, streamkd" \
        || { say "the environment in $VENV is incomplete (see pip's messages above)"; exit 1; }
    echo "$want" > "$stamp"
}

install_debian_packages
create_venv
say "ready: $VENV"
