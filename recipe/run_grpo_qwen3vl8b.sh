#!/usr/bin/env bash
# GRPO baseline: group-normalised outcome reward, no teacher.
# Qwen3-VL-8B-Instruct, the paper's setup (config/qwen3vl8b.yaml); extra Hydra overrides pass through.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_recipe \
  algorithm.adv_estimator=grpo \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  $(released_overrides grpo) \
  "$@"
