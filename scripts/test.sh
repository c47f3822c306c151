#!/usr/bin/env bash
# The test command: package tests, the browser test in headless Chromium, and every notebook
# re-executed under nbval on the tiny profile (the package tests default to the unit profile).
# Creates its environment itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
bash tests/browser/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TABLEQA_PROFILE=unit
export TABLEQA_REQUIRE_BROWSER=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT  # run folders of the browser test and the notebooks
export TABLEQA_RUN_DIR="$work/browser"
python scripts/clean_notebooks.py --check notebooks
python -m pytest tests -p no:cacheprovider
TABLEQA_PROFILE=tiny TABLEQA_ROOT="$work/nbval" python -m pytest --nbval-lax -p no:cacheprovider notebooks
