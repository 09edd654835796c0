"""Rule-based scorers for the five benchmarks (no judge model).

Each ``score_<bench>(response, ground_truth, extra_info)`` is a pure function returning
``{"extracted": str, "pred": str | None, "correct": bool}``: ``extracted`` is what
:func:`verl_ext.eval.extract.extract_answer` read from the response, ``pred`` the normalised
prediction that was compared (a letter for multiple choice). ``extra_info`` is the parquet row's
``extra_info`` dict (see the data contract: ``options``, ``problem_type``, ``precision`` ...).

Rules (bump :data:`SCORER_VERSION` whenever one changes, it is written into every result file):

* MMMU: multiple choice by letter extraction (bracketed letter, then a bare letter, then the option
  text); open questions by numeric equality after rounding to 2 decimals, or normalised string
  equality; the gold of an open question may be a list literal of accepted answers.
  Unlike MMMU's reference code, an unparseable response is wrong, never a random guess.
* MathVista: multiple choice by letter or option text; ``integer`` answers compare ``int(float(x))``
  (MathVista's cast), ``float`` answers compare after rounding both sides to ``precision``;
  ``list`` answers element-wise; ``text`` by normalised string. MathVista's reference uses a GPT
  answer extractor; we use rules.
* MathVision: multiple choice by letter; free-form by mathruler's ``grade_answer`` or math-verify's
  ``verify`` (either one accepting is enough).
* ZeroBench: normalised exact match (lowercase, no quotes, no trailing period) or numeric equality.
* WeMath: letter accuracy per row; group metrics in :func:`wemath_group_metrics`.
"""

from __future__ import annotations

import ast
import math
import re
import threading
from collections import defaultdict
from typing import Any, Callable, Iterable, Mapping

from verl_ext.eval.extract import extract_answer

SCORER_VERSION = "1.0"
BENCHMARKS = ("mmmu", "mathvista", "mathvision", "zerobench", "wemath")
# Evaluated on request (--benchmarks synthetic), outside the paper's Table 2 and its average.
EXTRA_BENCHMARKS = ("synthetic",)
# Text math benchmarks (text-only models; answers in \\boxed{}), and the generated text CPU set.
TEXT_BENCHMARKS = ("math500", "aime24", "aime25", "arithmetic")
EXTRA_BENCHMARKS = EXTRA_BENCHMARKS + TEXT_BENCHMARKS
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# ----------------------------------------------------------------------------------------------
# normalisation helpers

_LATEX_WRAPPERS = re.compile(r"\\(?:text|mathrm|textbf|mathbf|operatorname)\s*\{([^{}]*)\}")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def strip_latex(s: str) -> str:
    """Remove ``\\text{..}``-style wrappers, ``$`` delimiters and ``\\left``/``\\right``."""
    prev = None
    while prev != s:
        prev, s = s, _LATEX_WRAPPERS.sub(r"\1", s)
    s = s.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    s = s.replace("\\%", "%").replace("$", "")
    s = s.replace("\u2212", "-").replace("\u2013", "-")  # unicode minus / en dash
    return s.strip()


def normalize_text(s: Any) -> str:
    """Lowercase, LaTeX wrappers and surrounding quotes removed, no trailing period, one space."""
    s = strip_latex(str(s)).lower().strip()
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"\s*,\s*", ", ", s)
    s = s.strip(" \"'`")
    s = s.rstrip(".").strip(" \"'`")
    return s


