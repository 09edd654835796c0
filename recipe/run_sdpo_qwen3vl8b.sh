#!/usr/bin/env bash
# SDPO: self-distillation from a teacher that saw a successful sibling, EMA teacher (rate 0.05), as the
# paper ran it: generalised JSD (alpha 0.5) on the student's top-100 tokens plus a tail bucket, with a
# per-token importance weight clipped at 2.0 (algorithm.distill.loss=sampled gives the delta_t form).
# Qwen3-VL-8B-Instruct, the paper's setup (config/qwen3vl8b.yaml); extra Hydra overrides pass through.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_recipe \
  algorithm.adv_estimator=sdpo \
  algorithm.teacher.hint=sibling \
  algorithm.teacher.mode=ema \
  actor_rollout_ref.actor.optim.lr=1e-5 \
  algorithm.distill.loss=jsd_topk \
  algorithm.distill.topk=100 \
  algorithm.distill.alpha=0.5 \
  algorithm.distill.tail=true \
  algorithm.distill.is_clip=2.0 \
  $(released_overrides sdpo) \
  "$@"
