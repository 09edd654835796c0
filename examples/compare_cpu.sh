#!/usr/bin/env bash
# The five methods side by side on the CPU default: each from the same warm start and seed, then a PNG
# (validation accuracy, mean reward, RLSD's lambda and clip fraction per step) and a Markdown table.
#   bash examples/compare_cpu.sh                          # grpo rlsd opsd sdpo grpo_opsd
#   METHODS="grpo rlsd" STEPS=8 bash examples/compare_cpu.sh [hydra overrides ...]
# Outputs: outputs/cpu/metrics/<method>.jsonl, outputs/cpu/compare/{cpu_compare.png,cpu_compare.md,wall_s.tsv}.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="$ROOT/outputs/cpu"
mkdir -p "$WORK/compare"
: > "$WORK/compare/wall_s.tsv"
for method in ${METHODS:-grpo rlsd opsd sdpo grpo_opsd}; do
  start=$(date +%s)
  bash examples/quickstart_cpu.sh "$method" "$@"
  echo -e "$method\t$(( $(date +%s) - start ))" >> "$WORK/compare/wall_s.tsv"
done
"$ROOT/.venv/bin/python" examples/compare_cpu.py --workdir "$WORK"
