#!/usr/bin/env bash
# Tier A/B settings for the tiny profile, tried side by side on one GPU: each trial trains Tier A
# from a mini base, merges, trains Tier B and scores base, A and B on the same 100 test samples.
# Usage (repository root): bash bench/mini_sweep.sh BASE_DIR [SECONDS]; prints a table last.
# Trials are "name|--set overrides..." lines below; results land in $OUT/sweep/NAME/.
. bench/env.sh
base=${1:?mini base folder}; budget=${2:-500}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=2
work=$OUT/sweep; mkdir -p "$work"
for n in 400 1200; do
  $PY -m tableqa_helpers synth-data "$work/data$n" --train $n --validation 20 --test 100 --tables mini >/dev/null
done
common="--set model_id=$base --set test_limit=100 --set eval_limit=20 --set dataloader_workers=1"
trials=(
  "a3e-3|--set dataset_id=$work/data400"
  "a1e-3|--set dataset_id=$work/data400 --set tier_a.lr=1e-3"
  "a1e-2|--set dataset_id=$work/data400 --set tier_a.lr=1e-2"
  "a6ep|--set dataset_id=$work/data400 --set tier_a.epochs=6"
  "r64|--set dataset_id=$work/data400 --set tier_a.r=64 --set tier_a.alpha=64"
  "n1200|--set dataset_id=$work/data1200 --set tier_a.epochs=1"
  "b3ep|--set dataset_id=$work/data400 --set tier_b.epochs=3"
  "b1e-2|--set dataset_id=$work/data400 --set tier_b.lr=1e-2 --set tier_b.r=16"
)
trial() {  # trial NAME OVERRIDES: the stages one after another, logged to NAME.log
  local name=$1; shift
  local s="$common $* --set run_name=$name"
  for step in "train --tier a" "predict --stage base --split test" "predict --stage a --split test" \
              "merge" "train --tier b" "predict --stage b --split test" "evaluate"; do
    left=$(( budget - SECONDS )); (( left > 5 )) || { echo "OUT OF TIME before: $step"; return 1; }
    TABLEQA_ROOT=$work timeout $left $PY -m tableqa_helpers $step $s || { echo "FAILED: $step"; return 1; }
    echo "== $step done at $SECONDS s"
  done
}
for t in "${trials[@]}"; do
  trial "${t%%|*}" ${t#*|} > "$work/${t%%|*}.log" 2>&1 &
done
wait
$PY - "$work" <<'EOF'
import csv, sys
from pathlib import Path
work = Path(sys.argv[1])
print("trial | stage | correct % | by type (correct %)")
for log in sorted(work.glob("*.log")):
    name = log.stem
    table = work / name / "eval" / "test" / "comparison.csv"  # written by `evaluate`
    if not table.exists():
        done = [l[3:].split(" done")[0] for l in log.read_text().splitlines() if l.startswith("== ")]
        print(f"{name} | - | - | reached: {done[-1] if done else 'nothing'}")
        continue
    rows = list(csv.DictReader(table.open()))
    for stage in ("base", "a", "b"):
        by = {r["question_type"]: 100 * float(r["correct"]) for r in rows if r["stage"] == stage}
        print(f"{name} | {stage} | {by.pop('all'):.0f} | "
              + " ".join(f"{t[:6]}={v:.0f}" for t, v in by.items()))
EOF
