#!/usr/bin/env bash
# Evaluate a Qwen3-VL-8B checkpoint on the five benchmarks and write a table beside the paper's Table 2.
#
#   MODEL=checkpoints/rlsd/global_step_200 DATA_DIR=data/bench OUT_DIR=runs/eval/rlsd_step200 \
#     bash recipe/eval_qwen3vl8b.sh --label RLSD
#
# MODEL is a Hugging Face directory or a verl FSDP checkpoint (merged with verl's model merger).
# Extra arguments are passed to `python -m verl_ext.eval` (e.g. --preset greedy, --limit 20,
# --backend hf, --set max_new_tokens=2048). Rerun the same command to resume after a crash.
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen3-VL-8B-Instruct}
DATA_DIR=${DATA_DIR:-data/bench}
OUT_DIR=${OUT_DIR:-runs/eval/$(basename "${MODEL%/}")}
BENCHMARKS=${BENCHMARKS:-mmmu,mathvista,mathvision,zerobench,wemath}
BACKEND=${BACKEND:-vllm}
PYTHON=${PYTHON:-python}

exec "$PYTHON" -m verl_ext.eval \
    --model "$MODEL" \
    --data-dir "$DATA_DIR" \
    --out-dir "$OUT_DIR" \
    --benchmarks "$BENCHMARKS" \
    --backend "$BACKEND" \
    --tensor-parallel-size "${TP_SIZE:-1}" \
    --gpu-memory-utilization "${GPU_MEM_UTIL:-0.85}" \
    --max-model-len "${MAX_MODEL_LEN:-16384}" \
    "$@"
