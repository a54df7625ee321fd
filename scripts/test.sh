#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/system_packages.sh || true
exec .venv/bin/python -m pytest "$@"
