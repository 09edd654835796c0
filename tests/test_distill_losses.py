"""The top-k divergences against values worked out by hand (plain python math, not the module)."""

from __future__ import annotations

import math

import pytest
import torch

from verl_ext.distill.losses import gather_log_probs, generalized_jsd, topk_divergence, topk_ids


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def jsd(s, t, a):
    m = [(1 - a) * si + a * ti for si, ti in zip(s, t)]
    return a * kl(t, m) + (1 - a) * kl(s, m)


def lp(values):
    return torch.tensor([math.log(v) for v in values], dtype=torch.float64)


# Student / teacher probabilities of the same 3 ids (full-vocabulary-normalised, so they sum to < 1).
S3 = [0.5, 0.2, 0.1]
T3 = [0.3, 0.4, 0.05]


def test_forward_kl_k2_with_tail_by_hand():
    # k = 2 ids: S = (0.6, 0.3) + tail 0.1; T = (0.2, 0.5) + tail 0.3.
    # KL(T || S) = 0.2 ln(0.2/0.6) + 0.5 ln(0.5/0.3) + 0.3 ln(0.3/0.1)
    expected = 0.2 * math.log(1 / 3) + 0.5 * math.log(5 / 3) + 0.3 * math.log(3)
    got = topk_divergence(lp([0.6, 0.3]), lp([0.2, 0.5]), alpha=0.0, tail=True)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.3653, abs=1e-4)  # -0.2197 + 0.2554 + 0.3296


def test_forward_kl_k2_without_tail_renormalises():
    # Renormalised: S = (2/3, 1/3), T = (2/7, 5/7); KL(T || S) = 2/7 ln(3/7) + 5/7 ln(15/7)
    expected = 2 / 7 * math.log(3 / 7) + 5 / 7 * math.log(15 / 7)
    got = topk_divergence(lp([0.6, 0.3]), lp([0.2, 0.5]), alpha=0.0, tail=False)
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("tail", [True, False])
def test_jsd_half_k3_by_hand(tail):
    if tail:
        s, t = S3 + [1 - sum(S3)], T3 + [1 - sum(T3)]
    else:
        s, t = [x / sum(S3) for x in S3], [x / sum(T3) for x in T3]
    expected = jsd(s, t, 0.5)
    # the symmetric JSD is also 0.5 KL(S||M) + 0.5 KL(T||M) with M the plain average
    m = [(a + b) / 2 for a, b in zip(s, t)]
    assert expected == pytest.approx(0.5 * kl(s, m) + 0.5 * kl(t, m))
    got = topk_divergence(lp(S3), lp(T3), alpha=0.5, tail=tail)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # symmetric in S and T at alpha = 0.5
    assert topk_divergence(lp(T3), lp(S3), alpha=0.5, tail=tail).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("tail", [True, False])
def test_alpha_limits_are_forward_and_reverse_kl(tail):
    s = S3 + [1 - sum(S3)] if tail else [x / sum(S3) for x in S3]
    t = T3 + [1 - sum(T3)] if tail else [x / sum(T3) for x in T3]
    fwd, rev = kl(t, s), kl(s, t)
    assert fwd != pytest.approx(rev, rel=1e-2)  # the two limits are distinguishable
    assert topk_divergence(lp(S3), lp(T3), alpha=0.0, tail=tail).item() == pytest.approx(fwd, rel=1e-6)
    assert topk_divergence(lp(S3), lp(T3), alpha=1.0, tail=tail).item() == pytest.approx(rev, rel=1e-6)
    eps = 1e-6
    near0 = topk_divergence(lp(S3), lp(T3), alpha=eps, tail=tail).item() / eps
    near1 = topk_divergence(lp(S3), lp(T3), alpha=1 - eps, tail=tail).item() / eps
    assert near0 == pytest.approx(fwd, rel=1e-4)
    assert near1 == pytest.approx(rev, rel=1e-4)


def test_zero_when_equal_and_batched_shape():
    a = torch.log_softmax(torch.randn(2, 5, 7, dtype=torch.float64), -1)[..., :3]
    out = topk_divergence(a, a.clone(), alpha=0.5)
    assert out.shape == (2, 5)
    assert torch.allclose(out, torch.zeros_like(out), atol=1e-7)


