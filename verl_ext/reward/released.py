"""The ``released`` reward variant: the paper's released grading, rule for rule, so that a Table 2
reproduction trains on the same signal (its oddities kept on purpose; ``strict`` is where grading is
right). The rules, in order:

- preprocessing: whitespace next to ``<``, ``>`` and ``/`` in the response is removed; a ground truth
  that is not a string becomes ``""``; a ``$$...$$`` or ``$...$`` ground truth loses its dollars (done
  twice: routing and each task both apply it).
- problem type lower-cased and trimmed, routed by ``ROUTES``; unknown or missing -> open-ended.
- answer: the FIRST ``<answer>...</answer>`` block (tag case ignored), else the last non-empty
  ``\\boxed{...}``; math with neither -> ``""``, the other types -> the whole response.
- math: score = (1 - fw) acc + fw format + factor * length penalty; format = the whole response
  matches ``<thought>.*</thought>.*<answer>.*</answer>``; acc: exact match, then ``clean_math`` on
  both, then mathruler's ``grade_answer`` (raw strings, then cleaned ones), only on short strings.
- multiple choice: a letter A-H from both sides (``mcq_letter``), else ``grade_answer``.
- numerical: ``float()`` after removing commas, equal after rounding to 2 decimals.
- open-ended: a ground truth of <= 10 characters needs a case-insensitive exact match; otherwise, or
  when that fails, the mean F1 of ROUGE-1/2/L with stemming.
- ocr: 1 - word error rate (lower-cased); boolean: yes/true/1 and no/false/0 are the same answer.
- any exception: every value 0.
"""

from __future__ import annotations

import functools
import re

from verl_ext.reward.guard import symbolic_equal

MAX_RESPONSE_LENGTH = 16384
OVERLONG_BUFFER = 3072
GRADER_TIMEOUT = 10.0
# grade_answer runs only when both strings are at most this long / this many lines / words
SYMBOLIC_MAX_CHARS, SYMBOLIC_MAX_LINES, SYMBOLIC_MAX_WORDS = 512, 8, 128

# The released rules are regular expressions (``\s*(<|>|/)\s*``, ``<answer>(.*?)</answer>`` with
# IGNORECASE, ``<thought>.*</thought>.*<answer>.*</answer>`` fullmatch, ``\\text\{\s*[^}]*\s*\}``) whose
# backtracking is quadratic or worse on crafted responses (a 200,000-character one took a minute).
# Each is computed here by one left-to-right scan giving the same result (tests compare them).
_SPACE_RUN = re.compile(r"\s+")
_OPEN_ANSWER = re.compile(re.escape("<answer>"), re.IGNORECASE)
_CLOSE_ANSWER = re.compile(re.escape("</answer>"), re.IGNORECASE)
MCQ_LETTERS = "ABCDEFGH"

MATH, MC, NUM, OPEN, OCR, BOOL = "math", "multiple choice", "numerical", "open-ended", "ocr", "boolean"
ROUTES = {
    "math": MATH, "mathematics": MATH,
    "multiple choice": MC, "multiple_choice": MC,
    "numerical": NUM, "number": NUM, "regression": NUM,
    "open-ended": OPEN, "open_ended": OPEN, "free-form": OPEN, "video qa": OPEN, "video description": OPEN,
    "ocr": OCR,
    "boolean": BOOL, "binary classification": BOOL,
}


def normalize_response(text: str) -> str:
    """Whitespace next to ``<``, ``>`` or ``/`` removed (``re.sub(r"\s*(<|>|/)\s*", r"\1", text)``):
    every whitespace run that touches one of them goes."""
    out, last = [], 0
    for m in _SPACE_RUN.finditer(text):
        a, b = m.span()
        if (a > 0 and text[a - 1] in "<>/") or (b < len(text) and text[b] in "<>/"):
            out.append(text[last:a])
            last = b
    out.append(text[last:])
    return "".join(out)


def preprocess_truth(gt) -> str:
    if not isinstance(gt, str):
        return ""
    gt = gt.strip()
    if gt.startswith("$$") and gt.endswith("$$"):
        return gt[2:-2].strip()
    if gt.startswith("$") and gt.endswith("$"):
        return gt[1:-1].strip()
    return gt


def last_boxed(text: str) -> str:
    """Content of the last balanced ``\\boxed{...}`` (exactly that spelling), else ``""``."""
    found, i, n = "", 0, len(text)
    while True:
        i = text.find("\\boxed{", i)
        if i < 0:
            return found
        j = start = i + 7
        depth = 1
        while j < n and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth == 0:
            found = text[start : j - 1]
        i = j


