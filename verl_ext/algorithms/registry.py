"""verl registrations of the estimators: ``rlsd``, ``opsd``, ``sdpo`` and ``grpo_opsd``.

``grpo`` stays verl's own. Each wrapper takes verl's usual keyword arguments
(``token_level_rewards``, ``response_mask``, ``index``, ``config``) plus what the teacher pass adds
(``teacher_log_probs``, ``old_log_probs``, ``global_step``, and optionally ``teacher_valid``,
``reweight_mask`` and a ``metrics`` dict to fill), and returns ``(advantages, returns)`` like every
verl estimator.

Knobs, read from the algorithm config (``algorithm.<name>.<key>``):

- ``algorithm.rlsd``: ``lambda_init`` (0.5), ``decay_steps`` (50), ``warmup_steps`` (0),
  ``clip_eps`` (0.2), ``negative_only`` (false), ``thought_only`` (false: when true the trainer
  passes ``reweight_mask`` marking the thought span), ``schedule_step`` (``update``; ``global``
  with ``decay_steps=60`` gives the released schedule).
- ``algorithm.grpo_opsd``: ``beta`` (0.1; the paper does not report its value).
- ``algorithm.norm_adv_by_std_in_grpo`` (verl's own key) for the GRPO part of ``rlsd`` and
  ``grpo_opsd``.

``global_step`` is verl's trainer step, which starts at 1; lambda is evaluated at
``global_step - 1`` so the first update uses ``lambda_init`` (``schedule_step=update``), or at
``global_step`` itself as the released code does (``schedule_step=global``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from verl.trainer.ppo import core_algos

from verl_ext.algorithms.checks import check_finite, check_shape, section
from verl_ext.distill.config import distill_options
from verl_ext.algorithms.estimators import (
    grpo_opsd_advantages,
    opsd_advantages,
    rlsd_advantages,
    rlsd_lambda,
    sdpo_advantages,
)

# The verl trainer mode that computes teacher log-probs and passes them to these estimators.
TEACHER_TRAINER_MODE = "self_distill"

RLSD_DEFAULTS = {
    "lambda_init": 0.5,
    "decay_steps": 50,
    "warmup_steps": 0,
    "clip_eps": 0.2,
    "negative_only": False,
    "thought_only": False,
    "schedule_step": "update",
}
# What step the lambda schedule reads: "update" counts updates from 0 (the paper: the first update
# uses lambda_init); "global" is verl's global step, from 1 (the released code).
SCHEDULE_STEPS = ("update", "global")
GRPO_OPSD_DEFAULTS = {"beta": 0.1}
# Estimators that need a teacher pass; grpo needs none.
TEACHER_ESTIMATORS = ("rlsd", "opsd", "sdpo", "grpo_opsd")


def _require(name: str, estimator: str, value: Any) -> Any:
    if value is None:
        raise ValueError(
            f"advantage estimator '{estimator}' needs '{name}', which verl's default trainer does not provide; "
            f"run with trainer.v1.trainer_mode={TEACHER_TRAINER_MODE} (the teacher pass of verl_ext), "
            f"or call verl_ext.algorithms.{estimator}_advantages directly"
        )
    return value


def grpo_sequence_advantages(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None,
    config: Any = None,
    estimator: str = "grpo",
) -> torch.Tensor:
    """``A_i`` ``[B]``: verl's GRPO outcome advantage (group mean/std per uid, epsilon 1e-6)."""
    if response_mask.dim() != 2:
        raise ValueError(f"response_mask must be [B, T], got shape {tuple(response_mask.shape)}")
    check_shape("token_level_rewards", token_level_rewards, response_mask.shape, "response_mask")
    _require("index", estimator, index)
    if len(index) != response_mask.shape[0]:
        raise ValueError(f"shape mismatch: index has length {len(index)} but response_mask has shape {tuple(response_mask.shape)}")
    norm = True if config is None else bool(config.get("norm_adv_by_std_in_grpo", True))
    # verl's GRPO sums each row's token rewards and broadcasts A_i over the mask; handing it the
    # [B, 1] row sums gives the same A_i without a [B, T] pass.
    scores = token_level_rewards.detach().sum(dim=-1, keepdim=True)
    check_finite("token_level_rewards", scores)  # a NaN/inf token makes its row sum non-finite
    seq_adv, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=scores,
        response_mask=torch.ones_like(scores),
        index=index,
        epsilon=1e-6,
        norm_adv_by_std_in_grpo=norm,
        config=config,
    )
    return seq_adv.squeeze(-1)


def schedule_position(global_step: int, schedule_step: str) -> int:
    """The step the lambda schedule is evaluated at for verl's ``global_step`` (from 1)."""
    if schedule_step not in SCHEDULE_STEPS:
        raise ValueError(f"algorithm.rlsd.schedule_step must be one of {SCHEDULE_STEPS}, got {schedule_step!r}")
    return max(global_step - 1, 0) if schedule_step == "update" else global_step


