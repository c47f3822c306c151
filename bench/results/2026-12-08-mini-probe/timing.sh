#!/usr/bin/env bash
# timing.sh BASE NAME: CPU cost of Tier A (half an epoch) and of predicting 100 test questions
set -euo pipefail
BASE=$1; NAME=$2
cd /work/main && . .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TABLEQA_ROOT=/tmp/exp/$NAME
S="--profile tiny --set model_id=$(realpath $BASE) --set tier_a.epochs=0.5"
t0=$(date +%s); python -m tableqa_helpers train --tier a $S > /tmp/exp/$NAME.train.log 2>&1; t1=$(date +%s)
python -m tableqa_helpers predict --stage base --split test $S > /tmp/exp/$NAME.pred.log 2>&1; t2=$(date +%s)
echo "$NAME tier_a_half_epoch_s $((t1-t0)) predict_base_100_s $((t2-t1))"
