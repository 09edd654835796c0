"""Equivalence checks between an extracted answer and the ground truth, routed by problem type.

- ``multiple choice``: the option letter; the option's text is accepted too when options are given.
- ``numerical``: both sides parsed as floats and compared after rounding to 2 decimals.
- ``open``: case-insensitive exact match after light normalisation (or equal numbers).
- ``math``: string/number fast paths, then symbolic equivalence (mathruler's ``grade_answer``, then
  math-verify) in a guarded worker process with a time limit (see ``guard.py``).
"""

from __future__ import annotations

import math
import re
import string

from verl_ext.reward.guard import symbolic_equal

PROBLEM_TYPES = ("multiple choice", "math", "numerical", "open")
_TYPE_ALIASES = {
    "multiple choice": "multiple choice",
    "multiple-choice": "multiple choice",
    "multiple_choice": "multiple choice",
    "multi_choice": "multiple choice",
    "multichoice": "multiple choice",
    "mcq": "multiple choice",
    "choice": "multiple choice",
    "math": "math",
    "mathematics": "math",
    "numerical": "numerical",
    "numeric": "numerical",
    "number": "numerical",
    "regression": "numerical",
    "open": "open",
    "open-ended": "open",
    "open_ended": "open",
    "free_form": "open",
    "free-form": "open",
}
# Longer answers skip the symbolic step: sympy's time grows quickly with size.
MAX_SYMBOLIC_CHARS = 300
_LETTERS = string.ascii_uppercase


def normalize_problem_type(value) -> str:
    """Map a dataset's problem-type spelling onto one of ``PROBLEM_TYPES``; ValueError if unknown."""
    key = str(value).strip().lower() if value is not None else ""
    if key in _TYPE_ALIASES:
        return _TYPE_ALIASES[key]
    raise ValueError(f"unknown problem_type {value!r}; expected one of {PROBLEM_TYPES}")


_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname)\{([^{}]*)\}")


def clean_answer(s: str) -> str:
    """Strip what surrounds an answer but is not part of it: whitespace, ``$``/``$$``, ``\\(..\\)``,
    a whole-string ``\\boxed{}``, ``\\text{}`` wrappers, a trailing period."""
    from verl_ext.reward.extract import last_boxed

    s = str(s).strip()
    for _ in range(3):
        prev = s
        if s.startswith("$") and s.endswith("$") and len(s) >= 2:
            s = s.strip("$").strip()
        if s.startswith("\\(") and s.endswith("\\)"):
            s = s[2:-2].strip()
        if s.startswith("\\[") and s.endswith("\\]"):
            s = s[2:-2].strip()
        if s.startswith(("\\boxed", "\\fbox")) and s.endswith("}"):
            inner = last_boxed(s)
            if inner is not None and s.endswith(inner + "}"):
                s = inner.strip()
        s = _TEXT_WRAP_RE.sub(r"\1", s).strip()
        s = s.rstrip(".").strip()
        if s == prev:
            break
    return s


def normalize_text(s: str) -> str:
    """Lower-case, unquoted, single-spaced form used by the open-ended and option-text matches."""
    s = clean_answer(s).lower()
    s = s.strip("\"'`“”‘’ ")
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"\s*,\s*", ", ", s)  # "[1,2]" == "[1, 2]"
    return s.rstrip(".").strip()


_NUM_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def parse_number(s: str) -> float | None:
    """A float from a plain numeric answer (``1,234.5``, ``-3``, ``45%``, ``\\frac{1}{2}``, ``3/4``,
    ``12 cm`` with a trailing unit word); None when it is not a single number."""
    if s is None:
        return None
    t = clean_answer(s).replace("\\!", "").replace("\\,", "").replace("{,}", "")
    t = t.replace("\\%", "%").replace("−", "-").strip()
    if t.endswith("%"):
        t = t[:-1].strip()
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)
    m = re.fullmatch(r"([+-]?)\\d?frac\{([^{}]+)\}\{([^{}]+)\}", t)
    if m:
        num, den = parse_number(m.group(2)), parse_number(m.group(3))
        if num is None or den in (None, 0):
            return None
        return (-1 if m.group(1) == "-" else 1) * num / den
    m = re.fullmatch(r"([+-]?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)", t)
    if m:
        den = float(m.group(2))
        return float(m.group(1)) / den if den else None
    m = re.fullmatch(r"(\S+)\s+[A-Za-z][A-Za-z^0-9]*\.?", t)  # "12 cm", "3 m^2"
    if m and _NUM_RE.match(m.group(1)):
        t = m.group(1)
    if not _NUM_RE.match(t):
        return None
    try:
        v = float(t)
    except (ValueError, OverflowError):
        return None
    return v if math.isfinite(v) else None


