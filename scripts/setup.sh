#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with callpulse and its locked dependencies.
# Every version comes from constraints.txt (regenerate it on purpose with scripts/lock.sh), so a new
# machine gets the versions the README's figures were measured with. Torch is the CPU build (2.13.0):
# an unpinned torch would pull gigabytes of CUDA. Re-installs when setup.cfg or constraints.txt change
# (the stamp holds their checksum).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
STAMP=.venv/.callpulse-installed
if [ ! -f constraints.txt ]; then
    echo "constraints.txt is missing: restore it from git, or write one with scripts/lock.sh" >&2
    exit 1
fi
want=$(cat setup.cfg constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    pip=(.venv/bin/python -m pip install --quiet -c constraints.txt)
    "${pip[@]}" --upgrade pip
    "${pip[@]}" "torch==2.13.0"
    "${pip[@]}" -e ".[test]"
    echo "$want" > "$STAMP"
fi
