"""Estimators against numbers worked out by hand from method.md's formulas.

The worked example: one group of three responses with rewards (1, 0, 0) and one group of two with
rewards (1, 1). verl's GRPO uses the unbiased std: group 1 has mean 1/3 and std sqrt(1/3), so
A = (2/3, -1/3, -1/3) / (sqrt(1/3) + 1e-6); group 2 has zero variance, so A = 0.
"""

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, get_adv_estimator_fn

from verl_ext.algorithms import (
    grpo_opsd_advantages,
    opsd_advantages,
    rlsd_advantages,
    rlsd_lambda,
    sdpo_advantages,
)

STD1 = math.sqrt(1.0 / 3.0) + 1e-6
A = [(2 / 3) / STD1, (-1 / 3) / STD1, (-1 / 3) / STD1, 0.0, 0.0]
MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 0, 0]])
DELTA = torch.tensor(
    [
        [0.1, -0.5, 0.3],
        [0.1, -0.1, 0.0],
        [-0.3, 0.5, 0.2],
        [0.4, -0.4, 0.0],
        [0.2, 0.0, 0.0],
    ]
)
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0], [-1.5, -0.2, -0.9], [-0.4, -0.6, -0.1], [-2.0, 0.0, 0.0]])
TEACHER = OLD + DELTA
INDEX = np.array(["g1", "g1", "g1", "g2", "g2"], dtype=object)
REWARDS = [1.0, 0.0, 0.0, 1.0, 1.0]


def token_rewards():
    """Outcome reward on each row's last valid token, as verl's reward manager writes it."""
    out = torch.zeros(MASK.shape)
    for i, r in enumerate(REWARDS):
        out[i, int(MASK[i].sum()) - 1] = r
    return out


def rlsd_expected(lam, eps=0.2, rows_reweighted=(0, 1, 2, 3, 4), token_filter=None):
    """Element-wise RLSD written with math.exp, independent of the torch code."""
    out = []
    for i in range(5):
        row = []
        for t in range(3):
            if not MASK[i, t]:
                row.append(0.0)
                continue
            a = A[i]
            if i in rows_reweighted and (token_filter is None or token_filter[i][t]):
                sign = (a > 0) - (a < 0)
                w = math.exp(sign * float(DELTA[i, t]))
                w = min(max(w, 1 - eps), 1 + eps)
                row.append(a * ((1 - lam) + lam * w))
            else:
                row.append(a)
        out.append(row)
    return torch.tensor(out)


# ---------------------------------------------------------------- lambda schedule


@pytest.mark.parametrize(
    "step, kwargs, expected",
    [
        (0, {}, 0.5),
        (25, {}, 0.25),
        (49, {}, 0.01),
        (50, {}, 0.0),
        (80, {}, 0.0),
        (1000, {"decay_steps": 0}, 0.5),
        (0, {"warmup_steps": 10}, 0.0),
        (5, {"warmup_steps": 10}, 0.25),
        (10, {"warmup_steps": 10}, 0.5),
        (35, {"warmup_steps": 10}, 0.25),
        (60, {"warmup_steps": 10}, 0.0),
        (30, {"init": 0.8, "decay_steps": 60}, 0.4),
    ],
)
def test_lambda_schedule(step, kwargs, expected):
    assert rlsd_lambda(step, **kwargs) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("kwargs", [{"step": -1}, {"step": 0, "decay_steps": -5}, {"step": 0, "warmup_steps": -1}, {"step": 0, "init": 1.5}, {"step": 0, "init": -0.1}])
def test_lambda_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        rlsd_lambda(**kwargs)


def test_lambda_never_negative():
    assert all(rlsd_lambda(s, init=0.5, decay_steps=7, warmup_steps=3) >= 0 for s in range(200))


# ---------------------------------------------------------------- RLSD, pure function