def first_answer(text: str) -> str | None:
    """``re.search(r"<answer>(.*?)</answer>", text, re.DOTALL | re.IGNORECASE).group(1)``, or None:
    the leftmost opening tag that has a closing tag after it is the first opening tag (a closing tag
    after a later one is after it too), and its content ends at the first closing tag."""
    m = _OPEN_ANSWER.search(text)
    if not m:
        return None
    end = _CLOSE_ANSWER.search(text, m.end())
    return text[m.end():end.start()] if end else None


def format_ok(text: str) -> bool:
    """``re.fullmatch(r"<thought>.*</thought>.*<answer>.*</answer>", text, re.DOTALL)``: starts with
    ``<thought>``, ends with ``</answer>``, and between them a ``</thought>`` then an ``<answer>``
    (the earliest of each is the best choice)."""
    if not (text.startswith("<thought>") and text.endswith("</answer>")):
        return False
    a = text.find("</thought>", len("<thought>"))
    if a < 0:
        return False
    b = text.find("<answer>", a + len("</thought>"))
    return 0 <= b and b + len("<answer>") <= len(text) - len("</answer>")


def _drop_commands(s: str, head: str) -> str:
    """Every ``<head>...}`` removed, left to right (``re.sub(r"\\text\{\s*[^}]*\s*\}", "", s)`` for
    ``head = "\\text{"``: the whitespace parts add nothing to ``[^}]*``); no closing brace after an
    opening means none after any later one either."""
    out, pos = [], 0
    while True:
        i = s.find(head, pos)
        j = s.find("}", i + len(head)) if i >= 0 else -1
        if i < 0 or j < 0:
            out.append(s[pos:])
            return "".join(out)
        out.append(s[pos:i])
        pos = j + 1


def extract(text: str, whole_if_none: bool) -> str:
    ans = first_answer(text)
    if ans is not None:
        return ans.strip()
    boxed = last_boxed(text)
    if boxed:
        return boxed
    return text.strip() if whole_if_none else ""


def clean_math(s: str) -> str:
    """The released normalisation before its second comparison."""
    if not s:
        return ""
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
                     ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", ""), ("$", "")):
        s = s.replace(old, new)
    s = _drop_commands(_drop_commands(s, "\\text{"), "\\mbox{")  # the whole \text{...}, content included
    s = s.replace("\\%", "").replace("%", "")
    if s.startswith("."):
        s = "0" + s
    if s.count("=") == 1:
        s = s.split("=")[1]
    if len(s.split("\\approx")) == 2:
        s = s.split("\\approx")[1]
    return s.replace(" ", "")


def _symbolic_ok(s: str) -> bool:
    s = s.strip() if s else ""
    return bool(s) and len(s) <= SYMBOLIC_MAX_CHARS and s.count("\n") <= SYMBOLIC_MAX_LINES \
        and len(s.split()) <= SYMBOLIC_MAX_WORDS


def math_equal(gt: str, pred: str, timeout: float = GRADER_TIMEOUT) -> bool:
    if not gt or not pred:
        return False
    gt, pred = gt.strip(), pred.strip()
    if pred == gt:
        return True
    gt_c, pred_c = clean_math(gt), clean_math(pred)
    if gt_c and pred_c and gt_c == pred_c:
        return True
    if _symbolic_ok(pred) and _symbolic_ok(gt) and symbolic_equal(pred, gt, timeout, method="mathruler"):
        return True
    return bool(gt_c and pred_c and (pred_c != pred or gt_c != gt) and _symbolic_ok(pred_c)
                and _symbolic_ok(gt_c) and symbolic_equal(pred_c, gt_c, timeout, method="mathruler"))


_PRIORITY = {"start": 10, "end": 9, "phrase": 7, "paren": 6, "period": 5, "colon": 4, "rparen": 3,
             "space": 2, "any": 0}
_PHRASES = ("the answer is", "answer is", "the correct answer is", "correct answer is")


def mcq_letter(text: str) -> str:
    """The option letter (A-H) the released parser reads from ``text``, or ``""``."""
    if not text or not text.strip():
        return ""
    r = text.strip()
    for ch in ",.!?;:'\"":
        r = r.strip(ch)
    r = f" {r} "
    up, low = r.upper(), r.lower()
    cands = []
    for c in MCQ_LETTERS:
        for pat, kind in ((f"({c})", "paren"), (f"{c}.", "period"), (f"{c}:", "colon"), (f"{c})", "rparen"),
                          (f" {c} ", "space")):
            if pat in r:
                cands.append((c, r.rfind(pat), kind))
    for phrase in _PHRASES:
        if phrase in low:
            end = low.find(phrase) + len(phrase)
            after = up[end:]
            for c in MCQ_LETTERS:
                for pat in (f" {c} ", f" {c}.", f"({c})"):
                    if pat in after:
                        cands.append((c, end + after.find(pat), "phrase"))
                        break
    for c in MCQ_LETTERS:
        if up.strip().startswith(c):
            cands.append((c, 0, "start"))
        if up.strip().endswith(c):
            cands.append((c, len(r) - 1, "end"))
    if not cands:
        cands = [(c, up.rfind(c), "any") for c in MCQ_LETTERS if c in up]
    if not cands:
        return ""
    cands.sort(key=lambda x: (_PRIORITY[x[2]], x[1]), reverse=True)
    return cands[0][0]


