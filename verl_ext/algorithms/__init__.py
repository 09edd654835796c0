"""Advantage estimators of RLSD and its baselines: pure torch functions plus their verl registrations.

Importing this module registers ``rlsd``, ``opsd``, ``sdpo`` and ``grpo_opsd`` in
``verl.trainer.ppo.core_algos``'s estimator registry (``grpo`` is verl's own).
"""

from verl_ext.algorithms.estimators import (
    grpo_opsd_advantages,
    opsd_advantages,
    rlsd_advantages,
    rlsd_lambda,
    sdpo_advantages,
)
from verl_ext.algorithms.registry import (
    GRPO_OPSD_DEFAULTS,
    RLSD_DEFAULTS,
    TEACHER_ESTIMATORS,
    TEACHER_TRAINER_MODE,
    compute_grpo_opsd_advantage,
    compute_opsd_advantage,
    compute_rlsd_advantage,
    compute_sdpo_advantage,
    grpo_sequence_advantages,
)

__all__ = [
    "GRPO_OPSD_DEFAULTS",
    "RLSD_DEFAULTS",
    "TEACHER_ESTIMATORS",
    "TEACHER_TRAINER_MODE",
    "compute_grpo_opsd_advantage",
    "compute_opsd_advantage",
    "compute_rlsd_advantage",
    "compute_sdpo_advantage",
    "grpo_opsd_advantages",
    "grpo_sequence_advantages",
    "opsd_advantages",
    "rlsd_advantages",
    "rlsd_lambda",
    "sdpo_advantages",
]
