"""The reward for verl's custom-reward hook.

verl 0.9.1's reward managers (``naive``, ``dapo``) call, from a thread pool,
``compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=..., **reward_kwargs)``
where ``reward_kwargs`` is ``reward.custom_reward_function.reward_kwargs`` of the config::

    reward.custom_reward_function.path=pkg://verl_ext.reward
    reward.custom_reward_function.name=compute_score

The returned dict's ``score`` is the reward; every other key is logged by verl (same keys on
every call, so they batch into arrays).
"""

from __future__ import annotations

import functools

from verl_ext.reward.extract import extract_answer, has_format
from verl_ext.reward.grading import grade, normalize_problem_type


def overlong_penalty(response_length: int, max_response_length: int, buffer_length: int,
                     factor: float) -> float:
    """Soft over-length penalty (<= 0): ``-factor * clip((L - (L_max - B)) / B, 0, 1)``: zero up to
    ``L_max - B`` tokens, then linear down to ``-factor`` at ``L_max``."""
    if buffer_length <= 0:
        raise ValueError(f"overlong buffer_length must be > 0, got {buffer_length}")
    excess = (response_length - (max_response_length - buffer_length)) / buffer_length
    return -factor * min(max(excess, 0.0), 1.0)


@functools.lru_cache(maxsize=4)
def _length_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _response_length(solution_str: str, extra_info: dict, length_tokenizer: str | None) -> int:
    if extra_info.get("response_length") is not None:
        return int(extra_info["response_length"])
    if length_tokenizer:
        return len(_length_tokenizer(length_tokenizer).encode(solution_str, add_special_tokens=False))
    raise ValueError(
        "the over-length penalty needs the response length: set reward_kwargs.length_tokenizer "
        "(a tokenizer path) or put response_length in extra_info"
    )


def compute_score(data_source=None, solution_str="", ground_truth="", extra_info=None, *,
                  format_weight: float = 0.1, timeout: float = 5.0,
                  max_response_length: int | None = None, overlong_buffer: int = 3072,
                  overlong_factor: float = 0.1, length_tokenizer: str | None = None,
                  **_unused) -> dict:
    """Reward of one response.

    ``problem_type = extra_info["problem_type"]`` (default: ``multiple choice`` when
    ``extra_info["options"]`` is non-empty, else ``math``); ``acc`` = 1 if the extracted answer
    (``extract_answer``) grades equal to ``ground_truth`` (``grade``), ``format`` = 1 if the
    response is ``<thought>..</thought><answer>..</answer>``.
    score = ``(1 - format_weight) * acc + format_weight * format`` for math, ``acc`` otherwise;
    plus, for math when ``max_response_length`` is set, ``overlong_penalty(L, max_response_length,
    overlong_buffer, overlong_factor)`` with L the response length in tokens.
    Returns ``{"score", "acc", "format", "overlong_penalty", "answered"}``; never raises on the
    response text (a grading error counts as wrong).
    """
    info = dict(extra_info or {})
    options = list(info.get("options") or [])
    ptype = info.get("problem_type")
    ptype = normalize_problem_type(ptype) if ptype else ("multiple choice" if options else "math")
    text = solution_str if isinstance(solution_str, str) else ""

    try:
        answer = extract_answer(text)
        acc = float(grade(answer, ground_truth, ptype, options=options, timeout=timeout))
    except Exception:  # odd model output must never stop training
        answer, acc = None, 0.0
    fmt = float(has_format(text))

    if ptype == "math":
        score = (1.0 - format_weight) * acc + format_weight * fmt
    else:
        score = acc
    penalty = 0.0
    if ptype == "math" and max_response_length:
        length = _response_length(text, info, length_tokenizer)
        penalty = overlong_penalty(length, int(max_response_length), int(overlong_buffer), float(overlong_factor))
        score += penalty
    return {
        "score": float(score),
        "acc": acc,
        "format": fmt,
        "overlong_penalty": float(penalty),
        "answered": float(answer is not None),
    }
