#!/usr/bin/env bash
# The embedded CPU default: verl's own trainer (through recipe/main.py, the GPU recipes' entry point) for a few steps with a
# tiny Qwen3-VL on the synthetic data set, warm-started by a supervised pass that teaches the format, the colour task
# and a teacher that reads its hint, and leaves the dots task at chance for RL (built once per seed, cached in
# outputs/cpu/tiny_qwen3vl_warm[_seed<N>]), validated on the whole test split before training (step 0) and at the end.
#   bash examples/quickstart_cpu.sh                 # RLSD, 12 steps
#   bash examples/quickstart_cpu.sh grpo            # or METHOD=grpo; grpo | rlsd | opsd | sdpo | grpo_opsd
#   bash examples/quickstart_cpu.sh rlsd trainer.total_training_steps=6 algorithm.rlsd.lambda_init=0.3
#   STEPS=8 bash examples/quickstart_cpu.sh sdpo    # extra arguments are Hydra overrides for verl
#   bash examples/quickstart_cpu.sh grpo --seed 2   # or SEED=2: the tiny model's init, its warm start and RL
#   bash examples/quickstart_cpu.sh --text rlsd     # or MODALITY=text: a tiny text Qwen3 on generated arithmetic
#   ROLLOUT=vllm bash examples/quickstart_cpu.sh    # or --rollout vllm: verl's vLLM server (the GPU recipes' rollout; its CPU build is installed on first use)
# CPU overrides: recipe/config/cpu_tiny.yaml. Outputs: outputs/cpu/ (data, model, logs, metrics, checkpoints).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# vLLM's CPU build is installed on the first run that asks for the vllm rollout (hf, the default, needs none of it)
needs_vllm() {
  [[ "${ROLLOUT:-}" == vllm ]] && return 0
  local prev="" a
  for a in "$@"; do
    [[ "$a" == --rollout=vllm || "$a" =~ ^\+*actor_rollout_ref\.rollout\.name=vllm$ || ( "$prev" == --rollout && "$a" == vllm ) ]] && return 0
    prev="$a"
  done
  return 1
}
if needs_vllm "$@"; then bash scripts/setup_venv.sh --vllm; else bash scripts/setup_venv.sh; fi
PY="$ROOT/.venv/bin/python"

METHOD="${METHOD:-rlsd}"
MODALITY="${MODALITY:-vl}"
if [[ "${1:-}" == "--text" ]]; then MODALITY=text; shift; fi
case "$MODALITY" in vl|text) ;; *) echo "usage: MODALITY must be vl or text, got '$MODALITY'" >&2; exit 2 ;; esac
case "${1:-}" in
  grpo|rlsd|opsd|sdpo|grpo_opsd) METHOD="$1"; shift ;;
esac
# a word that is neither a method nor an override would reach Hydra only after the warm start
case "${1:-}" in
  ""|*=*|-*|~*) ;;
  *) echo "usage: bash examples/quickstart_cpu.sh [grpo|rlsd|opsd|sdpo|grpo_opsd] [--seed N] [key=value ...]: '$1' is neither a method nor key=value" >&2; exit 2 ;;
esac
if [[ -n "${STEPS:-}" && ! "$STEPS" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: STEPS must be a positive integer, got '$STEPS'" >&2; exit 2
fi
if [[ -n "${ROLLOUT:-}" && ! "$ROLLOUT" =~ ^(hf|vllm)$ ]]; then
  echo "usage: ROLLOUT must be hf or vllm, got '$ROLLOUT'" >&2; exit 2
fi
if [[ -n "${SEED:-}" && ! "$SEED" =~ ^[0-9]+$ ]]; then
  echo "usage: SEED must be a non-negative integer, got '$SEED'" >&2; exit 2
fi
WORK="$ROOT/outputs/cpu"

if [[ "$MODALITY" == text ]]; then
  # the text path: the tiny text Qwen3 on the generated arithmetic set (answers in \boxed{}), same trainer and methods
  if ! "$PY" -c "import sys, pyarrow.parquet as pq; from data_prep.converters.arithmetic import TRAIN_SIZE
sys.exit(pq.ParquetFile(sys.argv[1]).metadata.num_rows != TRAIN_SIZE)" "$WORK/data/arithmetic/train.parquet" 2>/dev/null; then
    "$PY" data_prep/build_parquet.py arithmetic --out-dir "$WORK/data"
  fi
  VERL_PLATFORM=cpu exec "$PY" -W ignore -m verl_ext.cpu.launch --modality text --method "$METHOD" --workdir "$WORK" ${STEPS:+--steps "$STEPS"} "$@"
fi

# (re)build the synthetic set when missing or left by another version (row count, or its first row differs)
if ! "$PY" -c "import sys, pyarrow.parquet as pq; from data_prep.converters.synthetic import TRAIN_SIZE, generate
f = pq.ParquetFile(sys.argv[1]); first = f.read_row_group(0).slice(0, 1).to_pylist()[0]['extra_info']
raw = next(generate('train', 1, 0))[1]
sys.exit(f.metadata.num_rows != TRAIN_SIZE or (first['question'], first['answer']) != (raw['question'], raw['answer']))" \
    "$WORK/data/synthetic/train.parquet" 2>/dev/null; then
  "$PY" data_prep/build_parquet.py synthetic --out-dir "$WORK/data"
fi
# the tiny model and its warm start are built by the launcher once and reused afterwards
VERL_PLATFORM=cpu exec "$PY" -W ignore -m verl_ext.cpu.launch --method "$METHOD" --workdir "$WORK" ${STEPS:+--steps "$STEPS"} "$@"
