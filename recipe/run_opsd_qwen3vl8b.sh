#!/usr/bin/env bash
# OPSD: on-policy self-distillation from a teacher that saw a verified reference trace.
# Sampled-token form (advantage delta_t). The distribution-level form: add
#   algorithm.distill.loss=jsd_topk algorithm.distill.topk=100   (or forward_kl_topk)
# Qwen3-VL-8B-Instruct, the paper's setup (config/qwen3vl8b.yaml); extra Hydra overrides pass through.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_recipe \
  algorithm.adv_estimator=opsd \
  algorithm.teacher.hint=reference \
  algorithm.teacher.mode=frozen \
  actor_rollout_ref.actor.optim.lr=1e-5 \
  $(released_overrides opsd) \
  "$@"