_CHOICE_RES = (
    re.compile(r"^\(?([A-Z])\)?[.:)]?$"),
    re.compile(r"^(?i:the\s+)?(?i:correct\s+)?(?i:answer|option|choice)\s*(?i:is\s*)?:?\s*\(?([A-Z])\)?\.?$"),
    re.compile(r"^\(?([A-Z])\)?[.:)]\s+\S"),  # "B. 12 cm", "(B) 12 cm"
)


def parse_choice(answer: str, options: list[str] | None = None) -> str | None:
    """The option letter an answer names: a bare letter (``B``, ``(B)``, ``B.``), ``B. <text>``,
    ``Option B``, or, when ``options`` are given, the exact (normalised) text of one option.
    Letters beyond the option count are rejected. Returns None when no single option is named."""
    if answer is None:
        return None
    a = clean_answer(answer).strip("*_ ")  # markdown emphasis: **B**
    n = len(options) if options else 26
    for rx in _CHOICE_RES:
        m = rx.match(a)
        if m:
            letter = m.group(1).upper()
            return letter if _LETTERS.index(letter) < n else None
    if options:
        na = normalize_text(a)
        hits = [i for i, opt in enumerate(options) if normalize_text(opt) == na and na]
        if len(hits) == 1:
            return _LETTERS[hits[0]]
        na_num = parse_number(a)
        if na_num is not None:
            hits = [i for i, opt in enumerate(options) if parse_number(opt) == na_num]
            if len(hits) == 1:
                return _LETTERS[hits[0]]
    return None


def _numbers_close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def grade_math(pred: str, truth: str, timeout: float = 5.0) -> bool:
    """Mathematical equivalence: equal normalised strings, equal numbers, else symbolic equivalence
    (mathruler, then math-verify) in the guarded worker; a timeout counts as not equivalent."""
    p, t = clean_answer(pred), clean_answer(truth)
    if not p:
        return False
    if p == t or normalize_text(p) == normalize_text(t):
        return True
    pn, tn = parse_number(p), parse_number(t)
    if pn is not None and tn is not None:
        return _numbers_close(pn, tn)
    if len(p) > MAX_SYMBOLIC_CHARS or len(t) > MAX_SYMBOLIC_CHARS:
        return False
    return bool(symbolic_equal(p, t, timeout=timeout))


def grade(pred: str | None, ground_truth: str, problem_type: str, options: list[str] | None = None,
          timeout: float = 5.0) -> bool:
    """Whether the extracted answer ``pred`` matches ``ground_truth`` under ``problem_type``'s rule
    (module docstring). ``pred`` None or empty is wrong. Never raises on ``pred``."""
    if pred is None or not str(pred).strip():
        return False
    ptype = normalize_problem_type(problem_type)
    pred = str(pred)
    truth = str(ground_truth)
    if ptype == "multiple choice":
        gt_letter = parse_choice(truth, options) or clean_answer(truth).upper()
        return parse_choice(pred, options) == gt_letter
    if ptype == "numerical":
        pn, tn = parse_number(pred), parse_number(truth)
        if pn is not None and tn is not None:
            return round(pn, 2) == round(tn, 2)
        return grade_math(pred, truth, timeout=timeout)
    if ptype == "open":
        if normalize_text(pred) == normalize_text(truth):
            return True
        pn, tn = parse_number(pred), parse_number(truth)
        return pn is not None and tn is not None and _numbers_close(pn, tn)
    return grade_math(pred, truth, timeout=timeout)
