#!/usr/bin/env bash
# atrial.sh BASE NAME [--set ...]: Tier A only, predicted on test and on the dev draw
set -euo pipefail
BASE=$1; NAME=$2; shift 2
cd /work/main && . .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TABLEQA_ROOT=/tmp/exp/$NAME
S="--profile tiny --set model_id=$(realpath $BASE) $@"
t0=$(date +%s)
python -m tableqa_helpers train --tier a $S 2>&1 | grep -E "eval_loss|train_loss|Error" | tail -3
python -m tableqa_helpers predict --stage a --split test $S 2>&1 | tail -1
python -m tableqa_helpers evaluate --split test $S > /dev/null 2>&1
sed -n '/| stage | aggregation/,$p' /tmp/exp/$NAME/tiny/eval/test/comparison.md
D=/tmp/exp/$NAME-dev; rm -rf $D; mkdir -p $D; cp -r /tmp/exp/$NAME/tiny $D/; rm -rf $D/tiny/predictions $D/tiny/eval
export TABLEQA_ROOT=$D
python -m tableqa_helpers predict --stage a --split test $S --set dataset_id=/tmp/exp/dev 2>&1 | tail -1
python -m tableqa_helpers evaluate --split test $S --set dataset_id=/tmp/exp/dev > /dev/null 2>&1
echo DEV; sed -n '/| stage | aggregation/,$p' $D/tiny/eval/test/comparison.md
echo "atrial seconds: $(( $(date +%s) - t0 ))"
