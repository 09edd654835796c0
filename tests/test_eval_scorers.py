"""Hand-labelled cases for the answer extraction and the five benchmark scorers.

Each expected value was decided by reading the response and the gold answer, not by running the
scorer.
"""

import math

import pytest

from verl_ext.eval.extract import extract_answer
from verl_ext.eval.scorers import aggregate, parse_choice, score, wemath_group_metrics

# ---------------------------------------------------------------------------------------------
# extraction


@pytest.mark.parametrize(
    "response, expected",
    [
        ("<think>maybe 3</think><answer> 4 </answer>", "4"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),  # last tag wins
        ("so \\boxed{\\frac{1}{2}} and finally \\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),  # nested braces
        ("<answer>\\boxed{7}</answer>", "7"),  # box inside the answer tag
        ("<think>\\boxed{9}</think> The answer is 12.", "The answer is 12."),  # box only inside thinking: tail
        ("plain text", "plain text"),
        ("cut off \\boxed{12", "cut off \\boxed{12"),  # unbalanced box: tail
        ("", ""),
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


# ---------------------------------------------------------------------------------------------
# MMMU

MC = "multiple choice"
OPT4 = ["3 cm", "4 cm", "5 cm", "6 cm"]

MMMU_CASES = [
    # (response, gold, extra_info, correct)
    ("<answer>B</answer>", "B", {"problem_type": MC, "options": OPT4}, True),
    ("Comparing the sides, the answer is (C).", "C", {"problem_type": MC, "options": OPT4}, True),
    ("<answer>5 cm</answer>", "C", {"problem_type": MC, "options": OPT4}, True),  # option text, not letter
    ("The length is \\boxed{5 cm}", "B", {"problem_type": MC, "options": OPT4}, False),  # text of option C
    ("\\boxed{15.0}", "B", {"problem_type": MC, "options": ["12", "15", "18"]}, True),  # numeric option text
    ("\\boxed{D}", "A", {"problem_type": MC, "options": OPT4}, False),
    ("I am not sure about this one.", "A", {"problem_type": MC, "options": OPT4}, False),  # no guess
    ("Not (A); it must be (B)", "B", {"problem_type": MC, "options": OPT4}, True),  # last bracketed letter
    ("<answer>b</answer>", "B", {"problem_type": MC, "options": OPT4}, True),  # lowercase lone letter
    ("so the side must be 15 cm long", "B", {"problem_type": MC, "options": ["5 cm", "15 cm"]}, True),  # not "5 cm"
    ("A triangle has three sides, so the answer is D", "D", {"problem_type": MC, "options": OPT4}, True),  # article A
    ("\\boxed{3.1416}", "3.14", {"problem_type": "open", "options": []}, True),  # rounded to 2 decimals
    ("<answer>41</answer>", "42", {"problem_type": "open", "options": []}, False),
    ("<answer>paris.</answer>", "Paris", {"problem_type": "open", "options": []}, True),
    ("<answer>3.43</answer>", "['24/7', '3.429']", {"problem_type": "open", "options": []}, True),  # list gold
    ("<answer>1,200</answer>", "1200", {"problem_type": "open", "options": []}, True),
]


@pytest.mark.parametrize("response, gold, info, correct", MMMU_CASES)
def test_mmmu(response, gold, info, correct):
    assert score("mmmu", response, gold, info)["correct"] is correct


def test_mmmu_micro_accuracy():
    recs = [{"correct": c, "problem_type": p} for c, p in [(1, MC), (0, MC), (1, "open"), (1, MC)]]
    m = aggregate("mmmu", recs)
    assert m["score"] == 75.0  # 3 of 4, pooled over question types
    assert m["accuracy_by_problem_type"] == {MC: pytest.approx(200 / 3), "open": 100.0}


def test_parse_choice_returns_none_without_evidence():
    assert parse_choice("no idea", ["x", "y"]) is None
    assert parse_choice("(Z)", ["x", "y"]) is None  # out-of-range letter


# ---------------------------------------------------------------------------------------------
# MathVista

MV_MC = {"question_type": "multi_choice", "problem_type": MC, "options": ["2", "3", "4"], "answer_type": "text"}


def mv_free(answer_type, precision=None, unit=""):
    return {"question_type": "free_form", "problem_type": "numerical", "options": [], "answer_type": answer_type, "precision": precision, "unit": unit}


MATHVISTA_CASES = [
    ("<answer>B</answer>", "B", MV_MC, True),
    ("\\boxed{3}", "B", MV_MC, True),  # option text -> letter
    ("<answer>C</answer>", "4", MV_MC, True),  # gold given as option text
    ("<answer>A</answer>", "B", MV_MC, False),
    ("\\boxed{7.0}", "7", mv_free("integer"), True),
    ("\\boxed{7.9}", "7", mv_free("integer"), True),  # MathVista casts with int(float(x))
    ("\\boxed{8}", "7", mv_free("integer"), False),
    ("\\boxed{1.46}", "1.5", mv_free("float", 1.0), True),  # 1.46 -> 1.5 at precision 1
    ("\\boxed{1.4}", "1.45", mv_free("float", 2.0), False),
    ("\\boxed{\\frac{1}{3}}", "0.333", mv_free("float", 3.0), True),
    ("\\boxed{[1, 2, 3]}", "[1, 2, 3]", mv_free("list"), True),
    ("<answer>1, 2, 3</answer>", "[1, 2, 3]", mv_free("list"), True),  # brackets optional
    ("<answer>[1, 3, 2]</answer>", "[1, 2, 3]", mv_free("list"), False),  # order matters
    ("<answer>[0.49, 1.21]</answer>", "[0.5, 1.2]", mv_free("list", 1.0), True),  # element-wise rounding
    ("<answer>[1, 2]</answer>", "[1, 2, 3]", mv_free("list"), False),  # length differs
    ("<answer>5 cm</answer>", "5", mv_free("integer", unit="cm"), True),
    ("\\boxed{12 cm^2}", "12", mv_free("integer"), True),  # the unit's exponent is not the answer
    ("<answer>Blue.</answer>", "blue", mv_free("text"), True),
]


@pytest.mark.parametrize("response, gold, info, correct", MATHVISTA_CASES)
def test_mathvista(response, gold, info, correct):
    assert score("mathvista", response, gold, info)["correct"] is correct


def test_mathvista_mc_prediction_maps_to_option_text():
    assert score("mathvista", "<answer>C</answer>", "C", MV_MC)["pred_text"] == "4"


# ---------------------------------------------------------------------------------------------
# MathVision

MVIS_MC = {"problem_type": MC, "options": ["1", "2", "3", "4", "5"]}
MVIS_FREE = {"problem_type": "math", "options": []}

MATHVISION_CASES = [
    ("<answer>C</answer>", "C", MVIS_MC, True),
    ("\\boxed{D}", "D", {"problem_type": MC, "options": []}, True),  # choices printed in the image
    ("\\boxed{E}", "D", {"problem_type": MC, "options": []}, False),
    ("\\boxed{0.5}", "\\frac{1}{2}", MVIS_FREE, True),
    ("\\boxed{\\sqrt{12}}", "2\\sqrt{3}", MVIS_FREE, True),
    ("\\boxed{\\frac{3}{4}}", "\\dfrac{3}{4}", MVIS_FREE, True),
    ("\\boxed{2 \\pi}", "2\\pi", MVIS_FREE, True),
    ("\\boxed{1 + x^2}", "x^2+1", MVIS_FREE, True),
    ("\\boxed{8}", "7", MVIS_FREE, False),
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", MVIS_FREE, True),
    ("<answer></answer>", "7", MVIS_FREE, False),
    ("\\boxed{x^2 - 1}", "x^2+1", MVIS_FREE, False),
    # the next three only math-verify accepts (mathruler's grade_answer says no)
    ("\\boxed{\\frac{6}{8}}", "\\frac{3}{4}", MVIS_FREE, True),
    ("\\boxed{2^{10}}", "1024", MVIS_FREE, True),
    ("\\boxed{\\{2, 1\\}}", "\\{1,2\\}", MVIS_FREE, True),
]


@pytest.mark.parametrize("response, gold, info, correct", MATHVISION_CASES)
def test_mathvision(response, gold, info, correct):
    assert score("mathvision", response, gold, info)["correct"] is correct


# ---------------------------------------------------------------------------------------------
# ZeroBench

ZERO_CASES = [
    ("<answer>12</answer>", "12", True),
    ("<answer>1,234</answer>", "1234", True),
    ("<answer>12.0</answer>", "12", True),
    ("<answer>3.50</answer>", "3.5", True),
    ("<answer>$12$</answer>", "12", True),
    ("<answer>\u22124</answer>", "-4", True),  # unicode minus
    ("<answer>Red.</answer>", "red", True),
    ("<answer>\"blue\"</answer>", "blue", True),
    ("<answer>cat,dog</answer>", "cat, dog", True),
    ("<answer>1/2</answer>", "0.5", True),
    ("<answer>7</answer>", "8", False),
    ("<answer>two</answer>", "2", False),  # number words are not parsed
    ("<answer>12.5</answer>", "12", False),
]


@pytest.mark.parametrize("response, gold, correct", ZERO_CASES)
def test_zerobench(response, gold, correct):
    assert score("zerobench", response, gold, {"variant": "subquestions"})["correct"] is correct


def test_zerobench_reports_both_variants():
    recs = [{"correct": c, "variant": v} for c, v in [(1, "subquestions"), (0, "subquestions"), (0, "main"), (0, "main"), (1, "main"), (0, "subquestions"), (1, "subquestions")]]
    m = aggregate("zerobench", recs)
    assert m["accuracy_subquestions"] == 50.0  # 2 of 4
    assert m["accuracy_main"] == pytest.approx(100 / 3)  # 1 of 3
    assert m["score"] == 50.0  # headline: sub-questions


# ---------------------------------------------------------------------------------------------
# WeMath

WE_OPTS = ["12", "15", "18", "20"]
WEMATH_CASES = [
    ("<answer>A</answer>", "A", True),
    ("<answer>B. 15</answer>", "B", True),
    ("\\boxed{C}", "C", True),
    ("The answer is D.", "D", True),
    ("<answer>15</answer>", "B", True),  # option text
    ("<answer>A</answer>", "B", False),
    ("<answer>(C)</answer>", "B", False),
    ("<answer>none</answer>", "A", False),
    ("Answer: D", "D", True),
    ("<answer>20</answer>", "A", False),
]


@pytest.mark.parametrize("response, gold, correct", WEMATH_CASES)
def test_wemath_rows(response, gold, correct):
    assert score("wemath", response, gold, {"problem_type": MC, "options": WE_OPTS})["correct"] is correct


def test_wemath_options_with_their_own_labels_and_unlisted_letters():
    info = {"problem_type": MC, "options": ["A. 12", "B. 15", "C. 18"]}
    assert score("wemath", "<answer>15</answer>", "B", info)["correct"] is True  # label stripped
    assert score("wemath", "<answer>G</answer>", "G", {"problem_type": MC, "options": []})["correct"] is True


def _group(gid, steps, subs, multi):
    rows = [{"group_id": gid, "key": f"{steps}steps_{i + 1}", "correct": c} for i, c in enumerate(subs)]
    return rows + [{"group_id": gid, "key": f"{steps}steps_multi", "correct": multi}]


def test_wemath_group_metrics_hand_computed():
    rows = (
        _group("1", 2, [True, True], True)  # CM (strict and loose)
        + _group("2", 2, [True, False], True)  # strict RM, loose CM (one sub-question fails)
        + _group("3", 2, [False, False], True)  # RM (strict and loose)
        + _group("4", 2, [True, True], False)  # IG
        + _group("5", 3, [True, False, True], False)  # IK (one of three sub-questions fails)
        + _group("6", 3, [True, True, True], True)  # CM
        + [{"group_id": "7", "key": "2steps_1", "correct": True}]  # incomplete: no composite row
    )
    g = wemath_group_metrics(rows)
    # N = 6 complete groups; IK = 1, IG = 1; strict CM = 2 (g1, g6), RM = 2 (g2, g3);
    # loose CM = 3 (g1, g2, g6), RM = 1 (g3).
    assert g["groups"] == 6 and g["incomplete_groups"] == 1
    assert g["counts"] == {"IK": 1, "IG": 1, "CM_strict": 2, "RM_strict": 2, "CM_loose": 3, "RM_loose": 1}
    # strict score = (6 - 0.5*1 - 2 - 1) / 6 = 2.5/6 = 41.667 %; loose = (6 - 0.5 - 1 - 1)/6 = 58.333 %
    assert g["score_strict"] == pytest.approx(100 * 2.5 / 6)
    assert g["score_loose"] == pytest.approx(100 * 3.5 / 6)
    # rates: IK = IG = 1/6; CM strict 2/6, loose 3/6; RM strict 2/(2+2), loose 1/(3+1)
    assert g["IK_strict"] == pytest.approx(100 / 6) and g["IG_loose"] == pytest.approx(100 / 6)
    assert g["CM_strict"] == pytest.approx(100 * 2 / 6) and g["CM_loose"] == pytest.approx(50.0)
    assert g["RM_strict"] == pytest.approx(50.0) and g["RM_loose"] == pytest.approx(25.0)


def test_wemath_aggregate_from_scored_responses():
    # group 1 (2 steps): both sub-questions right, composite right -> CM
    # group 2 (2 steps): sub-question 2 wrong, composite wrong -> IK
    info = {"problem_type": MC, "options": WE_OPTS}
    plan = [("1", "2steps_1", "<answer>A</answer>", "A"), ("1", "2steps_2", "<answer>B</answer>", "B"),
            ("1", "2steps_multi", "<answer>C</answer>", "C"), ("2", "2steps_1", "<answer>A</answer>", "A"),
            ("2", "2steps_2", "<answer>C</answer>", "B"), ("2", "2steps_multi", "<answer>A</answer>", "D")]
    recs = [{"group_id": g, "key": k, "correct": score("wemath", r, a, info)["correct"]} for g, k, r, a in plan]
    m = aggregate("wemath", recs)
    assert m["accuracy"] == pytest.approx(400 / 6)  # 4 of 6 rows
    # N = 2: IK = 1, IG = 0, RM = 0 -> (2 - 0 - 0 - 1)/2 = 50 % both ways
    assert m["score"] == pytest.approx(50.0) and m["score_loose"] == pytest.approx(50.0)


def test_wemath_rejects_duplicate_and_bad_keys():
    with pytest.raises(ValueError, match="appears twice"):
        wemath_group_metrics([{"group_id": "1", "key": "2steps_1", "correct": 1}] * 2)
    with pytest.raises(ValueError, match="unexpected key"):
        wemath_group_metrics([{"group_id": "9", "key": "step1", "correct": 1}])


def test_mc_gold_that_is_not_an_option_is_an_error():
    with pytest.raises(ValueError, match="neither a letter nor an option"):
        score("wemath", "<answer>A</answer>", "seventeen", {"problem_type": MC, "options": WE_OPTS})


def test_empty_benchmark_accuracy_is_nan():
    assert math.isnan(aggregate("mmmu", [])["accuracy"])