def to_number(s: Any) -> float | None:
    """Strict numeric parse of a whole string: ``1,234``, ``-3.5``, ``12%``, ``$5``, ``1/4``,
    ``\\frac{1}{4}``, ``2e3``; a trailing unit word is allowed (``5 cm``). None if not a number."""
    if s is None:
        return None
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        return float(s)
    t = strip_latex(str(s)).strip().rstrip(".").strip()
    t = re.sub(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}", r"(\1)/(\2)", t)
    t = t.replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "").replace("\\circ", "")
    t = t.replace("%", "").replace("\\", "").strip()
    t = re.sub(r"^[a-zA-Z]\s*=\s*", "", t)  # "x = 5"
    t = re.sub(r"\s*[a-zA-Z][a-zA-Z ]*(\^\{?\d\}?)?\.?$", "", t) if re.search(r"\d", t) else t  # units, cm^2
    t = t.strip()
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", t):
        t = t.replace(",", "")
    m = re.fullmatch(r"\(?([-+]?\d*\.?\d+)\)?\s*/\s*\(?([-+]?\d*\.?\d+)\)?", t)
    if m:
        den = float(m.group(2))
        return float(m.group(1)) / den if den != 0 else None
    try:
        v = float(t)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def last_number(s: str) -> float | None:
    """The last number written in ``s`` (thousands separators allowed), else None."""
    found = _NUMBER.findall(strip_latex(str(s)))
    return float(found[-1].replace(",", "")) if found else None


def number_of(s: str) -> float | None:
    """``to_number`` of the whole string, falling back to the last number in it."""
    v = to_number(s)
    return v if v is not None else last_number(s)


