"""The per-token advantages of RLSD and of the self-distillation baselines, as pure torch functions.

Notation (one row = one sampled response, ``B`` rows, ``T`` response positions):

- ``A_i``: the sequence advantage of row ``i`` from the verifiable reward (GRPO's group-normalised
  reward), shape ``[B]``.
- ``delta_t = log pi_T(y_t | x~, y_<t) - log pi_S(y_t | x, y_<t)``: teacher minus student
  log-probability of the *sampled* token, shape ``[B, T]``, never differentiated.
- ``response_mask``: ``[B, T]``, true on real response tokens; every masked-out position of every
  output is exactly 0.

With a sampled-token reverse-KL distillation loss, the advantage of on-policy (self-)distillation
is ``delta_t`` itself, so every method is an advantage for the same PPO loss.
"""

from __future__ import annotations

import torch

from verl_ext.algorithms.checks import check_finite, check_shape


def rlsd_lambda(step: int, init: float = 0.5, decay_steps: int = 50, warmup_steps: int = 0) -> float:
    """RLSD's mixing weight ``lambda`` at training step ``step`` (0-based).

    - warm-up (``step < warmup_steps``): ``init * step / warmup_steps``, a linear ramp from 0;
    - then a linear decay over ``decay_steps``: ``init * (1 - (step - warmup_steps) / decay_steps)``,
      clamped at 0 afterwards (RLSD is then exactly GRPO);
    - ``decay_steps == 0``: no decay, ``lambda`` stays at ``init``.

    ``init`` must lie in [0, 1] so that the RLSD factor stays positive; negative arguments raise.
    """
    for name, value in (("step", step), ("decay_steps", decay_steps), ("warmup_steps", warmup_steps)):
        if value < 0:
            raise ValueError(f"rlsd_lambda: {name} must be >= 0, got {value}")
    if not 0.0 <= init <= 1.0:
        raise ValueError(f"rlsd_lambda: init must lie in [0, 1] (the factor must stay > 0), got {init}")
    if step < warmup_steps:
        return float(init * step / warmup_steps)
    if decay_steps == 0:
        return float(init)
    return float(max(0.0, init * (1.0 - (step - warmup_steps) / decay_steps)))


def _check_token_inputs(response_mask: torch.Tensor, **token_tensors: torch.Tensor) -> torch.Tensor:
    if response_mask.dim() != 2:
        raise ValueError(f"response_mask must be [B, T], got shape {tuple(response_mask.shape)}")
    mask = response_mask.bool()
    for name, tensor in token_tensors.items():
        check_shape(name, tensor, mask.shape, "response_mask")
        check_finite(name, tensor, mask)
    return mask


def _delta(teacher_log_probs: torch.Tensor, old_log_probs: torch.Tensor) -> torch.Tensor:
    return (teacher_log_probs.detach() - old_log_probs.detach()).float()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    n = int(mask.sum())
    return float(values[mask].float().mean()) if n else 0.0


