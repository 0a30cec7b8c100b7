#!/usr/bin/env bash
# Install everything and run the test suite (slow studies are excluded; run them with -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
.venv/bin/python -m pytest -q "$@"
