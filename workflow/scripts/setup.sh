#!/usr/bin/env bash
# Set up everything streamkd needs on a fresh Debian machine:
#   - the Debian packages the embedded corpus is synthesised with (espeak-ng, flite, fortunes)
#   - a virtual environment with the pinned requirements of one stack and streamkd itself:
#       STREAMKD_STACK=k2 (default): CPython 3.9, torch 1.13.1, k2 1.23.4 -> .venv, requirements.txt
#       STREAMKD_STACK=torch2: CPython 3.11, torch 2.x, no k2 -> .venv-torch2, requirements-torch2.txt
# Safe to re-run: it only installs what is missing or out of date.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STACK="${STREAMKD_STACK:-k2}"
case "$STACK" in
    # k2 1.23.4, the only k2 wheel on PyPI, is built for CPython 3.9 and torch 1.13.1.
    k2) PYTHON_VERSION=3.9 REQUIREMENTS=requirements.txt DEFAULT_VENV=.venv IMPORTS="k2, " ;;
    torch2) PYTHON_VERSION=3.11 REQUIREMENTS=requirements-torch2.txt DEFAULT_VENV=.venv-torch2 IMPORTS="" ;;
    *) echo "[setup] unknown STREAMKD_STACK '$STACK': use k2 or torch2" >&2; exit 1 ;;
esac
VENV="${STREAMKD_VENV:-$REPO/$DEFAULT_VENV}"
DEBIAN_PACKAGES=(espeak-ng flite fortunes fortunes-min chromium)  # chromium: tests/test_docs.py renders the docs site

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

find_python() {
    local candidates=()
    [ -n "${STREAMKD_PYTHON:-}" ] && candidates+=("$STREAMKD_PYTHON")
    command -v "python$PYTHON_VERSION" >/dev/null 2>&1 && candidates+=("$(command -v "python$PYTHON_VERSION")")
    if command -v pyenv >/dev/null 2>&1; then
        candidates+=("$(pyenv root)"/versions/"$PYTHON_VERSION".*/bin/python)
    fi
    candidates+=("$HOME"/.pyenv/versions/"$PYTHON_VERSION".*/bin/python /root/.pyenv/versions/"$PYTHON_VERSION".*/bin/python)
    candidates+=("/usr/bin/python$PYTHON_VERSION" "/usr/local/bin/python$PYTHON_VERSION")
    for py in "${candidates[@]}"; do
        if [ -x "$py" ] && "$py" -c "import sys; sys.exit(f'{sys.version_info[0]}.{sys.version_info[1]}' != '$PYTHON_VERSION')" 2>/dev/null; then
            echo "$py"
            return 0
        fi
    done
    return 1
}

create_venv() {
    local stamp="$VENV/.requirements.sha256"
    local want
    want="$(cat "$REPO/$REQUIREMENTS" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    local py
    if ! py="$(find_python)"; then
        say "no CPython $PYTHON_VERSION found (the $STACK stack needs exactly $PYTHON_VERSION)."
        say "install one (e.g. 'pyenv install $PYTHON_VERSION') or point STREAMKD_PYTHON at it."
        exit 1
    fi
    say "creating $VENV with $py"
    [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade "pip<25" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    say "installing the pinned requirements of the $STACK stack ($REQUIREMENTS)"
    "$VENV/bin/python" -m pip install -q -r "$REPO/$REQUIREMENTS" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$VENV/bin/python" -m pip install -q --no-deps -e "$REPO" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$VENV/bin/python" -c "import ${IMPORTS}torch, lhotse, sentencepiece, snakemake, matplotlib, pygments, streamkd" \
        || { say "the environment in $VENV is incomplete (see pip's messages above)"; exit 1; }
    echo "$want" > "$stamp"
}

install_debian_packages
create_venv
say "ready: $VENV"
