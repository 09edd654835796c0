"""Leakage and stability metrics on hand-made responses; expected values computed by hand."""

from __future__ import annotations

import pytest
import torch

from verl_ext.diagnostics import (
    answer_leak_metrics,
    answer_token_masks,
    answer_token_metrics,
    find_answer_mention,
    normalize_answer,
    stability_metrics,
    text_before_answer,
)
from verl_ext.tiny_model import load_tokenizer


def test_normalize_and_prefix():
    assert normalize_answer("  $\\boxed{\\frac{1}{2}}$. ") == "\\frac{1}{2}"
    assert normalize_answer("Forty\n  Two") == "forty two"
    assert text_before_answer("a <answer>x</answer> b <answer>y</answer>") == "a <answer>x</answer> b "
    assert text_before_answer("so \\boxed{3}") == "so "
    assert text_before_answer("no final answer") == "no final answer"


CASES = [
    # (response, ground truth, leaks?)
    ("<thought>The answer is 12 obviously.</thought><answer>12</answer>", "12", True),
    ("<thought>Compute 3.12 + 120 and x12.</thought><answer>12</answer>", "12", False),  # not a standalone 12
    ("<thought>so x = 12.</thought><answer>12</answer>", "12", True),  # trailing period is a boundary
    ("<thought>no idea</thought><answer>12</answer>", "12", False),  # only inside the answer block
    ("<thought>A triangle; pick (B).</thought><answer>B</answer>", "B", True),  # option form
    ("<thought>A triangle with a base b.</thought><answer>A</answer>", "A", False),  # article/variable: no
    ("<thought>the value is $\\frac{1}{2}$</thought><answer>\\frac{1}{2}</answer>", "$\\frac{1}{2}$", True),
    ("<thought>PARIS is big</thought>\\boxed{Paris}", "Paris", True),  # case-folded; boxed ends the prefix
    ("<thought>whatever</thought><answer>12</answer>", None, None),  # no ground truth: not evaluated
    ("<thought>whatever</thought><answer>12</answer>", "  ", None),  # empty after normalising: not evaluated
]


def test_answer_leak_fraction_by_hand():
    for text, gt, leaks in CASES:
        if leaks is not None:
            assert (find_answer_mention(text, gt) is not None) == leaks, text
    m = answer_leak_metrics([c[0] for c in CASES], [c[1] for c in CASES])
    assert m["diag/answer_leak_evaluated"] == 8.0
    assert m["diag/answer_leak_frac"] == pytest.approx(5 / 8)  # cases 0, 2, 4, 6, 7


def test_first_mention_position_by_hand():
    # normalised text "12 then 12<answer>12</answer>" (28 chars); first mention at 0 and at 8
    m = answer_leak_metrics(["12 then 12<answer>12</answer>", "we get 12<answer>12</answer>"], ["12", "12"])
    assert m["diag/answer_leak_frac"] == 1.0
    n0, n1 = len("12 then 12<answer>12</answer>"), len("we get 12<answer>12</answer>")
    assert m["diag/answer_leak_first_pos"] == pytest.approx((0 / n0 + 7 / n1) / 2)
    assert answer_leak_metrics([], [])["diag/answer_leak_frac"] == 0.0
    with pytest.raises(ValueError, match="2 responses but 1 ground truths"):
        answer_leak_metrics(["a", "b"], ["a"])


def test_answer_token_excess_by_hand():
    tok = load_tokenizer()
    texts = ["<thought>3+4</thought>\n<answer>42</answer><|im_end|>", "<thought>hmm</thought><|im_end|>", "<answer>7</answer>"]
    ids = [tok.encode(t) for t in texts]
    width = max(map(len, ids)) + 2
    mask = torch.zeros(3, width)
    for i, row in enumerate(ids):
        mask[i, : len(row)] = 1
    answer = answer_token_masks(tok, ids, mask)
    # the masked tokens spell exactly the answer text (the tags are excluded)
    assert tok.decode([ids[0][j] for j in answer[0].nonzero().flatten().tolist()]) == "42"
    assert not answer[1].any()
    assert tok.decode([ids[2][j] for j in answer[2].nonzero().flatten().tolist()]) == "7"
    # a window too short to hold the opening tag: no block
    assert not answer_token_masks(tok, ids[:1], mask[:1], window=3).any()

    student = torch.zeros(3, width)
    teacher = torch.full((3, width), 0.5)  # delta 0.5 on every other token
    teacher[answer] = 2.0  # delta 2 on answer tokens
    teacher[1] = 9.0  # row without an answer block: counts in no mean
    m = answer_token_metrics(teacher, student, mask, answer)
    assert m["diag/answer_token_teacher_excess"] == pytest.approx(2.0)
    assert m["diag/answer_token_excess_vs_rest"] == pytest.approx(1.5)
    assert m["diag/answer_block_frac"] == pytest.approx(2 / 3)
    # row 2 invalid (no teacher signal): its answer tokens drop out; row 0 alone: same numbers, 1/2 rows
    teacher[2][answer[2]] = 100.0
    m = answer_token_metrics(teacher, student, mask, answer, valid=torch.tensor([True, True, False]))
    assert m["diag/answer_token_teacher_excess"] == pytest.approx(2.0)
    assert m["diag/answer_block_frac"] == pytest.approx(1 / 2)


def test_stability_metrics_by_hand():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    seq = torch.tensor([2.0, -1.0, 0.0])
    adv = torch.tensor([[1.0, 3.0, 0.0], [-1.0, 0.5, 0.0], [0.1, 0.2, 0.3]])
    # std([1, 3]) / 2 = 0.5 and std([-1, 0.5]) / 1 = 0.75 (population std); row 2 has A = 0
    # sign flips: 0.5 in row 1, 1 of the 4 tokens of the rows with A != 0
    deltas = torch.arange(1, 8, dtype=torch.float32)  # 7 valid tokens: |delta| = 1..7
    teacher = torch.zeros(3, 3)
    teacher[mask.bool()] = -deltas
    m = stability_metrics(adv, seq, teacher, torch.zeros(3, 3), mask)
    assert m["diag/token_adv_spread"] == pytest.approx((0.5 + 0.75) / 2)
    assert m["diag/token_adv_sign_flip_frac"] == pytest.approx(0.25)
    assert m["diag/delta_abs_p99"] == pytest.approx(7.0)  # ceil(0.99 * 7) = 7th smallest
