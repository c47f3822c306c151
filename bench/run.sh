#!/bin/bash
# The whole benchmark in one go, on the GPU machine (or `bench/run.sh tiny` on a CPU to check it).
#   bench/run.sh [7b|tiny]     env: OUT (logs; default .bench_out), STAGES, OURS_ARGS, PY
# Stages, each in its own process so peak memory is per run and one failure stops nothing:
#   seed      the tutorial's Tier A as measured for the issue: .seedref/seed_recipe.py (the
#             reference script, kept outside the project; copy it there, ignored by git)
#   tutorial  the tutorial's Tier B recipe (bench.tutorial)
#   ours      this project's Tier A / Tier B / inference and the tutorial's inference (bench.bench)
#   measure   the GPU plans' memory estimates against measurement (`hardware measure`), one
#             process per run in MEASURES (";"-separated argument lists); records in measure.jsonl
#   report    the table (bench.report), printed last and saved as $OUT/summary.md
SHAPE=${1:-7b}
cd "$(dirname "$0")/.." || exit 1  # the repository root (OUT, if relative, is taken from there)
source bench/env.sh
STAGES=${STAGES:-seed tutorial ours report}
{ date -u; git rev-parse HEAD 2>/dev/null || echo "no commit yet"; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null
  $PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"; } | tee "$OUT/env.txt"
if [ "$SHAPE" = tiny ]; then : ${SEED_STEPS:=2} ${SEED_GA:=2} ${TUT_STEPS:=2} ${TUT_GA:=2}; fi
for stage in $STAGES; do
  echo "=== $stage $(date -u +%T)"
  case $stage in
    seed)
      if [ -f .seedref/seed_recipe.py ]; then
        (cd .seedref && timeout ${SEED_TIMEOUT:-240} $PY seed_recipe.py --shape $SHAPE --steps ${SEED_STEPS:-3} --ga ${SEED_GA:-4}) \
          > "$OUT/seed_tier_a.log" 2>&1; grep -E "RESULT|^STEP|Error" "$OUT/seed_tier_a.log"
      else echo "no .seedref/seed_recipe.py: skipped"; fi ;;
    tutorial)
      for t in ${TUTORIAL_TIERS:-b}; do
        timeout ${TUT_TIMEOUT:-240} $PY -m bench.tutorial --tier $t --shape $SHAPE --steps ${TUT_STEPS:-3} --ga ${TUT_GA:-4} --out "$OUT" \
          > "$OUT/tutorial_$t.log" 2>&1; grep -E "RECORD|Error" "$OUT/tutorial_$t.log"
      done ;;
    ours)
      timeout ${OURS_TIMEOUT:-400} $PY -m bench.bench --shape $SHAPE --out "$OUT" $OURS_ARGS > "$OUT/ours.log" 2>&1
      grep -E "RECORD|Error|DONE" "$OUT/ours.log" | cut -c1-400 ;;
    measure)
      measure $SHAPE "${MEASURES:---tier a;--tier b;--tier a --set hardware=t4 --cap-gib 14.7}"
      grep -E "^MEASURE|Error" "$OUT/measure.log" | cut -c1-300 ;;
    report) $PY -m bench.report --out "$OUT" ;;
  esac
done
# the device returns at most 8 files: bundle the raw logs and profiles
( cd "$OUT" && shopt -s nullglob && files=(); for f in *.log profile_*.txt; do [ "$f" != run.log ] && files+=("$f"); done
  [ ${#files[@]} -gt 0 ] && tar czf logs.tar.gz "${files[@]}" && rm -f "${files[@]}" )
