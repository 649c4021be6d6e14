#!/usr/bin/env bash
# Set up, then run the main job on the embedded default data set (sklearn digits).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/diffmem demo --out "${1:-runs/demo}"
