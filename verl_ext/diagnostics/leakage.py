"""Leakage and stability diagnostics as pure functions; metric names start with ``diag/``.

Answer leakage: a teacher that saw the answer can teach the student to *state* it instead of
deriving it. Two signals:

- :func:`answer_leak_metrics`: the fraction of responses whose text *before the final answer*
  contains the ground-truth answer. An honest derivation also writes the answer in its reasoning,
  so the value is for comparing methods and steps, not an absolute rate; the mean relative
  position of the first mention (0 = first character) tells "stated up front" from "derived".
- :func:`answer_token_metrics`: the mean ``delta = log pi_T - log pi_S`` over the tokens inside the
  final ``<answer>...</answer>``, and its excess over the other tokens of the same responses. For
  OPSD/SDPO delta *is* the advantage, so a large excess is the push toward copying the answer.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

import torch

from verl_ext.diagnostics.tokens import answer_token_mask, token_pieces

_LATEX_NOISE = re.compile(r"\\left|\\right|\\!|\\,|\\;|\$")
_SPACE = re.compile(r"\s+")
_BOXED_RE = re.compile(r"^\\boxed\{(.*)\}$", re.DOTALL)


def normalize_answer(text: str) -> str:
    """NFKC, drop ``$``, ``\\left``/``\\right`` and LaTeX thin spaces, unwrap one ``\\boxed{..}``,
    collapse whitespace to one space, case-fold, strip surrounding spaces and a trailing period."""
    s = unicodedata.normalize("NFKC", str(text))
    s = _LATEX_NOISE.sub("", s).strip()
    s = s[:-1].rstrip() if s.endswith(".") else s
    m = _BOXED_RE.match(s)
    if m:
        s = m.group(1)
    s = _SPACE.sub(" ", s).casefold().strip()
    return s[:-1].rstrip() if s.endswith(".") else s


def text_before_answer(text: str) -> str:
    """The part of ``text`` before its final answer: before the last ``<answer>`` tag, else before
    the last ``\\boxed``, else the whole text (no final answer: every mention counts)."""
    for tag in ("<answer>", "\\boxed"):
        pos = text.rfind(tag)
        if pos >= 0:
            return text[:pos]
    return text


def _answer_pattern(answer: str) -> re.Pattern | None:
    a = normalize_answer(answer)
    if not a:
        return None
    if len(a) == 1 and a.isalpha():
        # An option letter is also an English word ("a"): only option-like forms count.
        return re.compile(rf"\({a}\)|\b(?:option|choice|answer is|answer:)\s*\(?{a}\b")
    # Not part of a longer number or word: "12" matches "x = 12." but not "3.12", "120" or "x12".
    lead = r"(?<![0-9a-z.])" if a[0].isalnum() else ""
    trail = r"(?![0-9a-z]|\.[0-9])" if a[-1].isalnum() else ""
    return re.compile(lead + re.escape(a) + trail)


def find_answer_mention(text: str, answer: str) -> int | None:
    """Character offset (in the normalised text) of the first mention of ``answer`` in ``text``
    before its final answer (:func:`text_before_answer`), or None. Matching as in :func:`normalize_answer`."""
    pattern = _answer_pattern(answer)
    if pattern is None:
        return None
    m = pattern.search(normalize_answer(text_before_answer(text)))
    return None if m is None else m.start()


def answer_leak_metrics(responses: Sequence[str], ground_truths: Sequence[str | None]) -> dict[str, float]:
    """``diag/answer_leak_frac``: leaking responses / evaluated responses (those with a non-empty
    ground truth; 0.0 when none); ``diag/answer_leak_first_pos``: mean over leaking responses of
    (first mention offset / normalised response length); ``diag/answer_leak_evaluated``: the count."""
    if len(responses) != len(ground_truths):
        raise ValueError(f"answer_leak_metrics: {len(responses)} responses but {len(ground_truths)} ground truths")
    evaluated, leaks, positions = 0, 0, []
    for text, gt in zip(responses, ground_truths):
        if gt is None or not normalize_answer(gt):
            continue
        evaluated += 1
        pos = find_answer_mention(text or "", gt)
        if pos is not None:
            leaks += 1
            positions.append(pos / max(len(normalize_answer(text)), 1))
    return {
        "diag/answer_leak_frac": leaks / evaluated if evaluated else 0.0,
        "diag/answer_leak_first_pos": sum(positions) / len(positions) if positions else 0.0,
        "diag/answer_leak_evaluated": float(evaluated),
    }


def answer_token_masks(tokenizer, response_ids: Sequence[Sequence[int]], response_mask: torch.Tensor, window: int = 256) -> torch.Tensor:
    """``[B, T]`` bool: the tokens inside each row's last ``<answer>...</answer>`` block, searched
    among the row's last ``window`` valid tokens only (decoding whole long responses per token is
    slow; an answer longer than the window counts as no block)."""
    out = torch.zeros(response_mask.shape, dtype=torch.bool)
    for i, ids in enumerate(response_ids):
        n = int(response_mask[i].sum())
        lo = max(0, n - int(window))
        mask = answer_token_mask(token_pieces(tokenizer, list(ids)[lo:n]))
        out[i, lo:n] = torch.tensor(mask, dtype=torch.bool)
    return out


def answer_token_metrics(
    teacher_log_probs: torch.Tensor,
    student_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    answer_mask: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> dict[str, float]:
    """All ``[B, T]`` (``valid``: ``[B]``). Over rows that are valid and have answer tokens:

    - ``diag/answer_token_teacher_excess``: mean of ``teacher - student`` over answer tokens;
    - ``diag/answer_token_excess_vs_rest``: that minus the mean over the same rows' other tokens;
    - ``diag/answer_block_frac``: rows with answer tokens / valid rows.

    Means are token-level (pooled over rows); 0.0 when there are no such tokens.
    """
    m = response_mask.bool()
    if valid is not None:
        m = m & valid.bool().to(m.device).unsqueeze(-1)
    ans = m & answer_mask.bool()
    has = ans.any(dim=-1)
    rest = m & ~ans & has.unsqueeze(-1)
    delta = teacher_log_probs.detach().float() - student_log_probs.detach().float()
    n_ans, n_rest = int(ans.sum()), int(rest.sum())
    excess = float(delta[ans].mean()) if n_ans else 0.0
    other = float(delta[rest].mean()) if n_rest else 0.0
    rows = int(m.any(dim=-1).sum())
    return {
        "diag/answer_token_teacher_excess": excess,
        "diag/answer_token_excess_vs_rest": excess - other if n_ans and n_rest else 0.0,
        "diag/answer_block_frac": int(has.sum()) / rows if rows else 0.0,
    }


def stability_metrics(
    advantages: torch.Tensor, seq_advantages: torch.Tensor, teacher_log_probs: torch.Tensor,
    student_log_probs: torch.Tensor, response_mask: torch.Tensor,
) -> dict[str, float]:
    """Cheap signals verl does not log (it logs entropy, PPO clip fraction, KL and grad norm):

    - ``diag/delta_abs_p99``: 99th percentile of ``|teacher - student|`` over valid tokens (teacher spikes);
    - ``diag/token_adv_spread``: mean over rows with ``A_i != 0`` of std_t(A_hat_t) / |A_i|, how
      unevenly credit is spread inside a response (0 for GRPO);
    - ``diag/token_adv_sign_flip_frac``: valid tokens whose advantage sign differs from ``sign(A_i)``
      among rows with ``A_i != 0`` (RLSD keeps it 0 by construction; OPSD/GRPO+OPSD need not).
    """
    m = response_mask.bool()
    delta = (teacher_log_probs.detach().float() - student_log_probs.detach().float())[m]
    # kthvalue, not quantile: quantile refuses inputs above 16M elements
    p99 = float(delta.abs().kthvalue(max(1, -(-99 * delta.numel() // 100))).values) if delta.numel() else 0.0
    a = seq_advantages.detach().float()
    nz = a != 0
    adv = advantages.detach().float()
    mf = m.float()
    n_row = mf.sum(-1)
    mean = (adv * mf).sum(-1) / n_row.clamp(min=1)
    std = (((adv - mean.unsqueeze(-1)) ** 2 * mf).sum(-1) / n_row.clamp(min=1)).sqrt()  # population std
    rows = nz & (n_row > 1)
    spreads = (std[rows] / a[rows].abs()).tolist()
    mm = m & nz.unsqueeze(-1)
    flips = (torch.sign(adv) != torch.sign(a).unsqueeze(-1)) & mm
    n = int(mm.sum())
    return {
        "diag/delta_abs_p99": p99,
        "diag/token_adv_spread": sum(spreads) / len(spreads) if spreads else 0.0,
        "diag/token_adv_sign_flip_frac": int(flips.sum()) / n if n else 0.0,
    }