def _log(metrics: dict | None, prefix: str, values: dict[str, float]) -> None:
    if metrics is not None:
        metrics.update({f"{prefix}/{k}": v for k, v in values.items()})


@core_algos.register_adv_est("rlsd")
def compute_rlsd_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    teacher_log_probs: torch.Tensor | None = None,
    old_log_probs: torch.Tensor | None = None,
    global_step: int | None = None,
    reweight_mask: torch.Tensor | None = None,
    metrics: dict | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RLSD: ``A_i * ((1 - lambda) + lambda * clip(exp(sign(A_i) * delta_t), 1 - eps, 1 + eps))``.

    ``[B, T]`` in, ``([B, T], [B, T])`` out; see :func:`verl_ext.algorithms.rlsd_advantages`.
    """
    opts = section(config, "rlsd", RLSD_DEFAULTS)
    teacher_log_probs = _require("teacher_log_probs", "rlsd", teacher_log_probs)
    old_log_probs = _require("old_log_probs", "rlsd", old_log_probs)
    global_step = _require("global_step", "rlsd", global_step)
    if opts["thought_only"]:
        reweight_mask = _require("reweight_mask (algorithm.rlsd.thought_only=true)", "rlsd", reweight_mask)
    seq_adv = grpo_sequence_advantages(token_level_rewards, response_mask, index, config, "rlsd")
    lam = rlsd_lambda(
        schedule_position(int(global_step), opts["schedule_step"]),
        init=float(opts["lambda_init"]),
        decay_steps=int(opts["decay_steps"]),
        warmup_steps=int(opts["warmup_steps"]),
    )
    adv, values = rlsd_advantages(
        seq_adv,
        teacher_log_probs,
        old_log_probs,
        response_mask,
        lam,
        clip_eps=float(opts["clip_eps"]),
        negative_only=bool(opts["negative_only"]),
        reweight_mask=reweight_mask if opts["thought_only"] else None,
    )
    _log(metrics, "rlsd", values)
    return adv, adv


def _register_distill(estimator: str, fn, doc: str):
    """Register a pure distillation estimator (``delta_t``-based, no knobs) under ``estimator``."""

    def compute(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        index: np.ndarray | None = None,
        config: Any = None,
        teacher_log_probs: torch.Tensor | None = None,
        old_log_probs: torch.Tensor | None = None,
        global_step: int | None = None,
        teacher_valid: torch.Tensor | None = None,
        metrics: dict | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        section(config, estimator, {})  # no knobs of its own: any option given is a mistake
        adv, values = fn(
            _require("teacher_log_probs", estimator, teacher_log_probs),
            _require("old_log_probs", estimator, old_log_probs),
            response_mask,
            teacher_valid,
        )
        if distill_options(config, estimator).loss == "sampled_kl":
            # the released kl loss mean_t(log s - log t), teacher detached: its gradient is grad log s on
            # every sampled token, which verl's PPO loss gives with advantage -1 (ratio 1: one update a step)
            adv = -response_mask.float()
            if teacher_valid is not None:
                adv = adv * teacher_valid.float().unsqueeze(-1)
        _log(metrics, estimator, values)
        return adv, adv

    compute.__name__ = compute.__qualname__ = f"compute_{estimator}_advantage"
    compute.__doc__ = doc
    return core_algos.register_adv_est(estimator)(compute)


compute_opsd_advantage = _register_distill(
    "opsd", opsd_advantages, "OPSD: ``delta_t`` with a teacher that saw a verified reference trace. ``[B, T]`` in and out."
)
compute_sdpo_advantage = _register_distill(
    "sdpo", sdpo_advantages, "SDPO: ``delta_t`` with a teacher that saw a successful sibling; rows with none get 0."
)


@core_algos.register_adv_est("grpo_opsd")
def compute_grpo_opsd_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    teacher_log_probs: torch.Tensor | None = None,
    old_log_probs: torch.Tensor | None = None,
    global_step: int | None = None,
    metrics: dict | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO+OPSD: ``A_i + beta * delta_t``. ``[B, T]`` in and out."""
    opts = section(config, "grpo_opsd", GRPO_OPSD_DEFAULTS)
    teacher_log_probs = _require("teacher_log_probs", "grpo_opsd", teacher_log_probs)
    old_log_probs = _require("old_log_probs", "grpo_opsd", old_log_probs)
    seq_adv = grpo_sequence_advantages(token_level_rewards, response_mask, index, config, "grpo_opsd")
    beta = float(opts["beta"])
    if distill_options(config, "grpo_opsd").logit_level:
        beta = 0.0  # algorithm.distill.loss is logit-level: beta times that loss is added in the actor
    adv, values = grpo_opsd_advantages(seq_adv, teacher_log_probs, old_log_probs, response_mask, beta)
    _log(metrics, "grpo_opsd", values)
    return adv, adv
