#!/usr/bin/env bash
# The main job: every numbered notebook, in order, on the given profile (default tiny: offline,
# CPU, minutes). Executed copies land in runs/<profile>/notebooks/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
export TABLEQA_ROOT=${TABLEQA_ROOT:-$PWD/runs}
python -m tableqa_helpers run-notebooks --profile "${1:-tiny}"