def test_rlsd_hand_computed():
    adv, metrics = rlsd_advantages(torch.tensor(A), TEACHER, OLD, MASK, lam=0.5, clip_eps=0.2)
    torch.testing.assert_close(adv, rlsd_expected(0.5), rtol=1e-5, atol=1e-6)
    # a few entries spelled out: row 0 token 2 is clipped high (exp(0.3) > 1.2): factor 0.5 + 0.5 * 1.2
    assert adv[0, 2].item() == pytest.approx(A[0] * 1.1, rel=1e-6)
    # row 2 (A < 0) token 1: w = exp(-0.5) < 0.8, clipped low: factor 0.9
    assert adv[2, 1].item() == pytest.approx(A[2] * 0.9, rel=1e-6)
    # 12 valid tokens (3 + 2 + 3 + 3 + 1); clipped low: (0,1) and (2,1); clipped high: (0,2) and (2,0)
    assert metrics["weight_clip_low_frac"] == pytest.approx(2 / 12)
    assert metrics["weight_clip_high_frac"] == pytest.approx(2 / 12)
    assert metrics["weight_clip_frac"] == pytest.approx(4 / 12)
    valid = MASK.bool()
    assert metrics["delta_mean"] == pytest.approx(float(DELTA[valid].mean()), rel=1e-6)
    assert metrics["lambda"] == 0.5


def test_rlsd_lambda_zero_is_grpo_exactly():
    grpo, _ = compute_grpo_outcome_advantage(token_rewards(), MASK, INDEX)
    seq = grpo[torch.arange(5), 0]
    adv, _ = rlsd_advantages(seq, TEACHER, OLD, MASK, lam=0.0)
    assert torch.equal(adv, grpo)


def test_rlsd_negative_only():
    adv, metrics = rlsd_advantages(torch.tensor(A), TEACHER, OLD, MASK, lam=0.5, negative_only=True)
    torch.testing.assert_close(adv, rlsd_expected(0.5, rows_reweighted=(1, 2)), rtol=1e-5, atol=1e-6)
    assert torch.all(adv[0] == float(torch.tensor(A[0])))  # the positive row keeps A_i
    assert metrics["reweighted_token_frac"] == pytest.approx(5 / 12)


def test_rlsd_thought_only_mask():
    keep = [[1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1], [1, 0, 0]]
    adv, _ = rlsd_advantages(torch.tensor(A), TEACHER, OLD, MASK, lam=0.5, reweight_mask=torch.tensor(keep).bool())
    torch.testing.assert_close(adv, rlsd_expected(0.5, token_filter=keep), rtol=1e-5, atol=1e-6)
    assert adv[0, 2].item() == pytest.approx(A[0], rel=1e-6)  # answer token keeps A_i


def test_rlsd_padding_and_zero_variance_are_exactly_zero():
    adv, _ = rlsd_advantages(torch.tensor(A), TEACHER, OLD, MASK, lam=0.5)
    assert torch.all(adv[~MASK.bool()] == 0)
    assert torch.all(adv[3:] == 0)


@pytest.mark.parametrize("seed", range(5))
def test_rlsd_never_flips_the_sign(seed):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randn(64, generator=g)
    old = -torch.rand(64, 40, generator=g) * 5
    teacher = old + torch.randn(64, 40, generator=g) * 50  # far outside the clip range
    mask = torch.rand(64, 40, generator=g) > 0.2
    adv, _ = rlsd_advantages(seq, teacher, old, mask, lam=1.0, clip_eps=0.5)
    expected_sign = torch.sign(seq).unsqueeze(-1).expand_as(adv)[mask]
    assert torch.equal(torch.sign(adv[mask]), expected_sign)
    # the factor lam * clip(w) + (1 - lam) lies in [1 - eps, 1 + eps]
    ratio = adv[mask] / seq.unsqueeze(-1).expand_as(adv)[mask]
    assert ratio.min() >= 0.5 - 1e-6 and ratio.max() <= 1.5 + 1e-6


def test_rlsd_bad_inputs():
    with pytest.raises(ValueError, match=r"\(5, 2\).*\(5, 3\)"):
        rlsd_advantages(torch.tensor(A), TEACHER[:, :2], OLD, MASK, lam=0.5)
    bad = TEACHER.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="teacher_log_probs.*row index\\(es\\) 2"):
        rlsd_advantages(torch.tensor(A), bad, OLD, MASK, lam=0.5)
    bad = OLD.clone()
    bad[1, 2] = float("-inf")  # a padded position: never read, so accepted
    rlsd_advantages(torch.tensor(A), TEACHER, bad, MASK, lam=0.5)
    with pytest.raises(ValueError, match="lam"):
        rlsd_advantages(torch.tensor(A), TEACHER, OLD, MASK, lam=1.5)