def test_bad_alpha_and_shapes():
    with pytest.raises(ValueError, match="alpha"):
        generalized_jsd(lp([0.5, 0.5]), lp([0.5, 0.5]), alpha=1.5)
    with pytest.raises(ValueError, match="shape mismatch"):
        topk_divergence(lp([0.5, 0.2]), lp([0.5, 0.2, 0.1]))


def test_gradient_matches_full_vocabulary_formula_on_the_same_support():
    """d loss / d student logits vs autograd of a direct full-vocab formula restricted to the support."""
    torch.manual_seed(0)
    n, vocab, k, alpha = 4, 11, 3, 0.3
    student_logits = torch.randn(n, vocab, dtype=torch.float64, requires_grad=True)
    teacher_logits = torch.randn(n, vocab, dtype=torch.float64)
    ids = topk_ids(student_logits.detach(), k)
    assert torch.equal(ids, student_logits.detach().argsort(-1, descending=True)[:, :k])

    for tail in (True, False):
        s_top = gather_log_probs(student_logits, ids, chunk_rows=3)  # chunk smaller than n on purpose
        t_top = gather_log_probs(teacher_logits, ids)
        ours = topk_divergence(s_top, t_top, alpha=alpha, tail=tail).sum()
        (g_ours,) = torch.autograd.grad(ours, student_logits)

        # Direct formula: full softmax over V, partition {ids} + rest, JSD on the partition.
        x = student_logits.detach().clone().requires_grad_(True)
        p_s, p_t = torch.softmax(x, -1), torch.softmax(teacher_logits, -1)
        total = 0.0
        for r in range(n):
            sel = torch.zeros(vocab, dtype=torch.bool)
            sel[ids[r]] = True
            s_parts, t_parts = [p_s[r, sel]], [p_t[r, sel]]
            if tail:
                s_parts.append(p_s[r, ~sel].sum().reshape(1))
                t_parts.append(p_t[r, ~sel].sum().reshape(1))
            s_dist, t_dist = torch.cat(s_parts), torch.cat(t_parts)
            if not tail:
                s_dist, t_dist = s_dist / s_dist.sum(), t_dist / t_dist.sum()
            m = (1 - alpha) * s_dist + alpha * t_dist
            total = total + alpha * (t_dist * (t_dist / m).log()).sum() + (1 - alpha) * (s_dist * (s_dist / m).log()).sum()
        (g_ref,) = torch.autograd.grad(total, x)
        assert ours.item() == pytest.approx(total.item(), rel=1e-9)
        assert torch.allclose(g_ours, g_ref, atol=1e-10), (tail, (g_ours - g_ref).abs().max())
        # the gradient reaches tokens outside the top-k only through the tail bucket
        outside = torch.ones(n, vocab, dtype=torch.bool).scatter(1, ids, False)
        assert (g_ours[outside].abs().max() > 1e-12) == tail


def test_gather_log_probs_matches_log_softmax():
    logits = torch.randn(5, 9)
    ids = torch.randint(0, 9, (5, 4))
    ref = torch.log_softmax(logits, -1).gather(-1, ids)
    assert torch.allclose(gather_log_probs(logits, ids, chunk_rows=2), ref, atol=1e-6)


def test_gather_log_probs_rows_gradient_matches_autograd_of_log_softmax():
    torch.manual_seed(1)
    logits = torch.randn(7, 13, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([1, 2, 5, 6])
    ids = torch.randint(0, 13, (4, 3))
    weights = torch.randn(4, 3, dtype=torch.float64)
    (g,) = torch.autograd.grad((gather_log_probs(logits, ids, chunk_rows=3, rows=rows) * weights).sum(), logits)
    (g_ref,) = torch.autograd.grad((torch.log_softmax(logits[rows], -1).gather(-1, ids) * weights).sum(), logits)
    assert torch.allclose(g, g_ref, atol=1e-12)
    assert g[[0, 3, 4]].abs().max() == 0  # rows outside the selection get no gradient
    assert torch.autograd.gradcheck(lambda x: gather_log_probs(x, ids, 2, rows), (logits,))