@functools.lru_cache(maxsize=1)
def _rouge():
    """rouge-score's scorer with its default tokenizer and Porter stemming, the stems memoised (the
    same tokens; a long response repeats its words, and stemming each again dominated its cost)."""
    from nltk.stem import porter
    from rouge_score import rouge_scorer, tokenize, tokenizers

    class MemoStemmer:
        stem = staticmethod(functools.lru_cache(maxsize=1 << 16)(porter.PorterStemmer().stem))

    class Tokenizer(tokenizers.Tokenizer):
        def tokenize(self, text):
            return tokenize.tokenize(text, MemoStemmer)

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True, tokenizer=Tokenizer())


def rouge_mean_f1(reference: str, hypothesis: str) -> float:
    s = _rouge().score(reference or "", hypothesis or "")
    return (s["rouge1"].fmeasure + s["rouge2"].fmeasure + s["rougeL"].fmeasure) / 3.0


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = (reference or "").split(), (hypothesis or "").split()
    prev = list(range(len(hyp) + 1))
    for i, rw in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, hw in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1] / max(1, len(ref))


def _to_float(s: str):
    try:
        return float((s or "").replace(",", ""))
    except ValueError:
        return None


def _yes_no(s: str) -> str:
    s = s.lower().strip()
    return "yes" if s in ("yes", "true", "1") else "no" if s in ("no", "false", "0") else s


def accuracy(route: str, response: str, gt: str, timeout: float = GRADER_TIMEOUT) -> float:
    """Accuracy of an already preprocessed response/ground truth under one route."""
    if route == MATH:
        return float(math_equal(extract(gt, False) or gt, extract(response, False), timeout))
    ans, gt_ans = extract(response, True), extract(gt, True)
    if route == MC:
        a, g = mcq_letter(ans), mcq_letter(gt_ans)
        if a and g:
            return float(a.upper() == g.upper())
        return float(symbolic_equal(ans.strip(), gt_ans.strip(), timeout, method="mathruler"))
    if route == NUM:
        a, g = _to_float(ans), _to_float(gt_ans)
        return float(a is not None and g is not None and round(a, 2) == round(g, 2))
    if route == OCR:
        return max(0.0, min(1.0, 1.0 - word_error_rate(gt_ans.lower(), ans.lower())))
    if route == BOOL:
        return float(_yes_no(ans) == _yes_no(gt_ans))
    if not ans or not gt_ans:
        return 0.0
    if len(gt_ans) <= 10 and ans.lower().strip() == gt_ans.lower().strip():
        return 1.0
    return max(0.0, min(1.0, rouge_mean_f1(gt_ans, ans)))


def length_penalty(length: int, max_response_length: int = MAX_RESPONSE_LENGTH,
                   buffer: int = OVERLONG_BUFFER) -> float:
    """0 up to ``max - buffer``, then linear down to -1 at ``max``; -1 beyond."""
    expected = max_response_length - buffer
    if length <= expected:
        return 0.0
    if length <= max_response_length:
        return (expected - length) / buffer
    return -1.0


def released_score(response: str, ground_truth, problem_type, response_length: int | None = None, *,
                   max_response_length: int = MAX_RESPONSE_LENGTH, overlong_buffer: int = OVERLONG_BUFFER,
                   format_weight: float = 0.1, overlong_factor: float = 0.1,
                   timeout: float = GRADER_TIMEOUT) -> dict:
    """``{"score", "acc", "format", "length_penalty", "error"}`` of one response under the
    released rules (module docstring). ``response_length`` in tokens; None -> characters of the
    preprocessed response, as the released code falls back to."""
    try:
        response = normalize_response(response)
        gt = preprocess_truth(preprocess_truth(ground_truth))
        route = ROUTES.get((problem_type or "").lower().strip(), OPEN)
        acc = accuracy(route, response, gt, timeout)
        if route != MATH:
            return {"score": acc, "acc": acc, "format": 0.0, "length_penalty": 0.0, "error": 0.0}
        fmt = 1.0 if format_ok(response) else 0.0
        pen = length_penalty(len(response) if response_length is None else int(response_length),
                             max_response_length, overlong_buffer)
        score = (1 - format_weight) * acc + format_weight * fmt + overlong_factor * pen
        return {"score": score, "acc": acc, "format": fmt, "length_penalty": pen, "error": 0.0}
    except Exception:  # the released code scores any failure as all zeros
        return {"score": 0.0, "acc": 0.0, "format": 0.0, "length_penalty": 0.0, "error": 1.0}
