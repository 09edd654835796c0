"""Top-k logit-level divergences between the student and the privileged teacher (pure torch).

Per response token t, with ``S`` the student's and ``T`` the teacher's next-token distribution and
``K_t`` a support of k token ids (the student's top-k at t):

    s_j = log S(j),  h_j = log T(j)       for j in K_t, each normalised with its own full-vocabulary
                                          logsumexp (so sum_j exp(s_j) <= 1)
    tail=true:  the bucket "any other token" is added as a (k+1)-th entry,
                log(1 - sum_j exp(s_j)) and log(1 - sum_j exp(h_j))
    tail=false: both are renormalised over K_t (log-softmax of the k values)

and on that (k or k+1)-point distribution pair the generalised Jensen-Shannon divergence with
mixture weight alpha:

    M     = (1 - alpha) * S + alpha * T
    JSD_a = alpha * KL(T || M) + (1 - alpha) * KL(S || M)      0 < alpha < 1
    JSD_0 = KL(T || S)   (forward KL)      JSD_1 = KL(S || T)   (reverse KL)

``JSD_a / alpha -> KL(T || S)`` as alpha -> 0 and ``JSD_a / (1 - alpha) -> KL(S || T)`` as
alpha -> 1, which is why the two end points are defined as the two KLs (the convention of TRL's
generalised JSD loss, which SDPO uses with alpha = 0.5). The teacher side carries no gradient.
"""

from __future__ import annotations

import math

import torch

# Smallest probability a tail bucket may hold: keeps log() finite when the top-k hold all the mass.
TAIL_EPS = 1e-10


def _f32(x: torch.Tensor) -> torch.Tensor:
    """At least fp32 (bf16/fp16 logits are upcast; fp64 stays fp64, e.g. in gradient checks)."""
    return x if x.dtype == torch.float64 else x.float()


def log_tail(topk_log_probs: torch.Tensor, eps: float = TAIL_EPS) -> torch.Tensor:
    """``log(1 - sum_j exp(lp_j))`` over the last dim, stable for mass near 0 and near 1."""
    mass_log = torch.logsumexp(topk_log_probs, dim=-1)
    # log1p(-exp(x)) with x <= 0; clamp keeps it finite when the top-k already hold ~all the mass.
    return torch.log(torch.clamp(-torch.expm1(torch.clamp(mass_log, max=0.0)), min=eps))