# ---------------------------------------------------------------- baselines, pure functions


def test_opsd_is_delta_on_valid_tokens():
    adv, metrics = opsd_advantages(TEACHER, OLD, MASK)
    expected = torch.tensor([[0.1, -0.5, 0.3], [0.1, -0.1, 0.0], [-0.3, 0.5, 0.2], [0.4, -0.4, 0.0], [0.2, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)
    assert metrics["delta_abs_mean"] == pytest.approx((0.9 + 0.2 + 1.0 + 0.8 + 0.2) / 12, rel=1e-5)


def test_sdpo_rows_without_sibling_get_zero_even_with_nan_teacher():
    teacher = TEACHER.clone()
    teacher[1] = float("nan")  # no teacher was run for this row
    valid = torch.tensor([True, False, True, True, True])
    adv, metrics = sdpo_advantages(teacher, OLD, MASK, teacher_valid=valid)
    assert torch.all(adv[1] == 0)
    torch.testing.assert_close(adv[0], torch.tensor([0.1, -0.5, 0.3]), rtol=0, atol=1e-6)
    assert metrics["teacher_valid_frac"] == pytest.approx(0.8)


def test_grpo_opsd_hand_computed():
    adv, _ = grpo_opsd_advantages(torch.tensor(A), TEACHER, OLD, MASK, beta=0.5)
    assert adv[0, 1].item() == pytest.approx(A[0] - 0.25, rel=1e-5)
    assert adv[2, 0].item() == pytest.approx(A[2] - 0.15, rel=1e-5)
    assert adv[3, 0].item() == pytest.approx(0.2, rel=1e-5)  # zero-variance group: only the distillation term
    assert adv[1, 2].item() == 0.0 and adv[4, 1].item() == 0.0


# ---------------------------------------------------------------- registered wrappers


def call(name, config=None, **overrides):
    kwargs = dict(
        token_level_rewards=token_rewards(),
        response_mask=MASK,
        index=INDEX,
        config=OmegaConf.create(config or {}),
        teacher_log_probs=TEACHER,
        old_log_probs=OLD,
        global_step=1,
        metrics={},
    )
    kwargs.update(overrides)
    adv, returns = get_adv_estimator_fn(name)(**kwargs)
    assert torch.equal(adv, returns)
    return adv, kwargs["metrics"]


def test_registered_rlsd_uses_verl_grpo_and_the_schedule():
    # verl's step 26 is the 25th update after the first: lambda = 0.5 * (1 - 25/50)
    adv, metrics = call("rlsd", {"rlsd": {"decay_steps": 50}}, global_step=26)
    assert metrics["rlsd/lambda"] == pytest.approx(0.25)
    torch.testing.assert_close(adv, rlsd_expected(0.25), rtol=1e-5, atol=1e-6)
    adv, metrics = call("rlsd", {"rlsd": {"lambda_init": 0.5, "decay_steps": 50}}, global_step=51)
    grpo, _ = compute_grpo_outcome_advantage(token_rewards(), MASK, INDEX)
    assert metrics["rlsd/lambda"] == 0.0 and torch.equal(adv, grpo)


def test_registered_rlsd_options():
    _, metrics = call("rlsd", {"rlsd": {"negative_only": True, "clip_eps": 0.1}})
    assert metrics["rlsd/reweighted_token_frac"] == pytest.approx(5 / 12)
    with pytest.raises(ValueError, match="reweight_mask"):
        call("rlsd", {"rlsd": {"thought_only": True}})
    keep = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1], [1, 0, 0]]).bool()
    adv, _ = call("rlsd", {"rlsd": {"thought_only": True}}, reweight_mask=keep)
    torch.testing.assert_close(adv, rlsd_expected(0.5, token_filter=keep.tolist()), rtol=1e-5, atol=1e-6)


