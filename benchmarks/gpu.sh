#!/usr/bin/env bash
# Benchmarks 1-4 and 6 on one GPU (an H100/H200 in about 6 minutes), in bf16 where a model
# is trained, then one headline table (benchmarks/headline.py). Each script's full output is
# kept in OUT_DIR/<script>.md; BENCHMARKS.md explains every table.
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # default /tmp/fixed_head_benchmarks
#   QUICK=1 bash benchmarks/gpu.sh OUT_DIR    # tiny shapes on any machine (the CPU smoke test)
#
# Needs a CUDA JAX install and this repository's requirements, nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/fixed_head_benchmarks}
mkdir -p "$out"
quick=()
if [[ -n "${QUICK:-}" ]]; then quick=(--quick --repeats=1); fi

run() {  # run SCRIPT ARGS...: prints and keeps SCRIPT's output
  local script=$1
  shift
  echo "== python benchmarks/$script.py $* ${quick[*]}" >&2
  python "benchmarks/$script.py" "$@" "${quick[@]}" | tee "$out/$script.md"
}

run matmul
run attention --emb_dim=768 --num_heads=12 --seq_lens=128,512 --dtype=bfloat16 \
  --batch_size=32
run train_step --config=configs/lm1b.py:baseline --config=configs/lm1b.py:fixed \
  --config=configs/bert.py:fixed_d768_h12 --config='configs/bert.py:fixed_d768_h12,stage=2' \
  --dtype=bfloat16 --batch_size=64 --noprofile
run cost_growth --config.model.dtype=bfloat16 --emb_dim=768 --num_heads=12 --num_layers=4 \
  --mlp_dim=3072 --tokens=32768 --output="$out"
run input_pipeline --config.model.dtype=bfloat16 --batch_size=256 --steps=10 --batches=20 \
  --sources=array_record,prepacked --read_threads=0,8
python benchmarks/headline.py "$out"
