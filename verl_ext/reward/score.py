"""The reward for verl's custom-reward hook.

verl 0.9.1's reward managers (``naive``, ``dapo``) call, from a thread pool,
``compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=..., **reward_kwargs)``
where ``reward_kwargs`` is ``reward.custom_reward_function.reward_kwargs`` of the config::

    reward.custom_reward_function.path=pkg://verl_ext.reward
    reward.custom_reward_function.name=compute_score

The returned dict's ``score`` is the reward; every other key is logged by verl (same keys on
every call, so they batch into arrays). ``reward_kwargs.variant``: ``strict`` or ``released``.
"""

from __future__ import annotations

import functools
import math

from verl_ext.reward.extract import extract_answer, has_format, last_boxed
from verl_ext.reward.grading import grade, normalize_problem_type
from verl_ext.reward.guard import set_symbolic_workers
from verl_ext.reward.released import GRADER_TIMEOUT as RELEASED_TIMEOUT
from verl_ext.reward.released import MAX_RESPONSE_LENGTH as RELEASED_MAX_LENGTH
from verl_ext.reward.released import extract as extract_released
from verl_ext.reward.released import normalize_response, released_score


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


VARIANTS = ("strict", "released")
ANSWER_FORMATS = ("thought_answer", "boxed")
LOGGED_KEYS = ("score", "acc", "format", "overlong_penalty", "answered", "gt_missing", "unknown_type",
               "response_decoded", "error")


def missing_truth(ground_truth) -> bool:
    """No usable ground truth: None, a float NaN, or blank text (never graded as the text "None"/"nan")."""
    if ground_truth is None:
        return True
    if isinstance(ground_truth, float) and math.isnan(ground_truth):
        return True
    return isinstance(ground_truth, str) and not ground_truth.strip()


def _as_text(solution_str) -> tuple[str, bool]:
    """The response as text; bytes are decoded as UTF-8 (undecodable bytes replaced) and flagged."""
    if isinstance(solution_str, str):
        return solution_str, False
    if isinstance(solution_str, (bytes, bytearray, memoryview)):
        return bytes(solution_str).decode("utf-8", errors="replace"), True
    return "", False


def compute_score(data_source=None, solution_str="", ground_truth="", extra_info=None, *,
                  variant: str = "strict", format_weight: float = 0.1, timeout: float | None = None,
                  max_response_length: int | None = None, overlong_buffer: int = 3072,
                  overlong_factor: float = 0.1, length_tokenizer: str | None = None,
                  symbolic_workers: int = 2, answer_format: str | None = None, **_unused) -> dict:
    """Reward of one response; ``variant`` picks the grading (``reward_kwargs.variant``):

    ``strict`` (default here): ``problem_type = extra_info["problem_type"]`` (default: ``multiple
    choice`` when ``extra_info["options"]`` is non-empty, else ``math``; an unknown type is graded as
    ``open`` and counted in ``unknown_type``); ``acc`` = 1 if the extracted answer
    (``extract_answer``) grades equal to ``ground_truth`` (``grade``), ``format`` = 1 if the
    response is ``<thought>..</thought><answer>..</answer>``.
    score = ``(1 - format_weight) * acc + format_weight * format`` for math, ``acc`` otherwise;
    plus, for math when ``max_response_length`` is set, ``overlong_penalty(L, max_response_length,
    overlong_buffer, overlong_factor)`` with L the response length in tokens.

    ``answer_format`` (``reward_kwargs.answer_format``, else the row's ``extra_info["answer_format"]``, else
    ``thought_answer``): ``thought_answer`` as above; ``boxed`` (the text math prompt: "put your final answer
    within \\boxed{}") reads the last ``\\boxed{}`` only and ``format`` = 1 when the response has one.

    ``released``: the paper's released grading rule for rule (``verl_ext.reward.released``); its
    length penalty uses ``max_response_length`` (default 16384) and L in tokens when
    ``extra_info["response_length"]`` or ``length_tokenizer`` gives it, else in characters.

    Either variant: a missing ground truth (None, NaN, blank) scores 0 and sets ``gt_missing``; a
    bytes response is decoded (``response_decoded``); never raises on the response text.
    ``symbolic_workers`` sizes the pool of time-bounded symbolic-check processes; ``timeout`` is
    the wall-time limit (seconds) of one symbolic check (5 strict, 10 released).
    Returns the keys of ``LOGGED_KEYS`` (the same on every call, so verl batches them).
    """
    if variant not in VARIANTS:
        raise ValueError(f"reward_kwargs.variant must be one of {VARIANTS}, got {variant!r}")
    set_symbolic_workers(symbolic_workers)
    info = dict(extra_info or {})
    text, decoded = _as_text(solution_str)
    out = dict.fromkeys(LOGGED_KEYS, 0.0)
    out["response_decoded"] = float(decoded)
    if missing_truth(ground_truth):
        out["gt_missing"] = 1.0
        return out
    if variant == "released":
        length = info.get("response_length")
        if length is None and length_tokenizer:
            length = _response_length(text, info, length_tokenizer)
        r = released_score(text, ground_truth, info.get("problem_type"), length,
                           max_response_length=int(max_response_length or RELEASED_MAX_LENGTH),
                           overlong_buffer=int(overlong_buffer), format_weight=format_weight,
                           overlong_factor=overlong_factor, timeout=RELEASED_TIMEOUT if timeout is None else timeout)
        out.update(score=float(r["score"]), acc=float(r["acc"]), format=float(r["format"]),
                   overlong_penalty=float(overlong_factor * r["length_penalty"]), error=float(r["error"]),
                   answered=float(bool(extract_released(normalize_response(text), False))))
        return out

    timeout = 5.0 if timeout is None else timeout
    opts = info.get("options")  # a list, or a numpy array after a round trip through verl's batch
    options = [] if opts is None else [str(o) for o in list(opts)]
    ptype = info.get("problem_type")
    try:
        ptype = normalize_problem_type(ptype) if ptype else ("multiple choice" if options else "math")
    except ValueError:  # an unknown type must not stop training: graded as open-ended, counted
        ptype, out["unknown_type"] = "open", 1.0

    if answer_format is not None and answer_format not in ANSWER_FORMATS:
        raise ValueError(f"reward_kwargs.answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    form = answer_format or info.get("answer_format")
    form = form if form in ANSWER_FORMATS else "thought_answer"  # a row's unknown value: the default
    try:
        answer = extract_answer(text) if form == "thought_answer" else last_boxed(text)
        answer = None if answer is None else answer.strip()
        acc = float(grade(answer, str(ground_truth), ptype, options=options, timeout=timeout))
    except Exception:  # odd model output must never stop training
        answer, acc, out["error"] = None, 0.0, 1.0
    fmt = float(has_format(text)) if form == "thought_answer" else float(answer is not None)

    if ptype == "math":
        score = (1.0 - format_weight) * acc + format_weight * fmt
    else:
        score = acc
    penalty = 0.0
    if ptype == "math" and max_response_length:
        length = _response_length(text, info, length_tokenizer)
        penalty = overlong_penalty(length, int(max_response_length), int(overlong_buffer), float(overlong_factor))
        score += penalty
    out.update(score=float(score), acc=acc, format=fmt, overlong_penalty=float(penalty),
               answered=float(answer is not None))
    return out
