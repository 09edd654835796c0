"""The CPU comparison as an experiment: every method (and the shuffled-hint control) over several seeds.

Reads verl's file-logger output ``<workdir>/metrics/<variant>_seed<N>.jsonl`` (written by
``examples/compare_cpu.sh`` through ``python -m verl_ext.cpu.launch``) and each seed's warm-start record
(``<workdir>/tiny_qwen3vl_warm[_seed<N>]/warm_start.json``). Writes:

- a PNG: validation accuracy and training reward per step, mean over seeds with a min-max band;
- a Markdown table: mean +- sample standard deviation over seeds of the start, end and gain of validation
  accuracy per variant, the smallest gain, then every run's own numbers and each seed's warm start (the
  student without a hint and the teacher given the answer, greedy, on the validation split).

    python examples/compare_cpu.py --workdir outputs/cpu --seeds 0 1 2 --out docs/cpu_compare.png --table docs/cpu_compare.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from verl_ext.cpu.launch import read_metrics, seed_dirs, val_acc_key

VARIANTS = ("grpo", "rlsd", "opsd", "sdpo", "grpo_opsd", "rlsd_shuffled")
# None: each run's own validation accuracy key (mean over its val_kwargs.n samples per row)
PANELS = (("validation accuracy (test split)", None), ("mean reward (training samples)", "critic/score/mean"))


def series(metrics: dict[int, dict[str, float]], key: str | None = None) -> dict[int, float]:
    key = key or val_acc_key(metrics)
    return {s: metrics[s][key] for s in sorted(metrics) if key in metrics[s]}


def val_start_end(metrics: dict[int, dict[str, float]]) -> tuple[float, float] | None:
    """Validation accuracy at the first and the last validated step; None unless validated at least twice."""
    values = list(series(metrics).values())
    return (values[0], values[-1]) if len(values) >= 2 else None


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summary(runs: dict[str, dict[int, dict]]) -> dict[str, float] | None:
    """Over one variant's seeds: mean and std of start, end and gain of validation accuracy (points), min gain."""
    pairs = [pair for pair in map(val_start_end, runs.values()) if pair]
    if not pairs:
        return None
    out = {"n": len(pairs)}
    for name, values in (("start", [100 * a for a, _ in pairs]), ("end", [100 * b for _, b in pairs]),
                         ("gain", [100 * (b - a) for a, b in pairs])):
        out[name], out[f"{name}_std"] = mean_std(values)
    out["gain_min"] = min(100 * (b - a) for a, b in pairs)
    return out


def warm_records(workdir: Path, seeds: list[int]) -> dict[int, dict]:
    out = {}
    for seed in seeds:
        path = seed_dirs(workdir, seed)[1] / "warm_start.json"
        if path.is_file():
            out[seed] = json.loads(path.read_text())
    return out


def table(results: dict[str, dict[int, dict]], warm: dict[int, dict]) -> str:
    lines = ["| method | seeds | val acc start | val acc end | gain (points) | smallest gain |",
             "|---|---|---|---|---|---|"]
    for variant, runs in results.items():
        s = summary(runs)
        if s is None:
            lines.append(f"| {variant} | 0 | - | - | - | - |")
            continue
        lines.append(f"| {variant} | {s['n']} | {s['start']:.1f} ± {s['start_std']:.1f} | {s['end']:.1f} ± "
                     f"{s['end_std']:.1f} | {s['gain']:+.1f} ± {s['gain_std']:.1f} | {s['gain_min']:+.1f} |")
    lines += ["", "Every run (validation accuracy, start -> end):", "", "| method | seed | start | end | gain (points) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for variant, runs in results.items():
        for seed, metrics in sorted(runs.items()):
            pair = val_start_end(metrics)
            if pair:
                lines.append(f"| {variant} | {seed} | {pair[0]:.3f} | {pair[1]:.3f} | {100 * (pair[1] - pair[0]):+.1f} |")
    if warm:
        lines += ["", "Warm start per seed (greedy, validation split): the student without a hint, the teacher given "
                  "the answer hint; the student's probability of the true answer of the soft-target task.", "",
                  "| seed | supervised steps | probe | student | teacher with answer | true-answer probability |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for seed, rec in sorted(warm.items()):
            val = rec.get("validation") or {}
            per = lambda who: ", ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in sorted(val.items()) if k.startswith(who + "/"))  # noqa: E731
            lines.append(f"| {seed} | {rec.get('steps')} | {'passed' if rec.get('probe_passed') else 'not passed'} | "
                         f"{val.get('student_acc', float('nan')):.3f} ({per('student_acc')}) | "
                         f"{val.get('teacher_answer_acc', float('nan')):.3f} ({per('teacher_answer_acc')}) | "
                         f"{val.get('blur_true_prob', float('nan')):.2f} |")
    return "\n".join(lines)


def plot(results: dict[str, dict[int, dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(5.5 * len(PANELS), 3.6), dpi=80)
    for ax, (title, key) in zip(axes, PANELS):
        for variant, runs in results.items():
            per_seed = [series(m, key) for m in runs.values()]
            steps = sorted(set.intersection(*(set(p) for p in per_seed))) if per_seed else []
            if not steps:
                continue
            values = [[p[s] for p in per_seed] for s in steps]
            line = ax.plot(steps, [statistics.mean(v) for v in values], marker="o", markersize=3,
                           linestyle="--" if variant.endswith("_shuffled") else "-", label=f"{variant} (n={len(runs)})")
            ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=line[0].get_color(), alpha=0.15)
        ax.set_title(f"{title}: mean, min-max band", fontsize=10)
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
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default=None, help="PNG (default: <workdir>/compare/cpu_compare.png)")
    parser.add_argument("--table", default=None, help="Markdown table (default: <workdir>/compare/cpu_compare.md)")
    args = parser.parse_args(argv)
    work = Path(args.workdir).resolve()
    results: dict[str, dict[int, dict]] = {}
    for variant in args.variants:
        for seed in args.seeds:
            path = work / "metrics" / f"{variant}_seed{seed}.jsonl"
            if path.is_file():
                results.setdefault(variant, {})[seed] = read_metrics(path)
            else:
                print(f"no metrics for {variant}, seed {seed}: {path} is missing", file=sys.stderr)
    if not results:
        print("nothing to compare", file=sys.stderr)
        return 1
    out = Path(args.out or work / "compare" / "cpu_compare.png")
    md = Path(args.table or work / "compare" / "cpu_compare.md")
    plot(results, out)
    text = table(results, warm_records(work, args.seeds))
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text + "\n")
    print(text)
    print(f"\nplot: {out}\ntable: {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