def with_tail(topk_log_probs: torch.Tensor, tail: bool) -> torch.Tensor:
    """The k top-k log-probs plus the tail bucket (``tail``), or renormalised over the k ids."""
    if tail:
        return torch.cat([topk_log_probs, log_tail(topk_log_probs).unsqueeze(-1)], dim=-1)
    return torch.log_softmax(topk_log_probs, dim=-1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``sum_j p_j (log p_j - log q_j)`` over the last dim (p_j = 0 terms are 0)."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(dim=-1)


def generalized_jsd(student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """``JSD_alpha`` of two distributions given as log-probs ``[..., n]`` (see the module doc); ``[...]``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    s, h = _f32(student_log_probs), _f32(teacher_log_probs).detach()
    if alpha == 0.0:
        return _kl(h, s)
    if alpha == 1.0:
        return _kl(s, h)
    log_m = torch.logsumexp(torch.stack([s + math.log(1.0 - alpha), h + math.log(alpha)]), dim=0)
    return alpha * _kl(h, log_m) + (1.0 - alpha) * _kl(s, log_m)


def topk_divergence(
    student_topk_log_probs: torch.Tensor,
    teacher_topk_log_probs: torch.Tensor,
    alpha: float = 0.5,
    tail: bool = True,
) -> torch.Tensor:
    """Per-token ``JSD_alpha`` on the top-k support (+ tail): ``[..., k]`` x 2 -> ``[...]``.

    Both inputs are full-vocabulary-normalised log-probs of the same k ids (the student's carries the
    gradient). ``alpha = 0`` is the forward KL ``KL(T || S)``, ``alpha = 1`` the reverse KL.
    """
    if student_topk_log_probs.shape != teacher_topk_log_probs.shape:
        raise ValueError(
            f"shape mismatch: student top-k log-probs {tuple(student_topk_log_probs.shape)} vs teacher "
            f"{tuple(teacher_topk_log_probs.shape)}"
        )
    s = with_tail(_f32(student_topk_log_probs), tail)
    h = with_tail(_f32(teacher_topk_log_probs).detach(), tail)
    return generalized_jsd(s, h, alpha)


class _GatherLogProbs(torch.autograd.Function):
    """``log_softmax(logits[rows])[ids]`` without saving any ``[n, V]`` fp32 block for backward.

    Forward keeps only the per-row logsumexp; backward recomputes ``softmax`` chunk by chunk:
    ``d/dx_v (x_j - lse) = [v = j] - p_v``.
    """

    @staticmethod
    def forward(ctx, logits, rows, ids, chunk_rows):
        lse = torch.empty(rows.numel(), dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32,
                          device=logits.device)
        out = torch.empty(ids.shape, dtype=lse.dtype, device=logits.device)
        for s in range(0, rows.numel(), chunk_rows):
            block = _f32(logits.index_select(0, rows[s : s + chunk_rows]))
            lse[s : s + chunk_rows] = torch.logsumexp(block, dim=-1)
            out[s : s + chunk_rows] = block.gather(-1, ids[s : s + chunk_rows]) - lse[s : s + chunk_rows, None]
        ctx.save_for_backward(logits, rows, ids, lse)
        ctx.chunk_rows = chunk_rows
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, rows, ids, lse = ctx.saved_tensors
        grad = torch.zeros_like(logits)
        for s in range(0, rows.numel(), ctx.chunk_rows):
            r = rows[s : s + ctx.chunk_rows]
            g_out = grad_out[s : s + ctx.chunk_rows].to(lse.dtype)
            g = -torch.exp(_f32(logits.index_select(0, r)) - lse[s : s + ctx.chunk_rows, None]) * g_out.sum(-1, keepdim=True)
            g.scatter_add_(-1, ids[s : s + ctx.chunk_rows], g_out)
            grad.index_add_(0, r, g.to(grad.dtype))
        return grad, None, None, None


def gather_log_probs(
    logits: torch.Tensor, ids: torch.Tensor, chunk_rows: int = 1024, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """``log_softmax(logits[rows])[ids]`` ``[N, V] x [n, k] -> [n, k]`` (at least fp32); ``rows``
    defaults to all N rows.

    One ``[chunk_rows, V]`` fp32 block exists at a time, in forward and in backward (which recomputes
    the softmax from the saved logsumexp); gradients flow to ``logits``.
    """
    if rows is None:
        rows = torch.arange(logits.shape[0], device=logits.device)
    if logits.dim() != 2 or ids.dim() != 2 or rows.numel() != ids.shape[0]:
        raise ValueError(
            f"expected logits [N, V], ids [n, k] and n rows, got {tuple(logits.shape)}, {tuple(ids.shape)}, {rows.numel()}"
        )
    return _GatherLogProbs.apply(logits, rows.to(logits.device), ids.to(logits.device), int(chunk_rows))


@torch.no_grad()
def topk_ids(logits: torch.Tensor, k: int, chunk_rows: int = 1024, rows: torch.Tensor | None = None) -> torch.Tensor:
    """The ``k`` most likely token ids of each of ``logits[rows]`` (top-k of logits = of log-softmax),
    ``chunk_rows`` rows at a time (no copy of all selected rows)."""
    if k > logits.shape[-1]:
        raise ValueError(f"topk={k} exceeds the vocabulary size {logits.shape[-1]}")
    if rows is None:
        rows = torch.arange(logits.shape[0], device=logits.device)
    out = [logits.index_select(0, rows[s : s + chunk_rows]).topk(k, dim=-1).indices for s in range(0, rows.numel(), chunk_rows)]
    if not out:
        return torch.zeros((0, k), dtype=torch.long, device=logits.device)
    return torch.cat(out, dim=0)


def top_mass(topk_log_probs: torch.Tensor) -> torch.Tensor:
    """Probability mass the k ids hold, ``sum_j exp(lp_j)`` ``[..., k] -> [...]``."""
    return _f32(topk_log_probs).exp().sum(dim=-1)


__all__ = ["gather_log_probs", "generalized_jsd", "log_tail", "top_mass", "topk_divergence", "topk_ids", "with_tail"]
