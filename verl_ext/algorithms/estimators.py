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

import math

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


# Row blocks of about this many elements (1 MiB of float32) keep the RLSD chain in cache.
_CHUNK_ELEMENTS = 1 << 18


def _check_mask(response_mask: torch.Tensor) -> torch.Tensor:
    if response_mask.dim() != 2:
        raise ValueError(f"response_mask must be [B, T], got shape {tuple(response_mask.shape)}")
    return response_mask.to(torch.float32)


def _check_log_probs(teacher_log_probs: torch.Tensor, old_log_probs: torch.Tensor, maskf: torch.Tensor) -> None:
    check_shape("teacher_log_probs", teacher_log_probs, maskf.shape, "response_mask")
    check_shape("old_log_probs", old_log_probs, maskf.shape, "response_mask")


def _delta(
    teacher_log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    maskf: torch.Tensor,
    out: torch.Tensor | None = None,
    row_offset: int = 0,
) -> torch.Tensor:
    """``delta = teacher - old`` as float32 (into ``out`` if given), finite everywhere.

    Non-finite values at valid positions raise, naming the tensor and its rows (counted from
    ``row_offset``); at masked-out positions they are never read and are set to 0.
    """
    delta = torch.sub(teacher_log_probs.detach().float(), old_log_probs.detach().float(), out=out)
    if not torch.isfinite(delta.sum()):  # one reduction; NaN/inf anywhere shows here
        check_finite("teacher_log_probs", teacher_log_probs, maskf, row_offset=row_offset)
        check_finite("old_log_probs", old_log_probs, maskf, row_offset=row_offset)
        delta.masked_fill_(maskf == 0, 0.0)
    return delta


def _count(mask_f: torch.Tensor) -> int:
    # mask_f holds 0/1, so its dot with itself counts the ones without a temporary.
    return int(torch.dot(mask_f.reshape(-1), mask_f.reshape(-1)))


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a.reshape(-1), b.reshape(-1)))


def _mean(total: float, n: int) -> float:
    return total / n if n else 0.0


def _seq_adv(seq_advantages: torch.Tensor, maskf: torch.Tensor) -> torch.Tensor:
    check_shape("seq_advantages", seq_advantages, maskf.shape[:1], "response_mask rows")
    check_finite("seq_advantages", seq_advantages)
    return seq_advantages.detach().float().unsqueeze(-1)


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
    maskf = _check_mask(response_mask)
    adv = _seq_adv(seq_advantages, maskf)  # [B, 1]
    _check_log_probs(teacher_log_probs, old_log_probs, maskf)
    # the reweighted tokens as a 0/1 float mask; the plain case reuses the response mask
    rwf = maskf
    if reweight_mask is not None:
        check_shape("reweight_mask", reweight_mask, maskf.shape, "response_mask")
        rwf = rwf * reweight_mask.to(torch.float32)
    if negative_only:
        rwf = rwf * (adv < 0).to(torch.float32)

    token_adv = torch.empty(maskf.shape, dtype=torch.float32)
    sums = torch.zeros(5, dtype=torch.float64)  # delta, clipped w, count, high - low, high + low
    sign = torch.sign(adv)
    log_lo, log_hi = math.log(1.0 - clip_eps), math.log(1.0 + clip_eps)
    # A memory-bound chain of ~15 element-wise steps: run it on row blocks that stay in cache.
    rows = max(1, _CHUNK_ELEMENTS // max(maskf.shape[1], 1))
    scratch = torch.empty(min(rows, maskf.shape[0]) * maskf.shape[1], dtype=torch.float32)
    for r0 in range(0, maskf.shape[0], rows):
        r = slice(r0, r0 + rows)
        m, rw, out = maskf[r], rwf[r], token_adv[r]
        delta = _delta(teacher_log_probs[r], old_log_probs[r], m, out=out, row_offset=r0)
        sums[0] += delta.mul_(rw).sum()
        count = rw.sum()
        sums[2] += count
        # log w_t = sign(A_i) * delta_t, set to 0 (w = 1: never clipped, factor exactly 1)
        # outside the reweighted tokens; clip(w) = exp(clamp(log w)).
        log_w = delta.mul_(sign[r])
        log_clipped = torch.clamp(log_w, log_lo, log_hi, out=scratch[: log_w.numel()].view_as(log_w))
        side = log_w.sub_(log_clipped).sign_()  # -1 clipped low, +1 clipped high, 0 inside
        sums[3] += side.sum()
        sums[4] += side.abs_().sum()
        clipped = log_clipped.exp_()
        sums[1] += clipped.sum() - (clipped.numel() - count)  # w is exactly 1 off the reweighted tokens
        # A_i * ((1 - lam) + lam * clip(w)) == A_i + (A_i * lam) * (clip(w) - 1)
        torch.mul(clipped.sub_(1.0).mul_(adv[r] * lam).add_(adv[r]), m, out=out)
    high = int(round(float(sums[4] + sums[3]) / 2))
    low = int(round(float(sums[4] - sums[3]) / 2))
    n = int(sums[2])
    weight_mean = _mean(float(sums[1]), n)
    metrics = {
        "weight_clip_low_frac": _mean(low, n),
        "weight_clip_high_frac": _mean(high, n),
        "weight_clip_frac": _mean(low + high, n),
        "delta_mean": _mean(float(sums[0]), n),
        "weight_mean": weight_mean,
        "factor_mean": 1.0 + lam * (weight_mean - 1.0) if n else 0.0,
        "reweighted_token_frac": _mean(n, _count(maskf)),
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
    maskf = _check_mask(response_mask)
    if teacher_valid is not None:
        check_shape("teacher_valid", teacher_valid, maskf.shape[:1], "response_mask rows")
        maskf = maskf * teacher_valid.to(torch.float32).unsqueeze(-1)
    _check_log_probs(teacher_log_probs, old_log_probs, maskf)
    delta = _delta(teacher_log_probs, old_log_probs, maskf)
    delta_sum = _dot(delta, maskf)
    n = _count(maskf)
    abs_sum = _dot(delta.abs(), maskf)
    token_adv = delta.mul_(maskf)
    metrics = {
        "delta_mean": _mean(delta_sum, n),
        "delta_abs_mean": _mean(abs_sum, n),
        "teacher_valid_frac": float(teacher_valid.float().mean()) if teacher_valid is not None and len(teacher_valid) else 1.0,
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
    maskf = _check_mask(response_mask)
    adv = _seq_adv(seq_advantages, maskf)
    _check_log_probs(teacher_log_probs, old_log_probs, maskf)
    delta = _delta(teacher_log_probs, old_log_probs, maskf)
    delta_sum = _dot(delta, maskf)
    n = _count(maskf)
    token_adv = delta.mul_(beta).add_(adv).mul_(maskf)
    metrics = {"delta_mean": _mean(delta_sum, n), "beta": float(beta)}
    return token_adv, metrics
