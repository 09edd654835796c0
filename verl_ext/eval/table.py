"""The Markdown table: our numbers beside the paper's Table 2 (accuracy %, Qwen3-VL-8B-Instruct)."""

from __future__ import annotations

import math
from typing import Mapping

from verl_ext.eval.scorers import BENCHMARKS

COLUMNS = {"mmmu": "MMMU", "mathvista": "MathVista", "mathvision": "MathVision", "zerobench": "ZeroBench", "wemath": "WeMath"}

# Table 2 of the paper: MMMU, MathVista, MathVision, ZeroBench, WeMath, Avg.
PAPER_TABLE2: dict[str, tuple[float, float, float, float, float, float]] = {
    "Qwen3-VL-8B-Instruct": (62.44, 73.80, 47.37, 19.76, 54.10, 51.49),
    "GRPO": (65.11, 76.20, 48.82, 22.60, 56.57, 53.86),
    "OPSD": (63.82, 75.10, 47.53, 21.06, 54.95, 52.49),
    "SDPO": (65.11, 74.00, 47.27, 25.15, 52.19, 52.74),
    "GRPO+OPSD": (63.22, 75.90, 48.52, 22.16, 54.76, 52.91),
    "RLSD": (67.22, 78.10, 52.73, 24.85, 58.00, 56.18),
}


def _fmt(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def average(scores: Mapping[str, float]) -> float | None:
    """Mean of the five headline scores; None unless all five are present."""
    vals = [scores.get(b) for b in BENCHMARKS]
    if any(v is None or math.isnan(v) for v in vals):
        return None
    return sum(vals) / len(vals)  # type: ignore[arg-type]


def markdown_table(scores: Mapping[str, float], label: str, results: Mapping[str, Mapping] | None = None) -> str:
    """Paper rows, our row (``label``), and, when ``label`` names a paper row, our minus the paper's.

    ``scores``: headline score (%) per benchmark key; missing benchmarks show as a dash and leave
    the average empty. ``results`` (per-benchmark result dicts) adds a details section.
    """
    head = "| method | " + " | ".join(COLUMNS[b] for b in BENCHMARKS) + " | Avg |"
    lines = [head, "|" + "---|" * (len(BENCHMARKS) + 2)]
    for name, row in PAPER_TABLE2.items():
        lines.append(f"| {name} (paper) | " + " | ".join(_fmt(v) for v in row) + " |")
    ours = [scores.get(b) for b in BENCHMARKS]
    avg = average(scores)
    lines.append(f"| **{label} (ours)** | " + " | ".join(_fmt(v) for v in ours) + f" | {_fmt(avg)} |")
    match = {k.lower(): k for k in PAPER_TABLE2}.get(label.lower())
    if match:
        paper = PAPER_TABLE2[match]
        deltas = [None if o is None else o - p for o, p in zip(ours, paper[:5])]
        d_avg = None if avg is None else avg - paper[5]
        lines.append(f"| Δ ours − paper ({match}) | " + " | ".join(_signed(d) for d in deltas) + f" | {_signed(d_avg)} |")
    out = "\n".join(lines) + "\n"
    out += (
        "\nHeadlines: accuracy for MMMU, MathVista, MathVision; ZeroBench sub-question accuracy; "
        "WeMath strict group score over its problem groups. Avg = mean of the five.\n"
    )
    if results:
        out += "\n| benchmark | split(s) | n | accuracy (rows) | headline | notes |\n|---|---|---|---|---|---|\n"
        for b in BENCHMARKS:
            r = results.get(b)
            if not r:
                continue
            m = r["metrics"]
            notes = ""
            if b == "wemath":
                g = m.get("groups", {})
                notes = (
                    f"groups {g.get('groups', 0)} (incomplete {g.get('incomplete_groups', 0)}); loose score "
                    f"{_fmt(g.get('score_loose'))}; strict IK {_fmt(g.get('IK_strict'))} IG {_fmt(g.get('IG_strict'))} "
                    f"CM {_fmt(g.get('CM_strict'))} RM {_fmt(g.get('RM_strict'))}"
                )
            elif b == "zerobench":
                notes = "; ".join(
                    f"{k[len('accuracy_'):]} {_fmt(v)} (n={m.get('n_' + k[len('accuracy_'):])})"
                    for k, v in m.items()
                    if k.startswith("accuracy_") and k != "accuracy_by_problem_type"
                )
            splits = ", ".join(r.get("splits", {}))
            out += f"| {COLUMNS[b]} | {splits} | {m['n']} | {_fmt(m['accuracy'])} | {_fmt(m['score'])} | {notes} |\n"
    return out


def _signed(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2f}"
