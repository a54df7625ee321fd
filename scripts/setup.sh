#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with callpulse and its pinned dependencies.
# Torch is pinned to the CPU build (2.13.0): an unpinned torch would pull gigabytes of CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
STAMP=.venv/.callpulse-installed
if [ ! -f "$STAMP" ] || [ setup.cfg -nt "$STAMP" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
    .venv/bin/python -m pip install --quiet -e ".[test]"
    touch "$STAMP"
fi
