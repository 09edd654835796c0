#!/usr/bin/env bash
# SDPO: self-distillation from a teacher that saw a successful sibling, EMA teacher.
# Qwen3-VL-8B-Instruct, the paper's setup (config/qwen3vl8b.yaml); extra Hydra overrides pass through.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_recipe \
  algorithm.adv_estimator=sdpo \
  algorithm.teacher.hint=sibling \
  algorithm.teacher.mode=ema \
  actor_rollout_ref.actor.optim.lr=1e-5 \
  "$@"
