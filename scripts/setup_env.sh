#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv and install the package with its
# test extras. On CPU-only machines the working torch pairs are installed first:
# x86_64: torch 2.14.1 + torchvision 0.29.1; aarch64: torch 2.9.1 + torchvision 0.24.1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch, torchvision" 2>/dev/null; then
  case "$(uname -m)" in
    aarch64|arm64) python -m pip install -q torch==2.9.1 torchvision==0.24.1 ;;
    *) python -m pip install -q torch==2.14.1 torchvision==0.29.1 ;;
  esac
fi
python -m pip install -q -e ".[test]"
python -c "import torch, torchvision, transformers, peft, trl, datasets; print('environment ready:', 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__, 'datasets', datasets.__version__)"
