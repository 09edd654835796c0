# Shared by the run_*_qwen3vl8b.sh scripts: paths and scale from the environment, then verl.
#   MODEL_PATH (Qwen/Qwen3-VL-8B-Instruct)  DATA_DIR (data)  CKPT_DIR (checkpoints)
#   NNODES (4)  GPUS_PER_NODE (8)  EXPERIMENT_NAME (qwen3vl8b_<estimator>)  LOGGER ([console,tensorboard])
#   PYTHON (python3)  RLSD_DRY_RUN=1: compose and check the config, print it, start nothing.
#   ATTN_IMPL (flash_attention_2; sdpa where flash-attn is not installed, e.g. setup_gpu.sh --no-flash-attn)
# The paper trained on 32 H200 GPUs (4 nodes x 8); on a Ray cluster, start it first (README).
set -euo pipefail
RECIPE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export MODEL_PATH="${MODEL_PATH:-Qwen/Qwen3-VL-8B-Instruct}"
export DATA_DIR="${DATA_DIR:-data}"
export CKPT_DIR="${CKPT_DIR:-checkpoints}"
export NNODES="${NNODES:-4}"
export GPUS_PER_NODE="${GPUS_PER_NODE:-8}"

run_recipe() {
  exec "${PYTHON:-python3}" "$RECIPE_DIR/main.py" "$@"
}
