#!/usr/bin/env bash
# Create .venv and install diffmem with the CPU build of PyTorch, and the optional extras the tests
# exercise (lightning: the monitor's Lightning callback; cluster: submitit sweeps).
# `pip install torch==2.13.0` takes the CPU wheel this project's machines carry;
# a plain `pip install torch` would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==${DIFFMEM_TORCH_VERSION:-2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,lightning,cluster]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import diffmem, torch; print(f'diffmem {diffmem.__version__} with torch {torch.__version__}')"