def rlsd_advantages(
    seq_advantages: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    lam: float,
    clip_eps: float = 0.2,
    negative_only: bool = False,
    reweight_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """RLSD: the reward picks the direction, the privileged teacher redistributes the magnitude.

    ``w_t = exp(sign(A_i) * delta_t)`` and
    ``A_hat_t = A_i * ((1 - lambda) + lambda * clip(w_t, 1 - clip_eps, 1 + clip_eps))``.

    Args:
        seq_advantages: ``[B]`` sequence advantages ``A_i``.
        teacher_log_probs: ``[B, T]`` teacher log-prob of each sampled token.
        old_log_probs: ``[B, T]`` student (rollout-time policy) log-prob of each sampled token.
        response_mask: ``[B, T]`` valid response tokens.
        lam: mixing weight in [0, 1] (see :func:`rlsd_lambda`); 0 gives GRPO exactly.
        clip_eps: clip range of ``w_t`` around 1, in [0, 1).
        negative_only: reweight only rows with ``A_i < 0``; the others keep ``A_i``.
        reweight_mask: optional ``[B, T]`` bool, the tokens that may be reweighted (e.g. the
            thought span); other valid tokens keep ``A_i``.

    Returns:
        ``token_advantages`` ``[B, T]`` (0 on masked-out positions) and float metrics over the
        reweighted valid tokens: ``weight_clip_low_frac``, ``weight_clip_high_frac``,
        ``weight_clip_frac``, ``delta_mean``, ``weight_mean`` (clipped ``w``), ``factor_mean``,
        ``reweighted_token_frac`` and ``lambda``.

    Since ``lambda`` is in [0, 1] and the clipped weight is > 0, the factor is > 0: the sign of
    every token advantage is the sign of ``A_i``.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"rlsd_advantages: lam must lie in [0, 1], got {lam}")
    if not 0.0 <= clip_eps < 1.0:
        raise ValueError(f"rlsd_advantages: clip_eps must lie in [0, 1), got {clip_eps}")
    mask = _check_token_inputs(response_mask, teacher_log_probs=teacher_log_probs, old_log_probs=old_log_probs)
    check_shape("seq_advantages", seq_advantages, mask.shape[:1], "response_mask rows")
    check_finite("seq_advantages", seq_advantages)

    adv = seq_advantages.detach().float().unsqueeze(-1)  # [B, 1]
    reweight = mask
    if reweight_mask is not None:
        check_shape("reweight_mask", reweight_mask, mask.shape, "response_mask")
        reweight = reweight & reweight_mask.bool()
    if negative_only:
        reweight = reweight & (adv < 0)

    delta = _delta(teacher_log_probs, old_log_probs)
    weight = torch.exp(torch.sign(adv) * delta)
    clipped = weight.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    factor = clipped.mul(lam).add_(1.0 - lam)
    token_adv = torch.where(reweight, adv * factor, adv.expand_as(factor))
    token_adv = token_adv.masked_fill_(~mask, 0.0)

    n = int(reweight.sum())
    low = int((reweight & (weight < 1.0 - clip_eps)).sum())
    high = int((reweight & (weight > 1.0 + clip_eps)).sum())
    metrics = {
        "weight_clip_low_frac": low / n if n else 0.0,
        "weight_clip_high_frac": high / n if n else 0.0,
        "weight_clip_frac": (low + high) / n if n else 0.0,
        "delta_mean": _masked_mean(delta, reweight),
        "weight_mean": _masked_mean(clipped, reweight),
        "factor_mean": _masked_mean(factor, reweight),
        "reweighted_token_frac": n / max(int(mask.sum()), 1),
        "lambda": float(lam),
    }
    return token_adv, metrics


def opsd_advantages(
    teacher_log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    teacher_valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """On-policy self-distillation (OPSD), sampled-token form: ``A_hat_t = delta_t``.

    Args:
        teacher_log_probs, old_log_probs, response_mask: ``[B, T]`` as in :func:`rlsd_advantages`.
        teacher_valid: optional ``[B]`` bool; rows without a teacher signal (e.g. SDPO with no
            successful sibling) get advantage 0 and their teacher log-probs are not read.

    Returns ``[B, T]`` token advantages (0 where masked or invalid) and metrics ``delta_mean``,
    ``delta_abs_mean``, ``teacher_valid_frac``.
    """
    mask = response_mask.bool()
    if teacher_valid is not None:
        check_shape("teacher_valid", teacher_valid, mask.shape[:1], "response_mask rows")
        mask = mask & teacher_valid.bool().unsqueeze(-1)
    _check_token_inputs(mask, teacher_log_probs=teacher_log_probs, old_log_probs=old_log_probs)
    delta = _delta(teacher_log_probs, old_log_probs)
    token_adv = delta.masked_fill(~mask, 0.0)
    rows = mask.shape[0]
    metrics = {
        "delta_mean": _masked_mean(delta, mask),
        "delta_abs_mean": _masked_mean(delta.abs(), mask),
        "teacher_valid_frac": float(teacher_valid.float().mean()) if teacher_valid is not None and rows else 1.0,
    }
    return token_adv, metrics


def sdpo_advantages(
    teacher_log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    teacher_valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """SDPO, sampled-token form: ``A_hat_t = delta_t`` from a teacher that saw a successful sibling.

    Same shapes as :func:`opsd_advantages`; rows whose group has no successful sibling
    (``teacher_valid`` false) get no distillation signal: advantage 0.
    """
    return opsd_advantages(teacher_log_probs, old_log_probs, response_mask, teacher_valid)


def grpo_opsd_advantages(
    seq_advantages: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO plus OPSD: ``A_hat_t = A_i + beta * delta_t``.

    Shapes as in :func:`rlsd_advantages`; ``beta >= 0`` scales the distillation term.
    Returns ``[B, T]`` token advantages (0 where masked) and metrics ``delta_mean``, ``beta``.
    """
    if beta < 0:
        raise ValueError(f"grpo_opsd_advantages: beta must be >= 0, got {beta}")
    mask = _check_token_inputs(response_mask, teacher_log_probs=teacher_log_probs, old_log_probs=old_log_probs)
    check_shape("seq_advantages", seq_advantages, mask.shape[:1], "response_mask rows")
    check_finite("seq_advantages", seq_advantages)
    delta = _delta(teacher_log_probs, old_log_probs)
    token_adv = (seq_advantages.detach().float().unsqueeze(-1) + beta * delta).masked_fill_(~mask, 0.0)
    return token_adv, {"delta_mean": _masked_mean(delta, mask), "beta": float(beta)}
