# Sourced by bench/run.sh and bench/gpu_checks.sh (from the repository root): output folder,
# python, the packages the GPU machine lacks (trl, datasets, qwen-vl-utils, bitsandbytes: wheels
# carried in .whl/), and the helpers `limited` and `measure`.
set -o pipefail
OUT=${OUT:-.bench_out}
mkdir -p "$OUT"
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c "import trl, datasets, qwen_vl_utils, bitsandbytes" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

# A command still running 15 s before its time limit gets SIGABRT first, so that Python's fault
# handler prints where every process of it stands (a hang shows up in the log), after a py-spy
# dump of each where py-spy is installed (clearer: one process at a time). Only the processes this
# call started are signalled: the command and its descendants (accelerate's workers, data loader
# workers), found from its PID, never by a name pattern (other runs on the machine are left alone).
ulimit -c 0  # no core files from that SIGABRT
descendants() {  # descendants PID: the PIDs of every process below PID
  local c
  for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done
}
limited() {  # limited SECONDS command...: `timeout`, with stack dumps before the kill (exit 134)
  local t=$1; shift
  PYTHONFAULTHANDLER=1 timeout "$t" "$@" & local run=$!
  ( sleep $(( t > 30 ? t - 15 : t / 2 )) & s=$!; trap 'kill $s; exit' TERM; wait $s
    pids=$(descendants $run)  # what `timeout` started (not timeout itself: it would just exit)
    spy=$(command -v py-spy || ls /tmp/site/bin/py-spy 2>/dev/null)  # .whl/ may carry py-spy
    [ -n "$spy" ] && for p in $pids; do  # loader workers included; at once
      ( timeout 3 $spy dump --pid $p > "/tmp/py-spy.$p" 2>&1; echo "=== py-spy $p"; cat "/tmp/py-spy.$p"
        rm -f "/tmp/py-spy.$p" ) & done; wait
    [ -n "$pids" ] && kill -ABRT $pids 2>/dev/null ) & local dog=$!
  wait $run; local rc=$?
  kill $dog 2>/dev/null; return $rc
}

# measure SHAPE "ARGS;ARGS...": one `hardware measure` process per ";"-separated argument list,
# on GPU 0, with random weights at SHAPE (/tmp/randSHAPE); records in $OUT/measure.jsonl
measure() {
  local shape=$1 r runs
  IFS=';' read -ra runs <<< "$2"
  for r in "${runs[@]}"; do
    echo "=== measure $r $(date -u +%T)"
    limited ${MEASURE_TIMEOUT:-240} env CUDA_VISIBLE_DEVICES=0 $PY -m tableqa_helpers.hardware measure \
      --shape $shape --model /tmp/rand$shape $r --out "$OUT/measure.jsonl" >> "$OUT/measure.log" 2>&1
    echo "measure $r: exit $?"
  done
}