def numbers_equal(a: float, b: float, rel: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


# ----------------------------------------------------------------------------------------------
# multiple choice


def parse_choice(pred: str, options: list[str] | None, n_letters: int | None = None) -> str | None:
    """The option letter a prediction names, in the style of MMMU's ``parse_multi_choice_response``.

    Order: the whole prediction is one letter; a bracketed ``(B)``; a letter standing alone
    (``B``, ``B.``, ``B:``, ``Answer: B``); the text of an option (exact normalised/numeric match,
    else the option text found latest in the prediction). With several candidates of one kind, the
    last one written wins. ``n_letters`` gives the letter range when the options are not listed
    (choices printed in the image). Returns None if nothing matches.
    """
    options = list(options or [])
    k = len(options) if options else (n_letters or 5)
    letters = LETTERS[:k]
    s = strip_latex(str(pred)).strip()
    core = s.strip(" .,:;!?'\"()[]{}*")
    if len(core) == 1 and core.upper() in letters and (core.isupper() or len(s) <= 3):
        return core.upper()
    norm_pred = normalize_text(s)
    num_pred = to_number(s)
    for i, opt in enumerate(options):
        if normalize_text(opt) == norm_pred:
            return letters[i]
    bracketed = [(m.start(), m.group(1)) for m in re.finditer(r"\(([A-Z])\)", s) if m.group(1) in letters]
    if bracketed:
        return max(bracketed)[1]
    # a capital letter not part of a word: "B", "B.", "answer is B", "B: 12"
    alone = [
        (m.start(), m.group(1))
        for m in re.finditer(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9'])", s)
        if m.group(1) in letters and not _is_article(s, m.start())
    ]
    if alone:
        return max(alone)[1]
    if not options:
        return None
    for i, opt in enumerate(options):
        num_opt = to_number(opt)
        if num_pred is not None and num_opt is not None and numbers_equal(num_pred, num_opt):
            return letters[i]
    spans = []  # (start, end, letter) of each option text's last occurrence
    for i, opt in enumerate(options):
        o = normalize_text(opt)
        if o and o in norm_pred:
            start = norm_pred.rfind(o)
            spans.append((start, start + len(o), letters[i]))
    # an option found only inside a longer option's match ("5 cm" in "15 cm") does not count
    spans = [a for a in spans if not any(b != a and b[0] <= a[0] and a[1] <= b[1] for b in spans)]
    return max(spans)[2] if spans else None


def _is_article(s: str, pos: int) -> bool:
    """``A`` used as the English article (``A triangle has``), not as an option letter."""
    if s[pos] != "A":
        return False
    rest = s[pos + 1 :]
    m = re.match(r" ([a-z]+)", rest)
    return bool(m) and m.group(1) not in ("is", "and", "or", "was", "seems", "fits", "matches")


def _gold_letter(ground_truth: str, options: list[str]) -> str | None:
    """Gold as a letter: the ground truth itself, or the letter of the option it spells out."""
    g = str(ground_truth).strip().strip("()").rstrip(".")
    if len(g) == 1 and g.upper() in LETTERS:
        return g.upper()
    for i, opt in enumerate(options or []):
        if normalize_text(opt) == normalize_text(ground_truth):
            return LETTERS[i]
    return None


def _options(extra_info: Mapping[str, Any]) -> list[str]:
    opts = extra_info.get("options")
    if opts is None:
        return []
    if isinstance(opts, str):  # a list literal kept as a string
        try:
            opts = ast.literal_eval(opts)
        except (ValueError, SyntaxError):
            return [opts]
    out = [str(o) for o in list(opts)]
    # drop "A. " / "(A) " labels written into the option texts themselves
    labelled = [re.match(rf"^\(?{LETTERS[i]}[.):]\s*", o) for i, o in enumerate(out)]
    if out and all(labelled):
        out = [o[m.end():] for o, m in zip(out, labelled)]
    return out


def _is_multiple_choice(extra_info: Mapping[str, Any], ground_truth: str) -> bool:
    pt = str(extra_info.get("problem_type", "") or extra_info.get("question_type", "")).lower()
    if "choice" in pt:
        return True
    if pt in ("math", "numerical", "open", "free_form", "free-form"):
        return False
    return bool(_options(extra_info))


def _mc_result(extracted: str, ground_truth: str, options: list[str], n_letters: int | None = None):
    pred = parse_choice(extracted, options, n_letters)
    gold = _gold_letter(ground_truth, options)
    if gold is None:
        raise ValueError(f"multiple-choice ground truth {ground_truth!r} is neither a letter nor an option")
    return {"extracted": extracted, "pred": pred, "correct": pred is not None and pred == gold}


# ----------------------------------------------------------------------------------------------
# per-benchmark scorers


def score_mmmu(response: str, ground_truth: str, extra_info: Mapping[str, Any]) -> dict:
    ext = extract_answer(response)
    opts = _options(extra_info)
    if _is_multiple_choice(extra_info, ground_truth):
        return _mc_result(ext, ground_truth, opts)
    golds = _gold_list(ground_truth)
    ok = any(_open_match(ext, g, decimals=2) for g in golds)
    return {"extracted": ext, "pred": normalize_text(ext), "correct": ok}


def _gold_list(ground_truth: str) -> list[str]:
    g = str(ground_truth).strip()
    if g.startswith("[") and g.endswith("]"):
        try:
            vals = ast.literal_eval(g)
            if isinstance(vals, (list, tuple)) and vals:
                return [str(v) for v in vals]
        except (ValueError, SyntaxError):
            pass
    return [g]


def _open_match(pred: str, gold: str, decimals: int | None = None) -> bool:
    gnum = to_number(gold)
    if gnum is not None:
        pnum = number_of(pred)
        if pnum is None:
            return False
        if decimals is not None:
            return round(pnum, decimals) == round(gnum, decimals)
        return numbers_equal(pnum, gnum)
    return normalize_text(pred) == normalize_text(gold)


def score_mathvista(response: str, ground_truth: str, extra_info: Mapping[str, Any]) -> dict:
    ext = extract_answer(response)
    opts = _options(extra_info)
    qtype = str(extra_info.get("question_type", "")).lower()
    if qtype == "multi_choice" or _is_multiple_choice(extra_info, ground_truth):
        res = _mc_result(ext, ground_truth, opts)
        if res["pred"] is not None and opts and LETTERS.index(res["pred"]) < len(opts):
            res["pred_text"] = opts[LETTERS.index(res["pred"])]
        return res
    atype = str(extra_info.get("answer_type", "") or "text").lower()
    precision = _precision(extra_info.get("precision"))
    unit = str(extra_info.get("unit") or "").strip()
    cand = ext
    if unit and cand.endswith(unit):
        cand = cand[: -len(unit)].strip()
    if atype == "integer":
        p, g = number_of(cand), to_number(ground_truth)
        if g is None:
            raise ValueError(f"mathvista integer answer {ground_truth!r} is not a number")
        ok = p is not None and int(p) == int(g)
        return {"extracted": ext, "pred": None if p is None else str(int(p)), "correct": ok}
    if atype == "float":
        p, g = number_of(cand), to_number(ground_truth)
        if g is None:
            raise ValueError(f"mathvista float answer {ground_truth!r} is not a number")
        d = precision if precision is not None else 2
        ok = p is not None and round(p, d) == round(g, d)
        return {"extracted": ext, "pred": None if p is None else str(round(p, d)), "correct": ok}
    if atype == "list":
        p, g = _number_list(cand), _number_list(ground_truth)
        if g is None:
            raise ValueError(f"mathvista list answer {ground_truth!r} is not a list of numbers")
        ok = p is not None and len(p) == len(g) and all(
            (round(a, precision) == round(b, precision)) if precision is not None else numbers_equal(a, b)
            for a, b in zip(p, g)
        )
        return {"extracted": ext, "pred": None if p is None else str(p), "correct": ok}
    return {"extracted": ext, "pred": normalize_text(cand), "correct": normalize_text(cand) == normalize_text(ground_truth)}


def _precision(p: Any) -> int | None:
    if p is None:
        return None
    try:
        f = float(p)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else int(f)


def _number_list(s: str) -> list[float] | None:
    """``[1, 2.5]``, ``(1, 2.5)`` or ``1, 2.5`` as floats; None unless every element is a number."""
    t = strip_latex(str(s)).strip().strip("[]()").strip()
    if not t:
        return None
    parts = [x.strip() for x in re.split(r"\s*[,;]\s*", t)]
    vals = [to_number(x) for x in parts]
    return None if any(v is None for v in vals) else vals  # type: ignore[return-value]


def score_mathvision(response: str, ground_truth: str, extra_info: Mapping[str, Any]) -> dict:
    ext = extract_answer(response)
    opts = _options(extra_info)
    gt = str(ground_truth).strip()
    if opts or _is_multiple_choice(extra_info, gt) or re.fullmatch(r"[A-E]", gt):
        return _mc_result(ext, gt, opts, n_letters=5)
    return {"extracted": ext, "pred": ext, "correct": math_equal(ext, gt)}


def math_equal(pred: str, gold: str) -> bool:
    """LaTeX-aware equality: mathruler's ``grade_answer`` or math-verify's ``verify``."""
    if not str(pred).strip():
        return False
    from mathruler.grader import grade_answer

    try:
        if grade_answer(str(pred), str(gold)):
            return True
    except Exception:  # mathruler raises on malformed LaTeX: treat as not equal
        pass
    from math_verify import parse, verify

    # math-verify's timeout uses signal.alarm, which only works in the main thread (verl calls
    # reward functions from executor threads): elsewhere run without its timeout.
    t = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        g = parse("$" + str(gold) + "$", parsing_timeout=t)
        p = parse("$" + str(pred) + "$", parsing_timeout=t)
        return bool(g) and bool(p) and bool(verify(g, p, timeout_seconds=t))
    except Exception:  # malformed LaTeX or a timeout: not equal
        return False


def score_zerobench(response: str, ground_truth: str, extra_info: Mapping[str, Any]) -> dict:
    ext = extract_answer(response)
    return {"extracted": ext, "pred": normalize_text(ext), "correct": zerobench_match(ext, ground_truth)}


def zerobench_match(pred: str, gold: str) -> bool:
    """Normalised exact match, or numeric equality when both sides are numbers."""
    if normalize_text(pred) == normalize_text(gold):
        return True
    g, p = to_number(gold), to_number(pred)
    return g is not None and p is not None and numbers_equal(g, p)


def score_wemath(response: str, ground_truth: str, extra_info: Mapping[str, Any]) -> dict:
    ext = extract_answer(response)
    return _mc_result(ext, ground_truth, _options(extra_info), n_letters=8)  # A-H when unlisted


def score_synthetic(response: str, ground_truth: str, extra_info: Mapping[str, Any]) -> dict:
    """The generated CPU set (``data_prep/converters/synthetic.py``): correct exactly when the training reward's
    accuracy is 1 (``verl_ext.reward.compute_score``), so training and evaluation agree."""
    from verl_ext.reward import compute_score
    from verl_ext.reward import extract_answer as reward_answer

    out = compute_score("synthetic", response, ground_truth, dict(extra_info))
    ext = reward_answer(response)
    return {"extracted": ext, "pred": ext, "correct": out["acc"] == 1.0}


def score_text_math(response: str, ground_truth: str, extra_info: Mapping[str, Any]) -> dict:
    """The text math prompt asks for the final answer in ``\\boxed{}``: the last box, LaTeX-aware equality
    (mathruler, then math-verify) as for MathVision's free-form answers."""
    from verl_ext.reward.extract import last_boxed

    ext = last_boxed(response)
    ext = "" if ext is None else ext.strip()
    return {"extracted": ext, "pred": ext, "correct": math_equal(ext, str(ground_truth).strip())}


SCORERS: dict[str, Callable[[str, str, Mapping[str, Any]], dict]] = {
    "mmmu": score_mmmu,
    "mathvista": score_mathvista,
    "mathvision": score_mathvision,
    "zerobench": score_zerobench,
    "wemath": score_wemath,
    "synthetic": score_synthetic,
    **{b: score_text_math for b in TEXT_BENCHMARKS},
}


def score(benchmark: str, response: str, ground_truth: str, extra_info: Mapping[str, Any]) -> dict:
    if benchmark not in SCORERS:
        raise KeyError(f"no scorer for benchmark {benchmark!r}; known: {', '.join(SCORERS)}")
    return SCORERS[benchmark](response, ground_truth, extra_info or {})


# ----------------------------------------------------------------------------------------------
# aggregation


def wemath_group_metrics(rows: Iterable[Mapping[str, Any]]) -> dict:
    """We-Math's four-dimensional metrics over problem groups.

    ``rows``: dicts with ``group_id``, ``key`` (``2steps_1``, ``2steps_2``, ``2steps_multi``,
    ``3steps_1..3``, ``3steps_multi``) and ``correct``. One group = the one-step sub-questions
    ``s_i`` and the composite question ``m`` of an ID. With ``all_s`` = every sub-question right,
    ``any_s`` = at least one right:

    * IK (insufficient knowledge) = not all_s and not m;  IG (inadequate generalisation) = all_s
      and not m
    * strict: CM = all_s and m, RM = not all_s and m;  loose: CM = any_s and m, RM = no s and m
    * Score = (N - 0.5 IG - RM - IK) / N over the N complete groups; rates IK/N, IG/N, CM/N and
      RM / (CM + RM), as in We-Math's reference script.

    Groups without their composite row or without any sub-question are counted in
    ``incomplete_groups`` and left out of N (e.g. with ``--limit``).
    """
    groups: dict[str, dict[str, bool]] = defaultdict(dict)
    for r in rows:
        gid, key = str(r["group_id"]), str(r["key"])
        if not re.fullmatch(r"\d+steps_(\d+|multi)", key):
            raise ValueError(f"wemath row of group {gid}: unexpected key {key!r}")
        if key in groups[gid]:
            raise ValueError(f"wemath group {gid}: key {key!r} appears twice")
        groups[gid][key] = bool(r["correct"])
    c = dict.fromkeys(["IK", "IG", "CM_strict", "RM_strict", "CM_loose", "RM_loose"], 0)
    n = incomplete = 0
    for gid, g in groups.items():
        multi = [v for k, v in g.items() if k.endswith("_multi")]
        subs = [v for k, v in g.items() if not k.endswith("_multi")]
        steps = int(next(iter(g)).split("steps")[0])
        if len(multi) != 1 or len(subs) != steps:
            incomplete += 1
            continue
        n += 1
        m, all_s, any_s = multi[0], all(subs), any(subs)
        c["IK"] += (not all_s) and (not m)
        c["IG"] += all_s and (not m)
        c["CM_strict"] += all_s and m
        c["RM_strict"] += (not all_s) and m
        c["CM_loose"] += any_s and m
        c["RM_loose"] += (not any_s) and m
    out: dict[str, Any] = {"groups": n, "incomplete_groups": incomplete, "counts": dict(c)}
    if n == 0:
        return out
    for mode in ("strict", "loose"):
        cm, rm = c[f"CM_{mode}"], c[f"RM_{mode}"]
        out[f"score_{mode}"] = 100.0 * (n - 0.5 * c["IG"] - rm - c["IK"]) / n
        out[f"IK_{mode}"] = 100.0 * c["IK"] / n
        out[f"IG_{mode}"] = 100.0 * c["IG"] / n
        out[f"CM_{mode}"] = 100.0 * cm / n
        out[f"RM_{mode}"] = 100.0 * rm / (cm + rm) if cm + rm else 0.0
    return out


def _acc(rs: list) -> float:
    return 100.0 * sum(bool(r["correct"]) for r in rs) / len(rs) if rs else float("nan")


def aggregate(benchmark: str, records: list[Mapping[str, Any]]) -> dict:
    """Benchmark metrics (percentages) from per-sample records, and the headline ``score``.

    Records carry ``correct`` and the row's scorer keys (``problem_type``, ``variant``,
    ``group_id``, ``key``). Headlines: micro accuracy for MMMU, MathVista and MathVision;
    ZeroBench sub-question accuracy (main-split accuracy if only that is present); WeMath the
    strict group score.
    """
    m: dict[str, Any] = {"n": len(records), "accuracy": _acc(list(records))}
    questions = defaultdict(list)  # avg@k: ids "<split>:<id>#<r>" share a question
    for r in records:
        questions[str(r.get("id", "")).split("#", 1)[0]].append(bool(r["correct"]))
    k = max((len(v) for v in questions.values()), default=1)
    by = defaultdict(list)
    for r in records:
        by[str(r.get("problem_type") or "")].append(r)
    if len(by) > 1:
        m["accuracy_by_problem_type"] = {k: _acc(v) for k, v in sorted(by.items())}
    m["score"] = m["accuracy"]
    if benchmark == "zerobench":
        var = defaultdict(list)
        for r in records:
            var[str(r.get("variant") or "subquestions")].append(r)
        for k, v in var.items():
            m[f"accuracy_{k}"] = _acc(v)
            m[f"n_{k}"] = len(v)
        m["score"] = m.get("accuracy_subquestions", m.get("accuracy_main", m["accuracy"]))
        m["score_name"] = "subquestions accuracy" if "accuracy_subquestions" in m else "main accuracy"
    elif benchmark == "wemath":
        g = wemath_group_metrics(records)
        m["groups"] = g
        m["score"] = g.get("score_strict", float("nan"))
        m["score_loose"] = g.get("score_loose", float("nan"))
        m["score_name"] = "group score (strict)"
    elif k > 1:
        m["k"], m["questions"] = k, len(questions)
        m["score"] = 100.0 * sum(sum(v) / len(v) for v in questions.values()) / len(questions)
        m[f"avg@{k}"] = m["score"]
        m[f"pass@{k}"] = 100.0 * sum(any(v) for v in questions.values()) / len(questions)
        m["score_name"] = f"avg@{k}"
    else:
        m["score_name"] = "accuracy"
    return m
