# Shared by the run_*_qwen3vl8b.sh and run_*_qwen3_8b.sh scripts: paths and scale from the environment, then verl.
#   RECIPE_CONFIG (qwen3vl8b; qwen3_8b: the text recipe, config/qwen3_8b.yaml)
#   MODEL_PATH (Qwen/Qwen3-VL-8B-Instruct; text: Qwen/Qwen3-8B)  DATA_DIR (data)  CKPT_DIR (checkpoints)
#   NNODES (4)  GPUS_PER_NODE (8)  EXPERIMENT_NAME (qwen3vl8b_<estimator>)  LOGGER ([console,tensorboard])
#   PYTHON (python3)  RLSD_DRY_RUN=1: compose and check the config, print it, start nothing.
#   ATTN_IMPL (flash_attention_2; sdpa where flash-attn is not installed, e.g. setup_gpu.sh --no-flash-attn)
#   BASELINE_FORM (paper): released = train as the released code's flags do wherever the paper is
#   silent (README "Parity with the released code", "Released forms"); settings the paper states stay.
# The paper trained on 32 H200 GPUs (4 nodes x 8); on a Ray cluster, start it first (README).
set -euo pipefail
RECIPE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export RECIPE_CONFIG="${RECIPE_CONFIG:-qwen3vl8b}"
case "$RECIPE_CONFIG" in
  qwen3vl8b) DEFAULT_MODEL=Qwen/Qwen3-VL-8B-Instruct ;;
  qwen3_8b) DEFAULT_MODEL=Qwen/Qwen3-8B ;;
  *) echo "RECIPE_CONFIG=$RECIPE_CONFIG: must be qwen3vl8b or qwen3_8b" >&2; exit 2 ;;
esac
export MODEL_PATH="${MODEL_PATH:-$DEFAULT_MODEL}"
export DATA_DIR="${DATA_DIR:-data}"
export CKPT_DIR="${CKPT_DIR:-checkpoints}"
export NNODES="${NNODES:-4}"
export GPUS_PER_NODE="${GPUS_PER_NODE:-8}"

export BASELINE_FORM="${BASELINE_FORM:-paper}"
case "$BASELINE_FORM" in
  paper|released) ;;
  *) echo "BASELINE_FORM=$BASELINE_FORM: must be paper or released" >&2; exit 2 ;;
esac

# The overrides of a method's released form (nothing for BASELINE_FORM=paper); printed to stderr.
released_overrides() {
  [ "$BASELINE_FORM" = released ] || return 0
  local o="algorithm.rollout.seed=1"  # SamplingParams(seed=1): sample i of every group, seed 1 + i
  case "$1" in
    grpo) ;;
    rlsd) o+=" algorithm.rlsd.schedule_step=global algorithm.rlsd.decay_steps=60 algorithm.teacher.sync_every=20"
          o+=" algorithm.teacher.max_hint_length=12000 algorithm.teacher.truncation_marker=''" ;;
    opsd) o+=" actor_rollout_ref.rollout.n=1 algorithm.teacher.mode=live algorithm.distill.loss=sampled_kl" ;;
    sdpo) o+=" algorithm.teacher.template=sdpo_inline" ;;
    grpo_opsd) o+=" algorithm.teacher.hint=answer algorithm.teacher.mode=live" ;;
  esac
  [ -n "${EXPERIMENT_NAME:-}" ] || o+=" trainer.experiment_name=${RECIPE_CONFIG}_${1}_released"
  echo "BASELINE_FORM=released ($1): $o" >&2
  echo "$o"
}

run_recipe() {
  exec "${PYTHON:-python3}" "$RECIPE_DIR/main.py" --config-name "$RECIPE_CONFIG" "$@"
}
