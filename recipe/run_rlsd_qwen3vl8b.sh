#!/usr/bin/env bash
# RLSD: GRPO's direction, credit redistributed by a teacher that saw the answer.
# Qwen3-VL-8B-Instruct, the paper's setup (config/qwen3vl8b.yaml); extra Hydra overrides pass through.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_recipe \
  algorithm.adv_estimator=rlsd \
  algorithm.teacher.hint=answer \
  algorithm.teacher.mode=frozen \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  $(released_overrides rlsd) \
  "$@"
