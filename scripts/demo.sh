#!/usr/bin/env bash
# Set up (first run only) and analyse the bundled sample calls with the embedded offline models.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/callpulse analyze samples/ --out results/ "$@"
