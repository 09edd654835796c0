"""rlsd-verl: RLSD (RLVR with Self-Distillation) and its baselines as plugins for stock verl.

Importing this package registers the advantage estimators ``rlsd``, ``opsd``, ``sdpo`` and
``grpo_opsd`` in verl's estimator registry and the ``self_distill`` trainer mode in verl's V1
trainer registry. verl itself imports it through the ``verl.plugins``
entry point (see :mod:`verl_ext.plugin`), so ``import verl`` is enough in every process.
"""

# Before anything imports verl's engines or platform: drop their import-time noise (verl_ext/quiet.py).
from verl_ext import quiet as _quiet

_quiet.install()

# Then: the CPU platform must be registered before anything resolves verl's platform.
from verl_ext import cpu  # noqa: F401  (CPU platform; active only with VERL_PLATFORM=cpu)
from verl_ext import algorithms  # noqa: F401  (registers the estimators)
from verl_ext import trainer  # noqa: F401  (registers the self_distill trainer mode)
from verl_ext import distill  # noqa: F401  (registers the jsd_topk distillation loss)
from verl_ext import rollout  # noqa: F401  (registers the rlsd_single_turn agent loop)

__all__ = ["algorithms", "cpu", "distill", "rollout", "trainer"]
