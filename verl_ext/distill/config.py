"""``algorithm.distill.*``: which distillation loss the actor uses for opsd, sdpo and grpo_opsd.

=========== ======================================================================= ==========
key         meaning                                                                 default
=========== ======================================================================= ==========
loss        ``sampled``: the sampled-token form (advantage ``delta_t`` on the PPO    sampled
            loss, as before); ``sampled_kl`` (opsd): the released ``kl`` loss
            ``log s - log t`` on the sampled token, i.e. advantage -1; ``jsd_topk``: generalised JSD on the student's top-k
            tokens (+ tail) as the actor's loss; ``forward_kl_topk``: the same with
            ``alpha = 0``, i.e. ``KL(teacher || student)``
topk        size k of the support                                                   100
support     whose top-k ids form the support: ``student`` (SDPO) or ``teacher``     student
            (the released code's default for its top-k OPSD)
alpha       mixture weight of the generalised JSD (0 forward KL, 1 reverse KL)      0.5
tail        add the bucket "all other tokens" (else renormalise over the k ids)     true
is_clip     per-token importance weight ``min(exp(logp - logp_old), is_clip)``      2.0
            (detached); null = no weight
chunk_rows  rows of ``[rows, V]`` logits turned into fp32 at once                   1024
=========== ======================================================================= ==========

With a logit-level loss, opsd and sdpo train on that loss alone (their advantages are not used);
grpo_opsd trains on GRPO's PPO loss (advantage ``A_i``, no ``beta * delta_t``) plus
``algorithm.grpo_opsd.beta`` times the loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from verl_ext.algorithms.checks import check_choice, options

LOSSES = ("sampled", "sampled_kl", "jsd_topk", "forward_kl_topk")
# Sampled-token forms (an advantage on verl's PPO loss): ``sampled`` (delta_t) and ``sampled_kl``, the
# released OPSD ``kl`` loss ``mean_t(log s - log t)`` with the teacher detached, whose gradient is that
# of a constant advantage -1 (opsd only).
SAMPLED_LOSSES = ("sampled", "sampled_kl")
SUPPORTS = ("student", "teacher")
# Estimators whose teacher signal may be a logit-level loss (rlsd keeps the reward's direction by
# reweighting A_i, which has no logit-level form).
LOGIT_ESTIMATORS = ("opsd", "sdpo", "grpo_opsd")
# Estimators whose whole loss is the distillation loss; the others add it to GRPO's PPO loss.
PURE_DISTILL_ESTIMATORS = ("opsd", "sdpo")


@dataclasses.dataclass
class DistillOptions:
    loss: str = "sampled"
    topk: int = 100
    support: str = "student"
    alpha: float = 0.5
    tail: bool = True
    is_clip: float | None = 2.0
    chunk_rows: int = 1024

    def __post_init__(self) -> None:
        check_choice("algorithm.distill.loss", self.loss, LOSSES)
        check_choice("algorithm.distill.support", self.support, SUPPORTS)
        if int(self.topk) < 1:
            raise ValueError(f"algorithm.distill.topk must be >= 1, got {self.topk}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"algorithm.distill.alpha must be in [0, 1], got {self.alpha}")
        if self.is_clip is not None and float(self.is_clip) <= 0:
            raise ValueError(f"algorithm.distill.is_clip must be positive or null, got {self.is_clip}")
        if int(self.chunk_rows) < 1:
            raise ValueError(f"algorithm.distill.chunk_rows must be >= 1, got {self.chunk_rows}")
        self.topk, self.alpha, self.chunk_rows = int(self.topk), float(self.alpha), int(self.chunk_rows)
        self.tail = bool(self.tail)
        self.is_clip = None if self.is_clip is None else float(self.is_clip)

    @property
    def logit_level(self) -> bool:
        return self.loss not in SAMPLED_LOSSES

    @property
    def effective_alpha(self) -> float:
        return 0.0 if self.loss == "forward_kl_topk" else self.alpha

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def resolve(cls, raw: Any, estimator: str) -> "DistillOptions":
        """``algorithm.distill`` (nulls mean default) checked against the estimator."""
        values = {k: v for k, v in options(raw, "distill", (f.name for f in dataclasses.fields(cls))).items()}
        values = {k: v for k, v in values.items() if v is not None or k == "is_clip"}
        opts = cls(**values)
        if opts.loss == "sampled_kl" and estimator != "opsd":
            raise ValueError(f"algorithm.distill.loss=sampled_kl (the released OPSD kl loss) applies to opsd, not "
                             f"algorithm.adv_estimator={estimator}")
        if opts.logit_level and estimator not in LOGIT_ESTIMATORS:
            raise ValueError(
                f"algorithm.distill.loss={opts.loss} applies to {', '.join(LOGIT_ESTIMATORS)}, not "
                f"algorithm.adv_estimator={estimator}; use algorithm.distill.loss=sampled"
            )
        return opts


def distill_options(algorithm_config: Any, estimator: str) -> DistillOptions:
    raw = algorithm_config.get("distill", None) if algorithm_config is not None and hasattr(algorithm_config, "get") else None
    return DistillOptions.resolve(raw, estimator)


def check_config(config: Any) -> None:
    """Driver-side checks for a logit-level loss (raise ValueError naming the key)."""
    estimator = str(config.algorithm.adv_estimator)
    opts = distill_options(config.algorithm, estimator)
    if not opts.logit_level:
        return
    actor = config.actor_rollout_ref.actor
    sp = actor.get("ulysses_sequence_parallel_size", 1) or 1
    if int(sp) != 1:
        raise ValueError(
            f"algorithm.distill.loss={opts.loss} needs actor_rollout_ref.actor.ulysses_sequence_parallel_size=1 "
            f"(got {sp}): the top-k values are aligned to whole sequences"
        )
    corr = config.algorithm.get("rollout_correction", None) or {}
    if corr.get("bypass_mode", False):
        raise ValueError(
            f"algorithm.distill.loss={opts.loss} records the student's top-k ids in the old-log-prob forward, which "
            "algorithm.rollout_correction.bypass_mode=true skips; set it to false"
        )
    model = config.actor_rollout_ref.model
    if model.get("use_fused_kernels", False):
        raise ValueError(
            f"algorithm.distill.loss={opts.loss} needs actor_rollout_ref.model.use_fused_kernels=false: fused "
            "kernels never materialise the logits the top-k loss reads"
        )


__all__ = ["DistillOptions", "LOGIT_ESTIMATORS", "LOSSES", "PURE_DISTILL_ESTIMATORS", "check_config", "distill_options"]
