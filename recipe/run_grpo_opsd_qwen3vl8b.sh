#!/usr/bin/env bash
# GRPO+OPSD: GRPO advantage plus beta times the OPSD distillation term.
# Qwen3-VL-8B-Instruct, the paper's setup (config/qwen3vl8b.yaml); extra Hydra overrides pass through.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_recipe \
  algorithm.adv_estimator=grpo_opsd \
  algorithm.teacher.hint=reference \
  algorithm.teacher.mode=frozen \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  "$@"
