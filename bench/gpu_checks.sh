#!/bin/bash
# The GPU plans' checks (docs/gpus.md), in one go on the GPU machine, 7B shape, random weights:
#   1. with 2+ GPUs: Tier A on 1 GPU vs DDP on 2 (`accelerate/ddp.yaml`), same global batch (GA):
#      loss by step and steady-state speed-up (`hardware compare`); then FSDP on 2
#      (`accelerate/fsdp.yaml`) for FSDP_STEPS optimizer steps (0: skipped), losses next to 1 GPU's;
#   2. `hardware measure` runs (estimate vs measured peak memory), one process each, on GPU 0:
#      MEASURES_FIRST before 1., MEASURES after, ";"-separated argument lists ("": none; a --cap-gib run
#      stands in for a smaller card).
#   bench/gpu_checks.sh   env: OUT (default .bench_out), ROWS (training rows, 96), GA (1-GPU
#                          accumulation, 8: global batch; 2 GPUs take half each), FSDP_STEPS (3),
#                          DDP_COMPARE (1; 0 skips the 1-GPU and DDP runs), PY
# Every run is under `limited` (bench/env.sh): stack dumps before its time limit kills it.
cd "$(dirname "$0")/.." || exit 1  # the repository root (OUT, if relative, is taken from there)
source bench/env.sh
ROWS=${ROWS:-96}
GA=${GA:-8}
if ! [ "$GA" -ge 2 ] 2>/dev/null || [ $(( GA % 2 )) != 0 ]; then
  echo "gpu_checks.sh: GA must be an even number >= 2 (2 GPUs take GA/2 each), got '$GA'" >&2; exit 2
fi
MODEL=/tmp/rand7b
nvidia-smi --query-gpu=index,name,memory.total --format=csv | tee "$OUT/gpus.txt"
$PY -c "from tableqa_helpers.hardware.gpucheck import random_checkpoint as r; r('$MODEL')" || exit 1
measure 7b "${MEASURES_FIRST---tier a --set hardware=t4 --cap-gib 14.7}"
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())") || GPUS=0  # honours CUDA_VISIBLE_DEVICES
[ "$GPUS" -ge 2 ] || echo "=== $GPUS GPU(s) here: the 1 vs 2 GPU and FSDP runs are skipped"
if [ "$GPUS" -ge 2 ]; then
  echo "=== 1 vs 2 GPUs $(date -u +%T)"
  rm -rf /tmp/one /tmp/two /tmp/fsdp "$OUT"/{one_gpu,two_gpus,fsdp}_tier_a.json "$OUT/compare.json"
  $PY -m tableqa_helpers synth-data /tmp/synth --train $ROWS --validation 4 --test 4 --seed 0 >/dev/null
  RUN="train --tier a --profile full --set model_id=$MODEL --set dataset_id=/tmp/synth
       --set hardware=none --set gpu=manual --set batch_size=1 --set gradient_checkpointing=false
       --set train_limit=$ROWS --set eval_limit=1 --set eval_steps=1000 --set tier_a.epochs=1
       --set logging_steps=1 --set dataloader_workers=6 --set tier_a.warmup=0"
  if [ "${DDP_COMPARE:-1}" = 1 ]; then
    limited ${ONE_TIMEOUT:-200} env CUDA_VISIBLE_DEVICES=0 $PY -m tableqa_helpers $RUN --set root=/tmp/one \
      --set grad_accum=$GA > "$OUT/one_gpu.log" 2>&1; echo "1 GPU: exit $? $(date -u +%T)"
    limited ${TWO_TIMEOUT:-200} $PY -m accelerate.commands.launch --config_file accelerate/ddp.yaml \
      --num_processes 2 -m tableqa_helpers $RUN --set root=/tmp/two --set grad_accum=$(( $GA / 2 )) \
      > "$OUT/two_gpus.log" 2>&1; echo "2 GPUs: exit $? $(date -u +%T)"
    $PY -m tableqa_helpers.hardware compare /tmp/one/full /tmp/two/full | tee "$OUT/compare.json"
    cp /tmp/one/full/logs/tier_a.json "$OUT/one_gpu_tier_a.json" 2>/dev/null
    cp /tmp/two/full/logs/tier_a.json "$OUT/two_gpus_tier_a.json" 2>/dev/null
  fi
  if [ "${FSDP_STEPS:-3}" -gt 0 ]; then  # the same run's first steps, sharded (epochs: a fraction)
    EPOCHS=$($PY -c "print(${FSDP_STEPS:-3} * $GA / $ROWS)")
    limited ${FSDP_TIMEOUT:-200} $PY -m accelerate.commands.launch --config_file accelerate/fsdp.yaml \
      --num_processes 2 -m tableqa_helpers $RUN --set root=/tmp/fsdp --set grad_accum=$(( $GA / 2 )) \
      --set tier_a.epochs=$EPOCHS > "$OUT/fsdp.log" 2>&1; echo "FSDP, 2 GPUs: exit $? $(date -u +%T)"
    cp /tmp/fsdp/full/logs/tier_a.json "$OUT/fsdp_tier_a.json" 2>/dev/null
  fi
fi
measure 7b "${MEASURES---tier a --set hardware=l4 --cap-gib 22;--tier a --set hardware=a100-40 --cap-gib 39.4}"
# a short table last
$PY - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
path = os.path.join(out, "compare.json")
if os.path.exists(path) and os.path.getsize(path):
    print("compare:", open(path).read().replace("\n", " "))
logs = {}
for name in ("one_gpu", "two_gpus", "fsdp"):
    path = os.path.join(out, f"{name}_tier_a.json")
    if os.path.exists(path):
        logs[name] = [e for e in json.load(open(path))["log_history"] if "loss" in e]
if logs:
    if "fsdp" in logs:  # its cosine schedule spans only its own steps
        print("fsdp: learning rates differ from step 2 on, so losses from step 3 on differ")
    print("step | " + " | ".join(f"{n}: loss, s/step, data s/step" for n in logs))
    for i in range(max(len(v) for v in logs.values())):
        print(i + 1, "|", " | ".join(f"{v[i]['loss']:.4f}, {v[i].get('step_seconds', '-')}, "
                                     f"{v[i].get('data_seconds', '-')}" if i < len(v) else "-"
                                     for v in logs.values()))
path = os.path.join(out, "measure.jsonl")
for line in open(path) if os.path.exists(path) else []:
    r = json.loads(line)
    print(f"measure tier {r['tier']} quantize {r['quantize']} cap {r['cap_gib']} preset "
          f"{r['preset']['preset']} pixels {r['max_pixels']}: estimate {r['estimate_gib']['peak']} "
          f"GiB, measured {r['measured_peak_gib']} GiB (reserved {r['measured_reserved_gib']}), "
          f"ratio {r['estimate_over_measured']}, {r['seconds_per_step']} s/step")
EOF
( cd "$OUT" && shopt -s nullglob && f=(*.log) && [ ${#f[@]} -gt 0 ] && tar czf logs.tar.gz "${f[@]}" && rm -f "${f[@]}" )
