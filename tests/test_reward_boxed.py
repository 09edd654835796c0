"""The reward for the text math prompt ("put your final answer within \\boxed{}"): the last \\boxed{} is the
answer, graded with mathruler then math-verify; scores checked against the formula by hand."""

from __future__ import annotations

import pytest

from verl_ext.reward import compute_score

BOXED = {"answer_format": "boxed"}


@pytest.mark.parametrize("response, truth, acc", [
    ("12 + 30 = 42, so the answer is \\boxed{42}.", "42", 1.0),
    ("Halve it: \\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", 1.0),          # symbolic equivalence
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),                              # number vs fraction
    ("\\boxed{x = 3}", "3", 1.0),                                        # a leading "x =" is not the answer's
    ("first \\boxed{3}, then on reflection \\boxed{4}", "3", 0.0),      # the last box counts
    ("\\boxed{41}", "42", 0.0),
])
def test_boxed_answers_graded(response, truth, acc):
    out = compute_score("math500", response, truth, BOXED)
    assert out["acc"] == acc and out["format"] == 1.0 and out["answered"] == 1.0
    assert out["score"] == pytest.approx(0.9 * acc + 0.1 * 1.0)  # (1 - w) acc + w format, w = 0.1


def test_answer_tags_do_not_count_for_the_boxed_prompt():
    """The prompt asked for \\boxed{}: an <answer> block is not the answer (thought_answer would read 42)."""
    response = "<thought>think</thought><answer>42</answer> and \\boxed{41}"
    assert compute_score("aime24", response, "42", BOXED)["acc"] == 0.0
    assert compute_score("aime24", response, "42", {})["acc"] == 1.0  # the VL default: the answer block


def test_no_box_is_unanswered_and_unformatted():
    out = compute_score("dapo_math", "The answer is 42.", "42", BOXED)
    assert (out["acc"], out["format"], out["answered"], out["score"]) == (0.0, 0.0, 0.0, 0.0)


def test_format_weight_zero_gives_accuracy_alone():
    assert compute_score("x", "\\boxed{7}", "7", BOXED, format_weight=0.0)["score"] == 1.0
    assert compute_score("x", "7", "7", BOXED, format_weight=0.0)["score"] == 0.0


def test_reward_kwargs_override_the_row_and_bad_values_are_named():
    response = "<thought>t</thought><answer>5</answer>"
    assert compute_score("x", response, "5", BOXED, answer_format="thought_answer")["acc"] == 1.0
    assert compute_score("x", "\\boxed{5}", "5", {"answer_format": "unknown"})["acc"] == 1.0  # default extraction
    with pytest.raises(ValueError, match="answer_format"):
        compute_score("x", "\\boxed{5}", "5", {}, answer_format="boxd")
