"""Rule-based reward for verl's custom-reward hook, and the extraction/grading helpers it is made of.

Hook (verl 0.9.1): ``reward.custom_reward_function.path=pkg://verl_ext.reward`` with
``reward.custom_reward_function.name=compute_score`` (options via ``reward_kwargs``).

Stable helpers for evaluation code:
- ``extract_answer(text, allow_tail=False)``: last ``<answer>`` block, else last ``\\boxed{}``.
- ``grade(pred, ground_truth, problem_type, options=None, timeout=5.0)``: equivalence by type.
- ``parse_choice``, ``parse_number``, ``normalize_text``, ``grade_math``, ``has_format``,
  ``last_boxed``, ``normalize_problem_type``, ``overlong_penalty``.
"""

from verl_ext.reward.extract import extract_answer, has_format, last_boxed
from verl_ext.reward.grading import (
    PROBLEM_TYPES,
    clean_answer,
    grade,
    grade_math,
    normalize_problem_type,
    normalize_text,
    parse_choice,
    parse_number,
)
from verl_ext.reward.score import compute_score, overlong_penalty

__all__ = [
    "PROBLEM_TYPES",
    "clean_answer",
    "compute_score",
    "extract_answer",
    "grade",
    "grade_math",
    "has_format",
    "last_boxed",
    "normalize_problem_type",
    "normalize_text",
    "overlong_penalty",
    "parse_choice",
    "parse_number",
]
