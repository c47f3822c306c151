# Sourced by bench/run.sh and bench/gpu_checks.sh: output folder, python, and the packages the
# GPU machine lacks (trl, datasets, qwen-vl-utils, bitsandbytes: wheels carried in .whl/).
set -o pipefail
OUT=${OUT:-.bench_out}
mkdir -p "$OUT"
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c "import trl, datasets, qwen_vl_utils" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
