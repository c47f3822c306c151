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
  # torch's wheels unpack to about 6 GB (x86_64); fail early, with the numbers, rather than
  # half-way through pip with "No space left on device".
  need_mb=${TABLEQA_NEED_DISK_MB:-7500}
  free_mb=$(df -Pm .venv | awk 'NR==2 {print $4}')
  tmp_mb=$(df -Pm "${TMPDIR:-/tmp}" | awk 'NR==2 {print $4}')
  if [ "$free_mb" -lt "$need_mb" ] || [ "$tmp_mb" -lt 1024 ]; then
    echo "setup_env.sh: not enough free disk to install torch: ${free_mb} MB free for .venv" \
      "(need ${need_mb} MB), ${tmp_mb} MB free in ${TMPDIR:-/tmp} (need 1024 MB)." \
      "Free some space (old clones, caches) and run again." >&2
    exit 1
  fi
  case "$(uname -m)" in
    aarch64|arm64) python -m pip install -q --no-cache-dir torch==2.9.1 torchvision==0.24.1 ;;
    *) python -m pip install -q --no-cache-dir torch==2.14.1 torchvision==0.29.1 ;;
  esac
fi
python -m pip install -q -e ".[test]"
python -c "import torch, torchvision, transformers, peft, trl, datasets; print('environment ready:', 'torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__, 'datasets', datasets.__version__)"
