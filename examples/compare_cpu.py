"""The five methods side by side on the CPU default: a PNG of validation accuracy, mean reward, RLSD's
lambda and clip fraction per step, and a Markdown table of start/end accuracy per method.

Reads verl's file-logger output ``<workdir>/metrics/<method>.jsonl`` (``python -m verl_ext.cpu.launch``
writes it) and ``<workdir>/compare/wall_s.tsv`` (method, seconds; written by ``examples/compare_cpu.sh``).

    python examples/compare_cpu.py --workdir outputs/cpu --out docs/cpu_compare.png --table docs/cpu_compare.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from verl_ext.cpu.launch import METHODS, VAL_KEY, read_metrics, start_end

PANELS = (
    ("validation accuracy (test split)", VAL_KEY),
    ("mean reward (training samples)", "critic/score/mean"),
    ("RLSD lambda", "rlsd/lambda"),
    ("RLSD clip fraction", "rlsd/weight_clip_frac"),
)


def series(metrics: dict[int, dict[str, float]], key: str) -> tuple[list[int], list[float]]:
    steps = [s for s in sorted(metrics) if key in metrics[s]]
    return steps, [metrics[s][key] for s in steps]


def table(runs: dict[str, dict[int, dict[str, float]]], wall: dict[str, float]) -> str:
    """Markdown: per method, validation accuracy at the first and last validation, reward, wall time."""
    lines = ["| method | val acc start | val acc end | change | reward first step | reward last step | wall time (s) |",
             "|---|---|---|---|---|---|---|"]
    for method, metrics in runs.items():
        acc, reward = start_end(metrics, VAL_KEY), start_end(metrics, "critic/score/mean")
        if len(series(metrics, VAL_KEY)[0]) < 2:  # no validation after training (an interrupted run)
            cells = [f"{acc[0]:.3f}" if acc else "-", "-", "-"]
        else:
            cells = [f"{acc[0]:.3f}", f"{acc[1]:.3f}", f"{100 * (acc[1] - acc[0]):+.1f} pts"]
        cells += [f"{reward[0]:.3f}", f"{reward[1]:.3f}"] if reward else ["-"] * 2
        cells.append(f"{wall[method]:.0f}" if method in wall else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: dict[str, dict[int, dict[str, float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.2), dpi=80)
    for ax, (title, key) in zip(axes, PANELS):
        for method, metrics in runs.items():
            x, y = series(metrics, key)
            if x:
                ax.plot(x, y, marker="o", markersize=3, label=method)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="outputs/cpu")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--out", default=None, help="PNG (default: <workdir>/compare/cpu_compare.png)")
    parser.add_argument("--table", default=None, help="Markdown table (default: <workdir>/compare/cpu_compare.md)")
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    runs = {}
    for method in args.methods:
        path = work / "metrics" / f"{method}.jsonl"
        if not path.is_file():
            print(f"no metrics for {method}: {path} is missing", file=sys.stderr)
            continue
        runs[method] = read_metrics(path)
    if not runs:
        print("nothing to compare", file=sys.stderr)
        return 1
    wall = {}
    wall_file = work / "compare" / "wall_s.tsv"
    if wall_file.is_file():
        for line in wall_file.read_text().splitlines():
            if line.strip():
                method, seconds = line.split("\t")
                wall[method] = float(seconds)
    out = Path(args.out or work / "compare" / "cpu_compare.png")
    md = Path(args.table or work / "compare" / "cpu_compare.md")
    plot(runs, out)
    text = table(runs, wall)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text + "\n")
    print(text)
    print(f"\nplot: {out}\ntable: {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
