#!/usr/bin/env bash
# The CPU comparison as an experiment: the five methods and the shuffled-hint control (RLSD whose teacher sees
# another prompt's answer of the same task), each seed from that seed's own tiny model and warm start, validation every 3 steps
# with 2 samples per row (the quickstart's 4 at five validations made 43% of a run; the 75-minute budget);
# then a PNG (mean and min-max band over seeds) and a Markdown table (mean +- std of start, end, gain).
#   bash examples/compare_cpu.sh                         # 3 seeds x 6 variants, 12 steps each
#   bash examples/compare_cpu.sh --seeds 1 grpo rlsd     # variants to run may follow the options
#   STEPS=8 bash examples/compare_cpu.sh --seeds 2 -- trainer.test_freq=4   # Hydra overrides after --
# Outputs: outputs/cpu/metrics/<variant>_seed<N>.jsonl, outputs/cpu/compare/{cpu_compare.png,cpu_compare.md}.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="$ROOT/outputs/cpu"
SEEDS=3
VARIANTS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS="${2:?--seeds needs a number}"; shift 2 ;;
    --) shift; break ;;
    grpo|rlsd|opsd|sdpo|grpo_opsd|rlsd_shuffled) VARIANTS+=("$1"); shift ;;
    *) echo "usage: compare_cpu.sh [--seeds N] [variant ...] [-- hydra overrides]; unknown: $1" >&2; exit 2 ;;
  esac
done
case "$SEEDS" in ''|*[!0-9]*) echo "--seeds must be a positive integer, got '$SEEDS'" >&2; exit 2 ;; esac
[ ${#VARIANTS[@]} -gt 0 ] || VARIANTS=(grpo rlsd opsd sdpo grpo_opsd rlsd_shuffled)
seeds=$(seq 0 $((SEEDS - 1)))
for seed in $seeds; do
  for variant in "${VARIANTS[@]}"; do
    extra=()
    method="$variant"
    if [ "$variant" = rlsd_shuffled ]; then method=rlsd; extra=(algorithm.teacher.hint=shuffled algorithm.teacher.shuffle_group=task); fi
    bash examples/quickstart_cpu.sh "$method" --seed "$seed" --run-name "${variant}_seed${seed}" \
      trainer.test_freq=3 actor_rollout_ref.rollout.val_kwargs.n=2 "${extra[@]}" "$@"
  done
done
echo "comparison: ${#VARIANTS[@]} variants x $SEEDS seeds in $((SECONDS / 60)) min $((SECONDS % 60)) s (warm starts built on the way included)"
"$ROOT/.venv/bin/python" examples/compare_cpu.py --workdir "$WORK" --variants "${VARIANTS[@]}" --seeds $seeds
