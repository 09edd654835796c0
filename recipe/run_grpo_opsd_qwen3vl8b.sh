#!/usr/bin/env bash
# GRPO+OPSD: GRPO advantage plus beta times the OPSD distillation term (algorithm.grpo_opsd.beta).
# Sampled-token form (A_i + beta * delta_t). With algorithm.distill.loss=jsd_topk the advantage is A_i
# and the actor adds beta times the top-k JSD to GRPO's PPO loss.
# Qwen3-VL-8B-Instruct, the paper's setup (config/qwen3vl8b.yaml); extra Hydra overrides pass through.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_recipe \
  algorithm.adv_estimator=grpo_opsd \
  algorithm.teacher.hint=reference \
  algorithm.teacher.mode=frozen \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  $(released_overrides grpo_opsd) \
  "$@"
