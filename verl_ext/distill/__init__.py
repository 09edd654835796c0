"""Logit-level self-distillation losses (top-k generalised JSD / forward KL with a tail bucket).

Importing this package registers ``jsd_topk`` in verl's distillation-loss registry. Selected with
``algorithm.distill.loss=jsd_topk|forward_kl_topk|sampled`` (see :mod:`verl_ext.distill.config`);
the data flow is in :mod:`verl_ext.distill.flow`, the engine side in :mod:`verl_ext.distill.actor`.
"""

from verl_ext.distill import actor  # noqa: F401  (registers jsd_topk with verl)
from verl_ext.distill.config import DistillOptions, distill_options
from verl_ext.distill.losses import gather_log_probs, generalized_jsd, topk_divergence, topk_ids

__all__ = ["DistillOptions", "distill_options", "gather_log_probs", "generalized_jsd", "topk_divergence", "topk_ids"]
