#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/system_packages.sh || true
# command-line peers installed by pip (streamdouble) live in the venv
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest "$@"
