"""rlsd-verl: RLSD (RLVR with Self-Distillation) and its baselines as plugins for stock verl.

Importing this package registers the advantage estimators ``rlsd``, ``opsd``, ``sdpo`` and
``grpo_opsd`` in verl's estimator registry. verl itself imports it through the ``verl.plugins``
entry point (see :mod:`verl_ext.plugin`), so ``import verl`` is enough in every process.
"""

from verl_ext import algorithms  # noqa: F401  (registers the estimators)

__all__ = ["algorithms"]
from verl_ext import cpu  # noqa: E402,F401  (CPU platform; active only with VERL_PLATFORM=cpu)
