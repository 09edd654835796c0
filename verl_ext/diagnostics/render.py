"""Token-credit heatmaps (PNG and self-contained HTML) and training curves from verl's logged metrics.

Colours: matplotlib's diverging ``RdBu`` colormap. For ``delta`` and ``advantage`` it is centred at
0 (red = blame: negative; blue = credit: positive), symmetric at the largest absolute value of the
response. For ``weight`` (RLSD's clipped ``w``) it is centred at 1 (blue: the teacher amplifies the
token's share of ``A_i``, red: it damps it), spanning ``[1 - clip_eps, 1 + clip_eps]``.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import Normalize, TwoSlopeNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from verl_ext.diagnostics.dump import ResponseRecord  # noqa: E402

QUANTITIES = {"delta": "delta", "weight": "w_clipped", "advantage": "advantage"}
CMAP = "RdBu"
_NEWLINE = "\u21b5"  # shown where a token holds a line break
_EMPTY = "\u00b7"  # a token whose text went to the next one (a character split across tokens)


def values_of(record: ResponseRecord, by: str) -> list[float]:
    """The per-token values coloured for ``by`` (``delta`` | ``weight`` | ``advantage``)."""
    if by not in QUANTITIES:
        raise ValueError(f"unknown quantity {by!r}; choose one of {', '.join(QUANTITIES)}")
    values = record.tokens[QUANTITIES[by]]
    if values is None:
        raise ValueError(
            f"step {record.step} row {record.row}: estimator {record.estimator!r} has no RLSD weights; use --by delta or advantage"
        )
    return values


def norm_for(record: ResponseRecord, by: str):
    """The colour normalisation of :mod:`this module's <verl_ext.diagnostics.render>` convention."""
    values = values_of(record, by)
    if by == "weight":
        eps = record.clip_eps if record.clip_eps else max((abs(v - 1.0) for v in values), default=0.0) or 1.0
        return TwoSlopeNorm(vcenter=1.0, vmin=1.0 - eps, vmax=1.0 + eps)
    span = max((abs(v) for v in values), default=0.0) or 1.0
    return Normalize(vmin=-span, vmax=span)


def _title(record: ResponseRecord, by: str) -> str:
    parts = [
        f"step {record.step}", f"row {record.row}", f"uid {record.uid[:8]}", record.estimator,
        f"reward {record.reward:.3g}", f"A {record.seq_advantage:+.3g}",
    ]  # fmt: skip
    if record.lam is not None:
        parts.append(f"lambda {record.lam:.3g}")
    if not record.teacher_valid:
        parts.append("no teacher signal")
    return " | ".join(parts) + f"  —  coloured by {by}"


def layout(pieces: Sequence[str], width: int = 90) -> list[tuple[int, int, str]]:
    """Wrapped monospace layout: ``(line, column, shown text)`` per token. A line break inside a
    token is shown as a return sign and starts a new line; a token never splits across lines
    unless it is longer than ``width`` (then it is cut)."""
    out, line, col = [], 0, 0
    for piece in pieces:
        shown = piece.replace("\t", "    ").replace("\r", "")
        breaks = shown.count("\n")
        shown = shown.replace("\n", _NEWLINE)
        shown = shown[:width] if piece else _EMPTY
        if col + len(shown) > width and col > 0:
            line, col = line + 1, 0
        out.append((line, col, shown))
        col += len(shown)
        if breaks:
            line, col = line + breaks, 0
    return out


def _text_colour(rgba) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def render_png(record: ResponseRecord, path: str | os.PathLike, by: str = "advantage", width: int = 90, max_tokens: int = 2000) -> Path:
    """One response's tokens in wrapped lines on coloured boxes, with a colour bar; returns ``path``."""
    values = values_of(record, by)[:max_tokens]
    cells = layout(record.tokens["text"][:max_tokens], width)
    norm, cmap = norm_for(record, by), plt.get_cmap(CMAP)
    lines = (cells[-1][0] + 1) if cells else 1
    # DejaVu Sans Mono advances 0.602 em: 9 pt -> 0.0753 in per character
    char_w, line_h, top, bottom, left = 0.0753, 0.24, 0.45, 0.3, 0.15
    text_w, text_h = width * char_w, lines * line_h
    fig_w, fig_h = left + text_w + 1.1, top + text_h + bottom
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=120)
    ax = fig.add_axes([left / fig_w, bottom / fig_h, text_w / fig_w, text_h / fig_h])
    ax.set_xlim(0, width)
    ax.set_ylim(lines, 0)
    ax.axis("off")
    for (line, col, shown), v in zip(cells, values):
        colour = cmap(norm(v))
        ax.add_patch(Rectangle((col, line + 0.06), len(shown), 0.88, facecolor=colour, edgecolor="white", linewidth=0.4))
        ax.text(col, line + 0.5, shown, family="DejaVu Sans Mono", fontsize=9, va="center", ha="left", color=_text_colour(colour))
    fig.text(left / fig_w, 1 - 0.08 / fig_h, _title(record, by), fontsize=9, ha="left", va="top")
    bar_h = min(text_h, 2.5)
    cax = fig.add_axes([(left + text_w + 0.25) / fig_w, (bottom + text_h - bar_h) / fig_h, 0.12 / fig_w, bar_h / fig_h])
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.ax.tick_params(labelsize=7)
    bar.set_label(by, fontsize=7)
    if len(record) > max_tokens:
        fig.text(0.01, 0.1 / fig_h, f"(first {max_tokens} of {len(record)} tokens)", fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _css_rgb(rgba) -> str:
    return "rgb({},{},{})".format(*(int(round(255 * c)) for c in rgba[:3]))


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def render_html(records: Sequence[ResponseRecord], path: str | os.PathLike, by: str = "advantage") -> Path:
    """All ``records`` on one self-contained page (inline styles, no scripts or external files);
    each token is a coloured span whose tooltip lists id, log-probs, delta, w, clipped w, advantage."""
    cmap = plt.get_cmap(CMAP)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>token credit</title></head>",
        "<body style='font-family:sans-serif;margin:16px;max-width:1100px'>",
        f"<h2 style='margin:0 0 4px 0'>Token credit, coloured by {html.escape(by)}</h2>",
        "<p style='margin:0 0 12px 0;font-size:13px'>"
        + ("blue: the teacher amplifies the token's share of A (w &gt; 1); red: it damps it (w &lt; 1)"
           if by == "weight" else "blue: credit (positive); red: blame (negative)")
        + ". Hover a token for its numbers.</p>",
    ]  # fmt: skip
    for rec in records:
        values = values_of(rec, by)
        norm = norm_for(rec, by)
        gradient = ",".join(_css_rgb(cmap(x / 10)) for x in range(11))
        parts.append("<section style='margin:0 0 20px 0;border-top:1px solid #ccc;padding-top:8px'>")
        parts.append(f"<div style='font-size:13px;margin-bottom:6px'><b>{html.escape(_title(rec, by))}</b>")
        if rec.ground_truth is not None:
            parts.append(f" &nbsp; ground truth: <code>{html.escape(rec.ground_truth)}</code>")
        parts.append(
            f"<div style='display:inline-block;width:120px;height:10px;margin-left:10px;vertical-align:middle;"
            f"background:linear-gradient(to right,{gradient})'></div> <span style='font-size:11px'>"
            f"{norm.vmin:.3g} &hellip; {norm.vmax:.3g}</span></div>"
        )
        parts.append("<div style='font-family:monospace;font-size:13px;line-height:1.7;white-space:pre-wrap'>")
        t = rec.tokens
        for k, piece in enumerate(t["text"]):
            colour = cmap(norm(values[k]))
            tip = (
                f"#{k} id={t['id'][k]} student={_fmt(t['student_logp'][k])} teacher={_fmt(t['teacher_logp'][k])} "
                f"delta={_fmt(t['delta'][k])} w={_fmt(t['w'][k] if t['w'] else None)} "
                f"w_clipped={_fmt(t['w_clipped'][k] if t['w_clipped'] else None)} advantage={_fmt(t['advantage'][k])}"
            )
            shown = html.escape(piece.replace("\n", _NEWLINE + "\n")) or _EMPTY
            parts.append(
                f"<span title='{html.escape(tip, quote=True)}' style='background:{_css_rgb(colour)};"
                f"color:{_text_colour(colour)};border-radius:2px'>{shown}</span>"
            )
        parts.append("</div></section>")
    parts.append("</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- training curves
# (panel title, metric keys or a key prefix ending in "/"); panels without data are left out.
CURVE_PANELS = (
    ("reward", ("critic/score/mean", "critic/rewards/mean")),
    ("validation (per benchmark)", ("val-core/",)),
    ("RLSD clip fractions", ("rlsd/weight_clip_frac", "rlsd/weight_clip_low_frac", "rlsd/weight_clip_high_frac")),
    ("RLSD mean weight / factor", ("rlsd/weight_mean", "rlsd/factor_mean")),
    ("lambda", ("rlsd/lambda",)),
    ("entropy", ("actor/entropy",)),
    ("teacher - student log-prob", ("teacher/logprob_gap_mean", "opsd/delta_mean", "sdpo/delta_mean", "grpo_opsd/delta_mean")),
    ("answer leakage", ("diag/answer_leak_frac", "diag/answer_token_teacher_excess", "diag/answer_token_excess_vs_rest")),
)


def read_metrics_jsonl(path: str | os.PathLike) -> dict[int, dict[str, float]]:
    """verl's file logger output (``{"step": s, "data": {...}}`` per line) as ``{step: {key: value}}``;
    lines of the same step merge; a malformed line raises with file and line."""
    steps: dict[int, dict[str, float]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                step, data = int(rec["step"]), rec["data"]
                if not isinstance(data, dict):
                    raise TypeError("field 'data' is not an object")
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not a verl file-logger record ({e})") from e
            steps.setdefault(step, {}).update(data)
    return steps


def read_tensorboard(logdir: str | os.PathLike) -> dict[int, dict[str, float]]:
    """Scalars of the TensorBoard event files under ``logdir`` as ``{step: {tag: value}}``."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("reading TensorBoard logs needs the tensorboard package; or use verl's file logger") from e
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    steps: dict[int, dict[str, float]] = {}
    for tag in acc.Tags().get("scalars", []):
        for ev in acc.Scalars(tag):
            steps.setdefault(int(ev.step), {})[tag] = float(ev.value)
    return steps


def _series(metrics: dict[int, dict[str, float]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for step in sorted(metrics):
        v = metrics[step].get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(step)
            ys.append(float(v))
    return xs, ys


def plot_curves(metrics: dict[int, dict[str, float]], path: str | os.PathLike, title: str = "") -> tuple[Path, list[str]]:
    """A grid of the :data:`CURVE_PANELS` that have data; returns the path and the panel titles drawn."""
    keys = sorted({k for d in metrics.values() for k in d})
    panels = []
    for name, wanted in CURVE_PANELS:
        chosen = []
        for w in wanted:
            chosen += [k for k in keys if k.startswith(w)] if w.endswith("/") else ([w] if w in keys else [])
        chosen = [k for k in chosen if _series(metrics, k)[0]]
        if chosen:
            panels.append((name, chosen))
    if not panels:
        raise ValueError(f"none of the plotted metrics ({', '.join(w for _, ws in CURVE_PANELS for w in ws)}) were logged")
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.2 * nrows), squeeze=False, dpi=100)
    for ax, (name, chosen) in zip(axes.flat, panels):
        for key in chosen:
            xs, ys = _series(metrics, key)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path, [name for name, _ in panels]