def test_registered_grpo_opsd_and_opsd():
    adv, metrics = call("grpo_opsd", {"grpo_opsd": {"beta": 0.5}})
    assert adv[0, 1].item() == pytest.approx(A[0] - 0.25, rel=1e-5)
    assert metrics["grpo_opsd/beta"] == 0.5
    adv, _ = call("opsd")
    torch.testing.assert_close(adv, (DELTA * MASK), rtol=0, atol=1e-6)
    adv, _ = call("sdpo", teacher_valid=torch.tensor([True, True, False, True, True]))
    assert torch.all(adv[2] == 0)


@pytest.mark.parametrize("name", ["rlsd", "opsd", "sdpo", "grpo_opsd"])
def test_missing_teacher_names_the_trainer_setting(name):
    with pytest.raises(ValueError, match="trainer.v1.trainer_mode=self_distill"):
        call(name, teacher_log_probs=None)


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ValueError, match="lambda_inti.*valid options: clip_eps, decay_steps, lambda_init"):
        call("rlsd", {"rlsd": {"lambda_inti": 0.3}})
    with pytest.raises(ValueError, match="algorithm.opsd.beta"):
        call("opsd", {"opsd": {"beta": 1.0}})


def test_nan_reward_names_the_row():
    rewards = token_rewards()
    rewards[3, 2] = float("nan")
    with pytest.raises(ValueError, match="token_level_rewards.*row index\\(es\\) 3"):
        call("rlsd", token_level_rewards=rewards)
    with pytest.raises(ValueError, match=r"index has length 4.*\(5, 3\)"):
        call("rlsd", index=INDEX[:4])


# ---------------------------------------------------------------- large batches (processed in row blocks)


def test_rlsd_many_blocks_match_the_formula():
    """4096-token rows are processed 64 rows at a time; compare with the formula written plainly."""
    g = torch.Generator().manual_seed(7)
    rows, tokens = 300, 4096
    seq = torch.randn(rows, generator=g)
    old = -torch.rand(rows, tokens, generator=g) * 4
    teacher = old + torch.randn(rows, tokens, generator=g) * 0.4
    mask = (torch.arange(tokens) < torch.randint(1, tokens, (rows, 1), generator=g)).long()
    thought = torch.rand(rows, tokens, generator=g) > 0.3
    lam, eps = 0.35, 0.2
    for negative_only, reweight in ((False, None), (True, thought)):
        adv, metrics = rlsd_advantages(seq, teacher, old, mask, lam, eps, negative_only, reweight)
        a = seq.double().unsqueeze(-1)
        w = torch.exp(torch.sign(a) * (teacher - old).double())
        full = a * ((1 - lam) + lam * w.clamp(1 - eps, 1 + eps))
        sel = mask.bool()
        if reweight is not None:
            sel = sel & reweight
        if negative_only:
            sel = sel & (a < 0)
        expected = torch.where(sel, full, a.expand_as(full)) * mask
        torch.testing.assert_close(adv.double(), expected, rtol=1e-5, atol=1e-6)
        n = int(sel.sum())
        assert metrics["weight_clip_low_frac"] == pytest.approx(int((sel & (w < 1 - eps)).sum()) / n, abs=1e-9)
        assert metrics["weight_clip_high_frac"] == pytest.approx(int((sel & (w > 1 + eps)).sum()) / n, abs=1e-9)
        assert metrics["weight_mean"] == pytest.approx(float(w.clamp(1 - eps, 1 + eps)[sel].mean()), rel=1e-5)


def test_nan_in_a_later_block_names_the_global_row():
    rows, tokens = 200, 4096
    old = -torch.rand(rows, tokens)
    teacher = old.clone()
    teacher[150, 10] = float("nan")
    with pytest.raises(ValueError, match=r"teacher_log_probs.*row index\(es\) 150 "):
        rlsd_advantages(torch.ones(rows), teacher, old, torch.ones(rows, tokens), lam=0.5)
    teacher[150, 10] = 0.0
    teacher[150, 4095] = float("inf")
    mask = torch.ones(rows, tokens)
    mask[150, 4095] = 0  # non-finite only at padding: accepted, and that position is 0
    adv, _ = rlsd_advantages(torch.ones(rows), teacher, old, mask, lam=0.5)
    assert adv[150, 4095] == 0 and torch.isfinite(adv).all()
