#!/usr/bin/env bash
# Create .venv (if missing) and install sde_gen with its dependencies.
# PyTorch: the CPU wheel torch==2.13.0 is installed first when it lies on disk (/opt/wheels),
# so that the project's torch range does not pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  wheel=$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n 1 || true)
  if [ -n "$wheel" ]; then
    .venv/bin/pip install -q "$wheel"
  else
    .venv/bin/pip install -q "torch>=2.2,<2.15" --index-url https://download.pytorch.org/whl/cpu \
      || .venv/bin/pip install -q "torch>=2.2,<2.15"
  fi
fi
.venv/bin/pip install -q -e ".[dev${EXTRAS:+,$EXTRAS}]"
.venv/bin/python -c "import sde_gen, torch, torchsde, hydra; print('sde_gen ready: torch', torch.__version__)"
