#!/usr/bin/env bash
# GRPO on a text model: Qwen3-8B on DAPO-Math-17k, answers in \boxed{} (config/qwen3_8b.yaml). The method's
# overrides are run_grpo_qwen3vl8b.sh's; only the config differs. Extra Hydra overrides pass through.
RECIPE_CONFIG=qwen3_8b exec bash "$(dirname "${BASH_SOURCE[0]}")/run_grpo_qwen3vl8b.sh" "$@"
