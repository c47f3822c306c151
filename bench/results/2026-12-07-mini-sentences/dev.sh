#!/usr/bin/env bash
# dev.sh NAME [STAGES...]: predict STAGES (default: base a b) of trial NAME on the dev draw (seed 7)
set -euo pipefail
NAME=$1; shift; STAGES=${@:-base a b}
D=/tmp/exp/$NAME-dev
rm -rf $D; cp -r /tmp/exp/$NAME $D; rm -rf $D/tiny/predictions $D/tiny/eval
cd /work/main && . .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TABLEQA_ROOT=$D
S="--profile tiny --set model_id=$(realpath ${BASE:-/tmp/exp/bases/mb}) --set dataset_id=/tmp/exp/dev"
for s in $STAGES; do python -m tableqa_helpers predict --stage $s --split test $S 2>&1 | tail -1; done
python -m tableqa_helpers evaluate --split test $S > /dev/null 2>&1
cat $D/tiny/eval/test/comparison.md | sed -n '/| stage | n/,$p'
