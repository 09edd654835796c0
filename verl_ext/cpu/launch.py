"""Run verl's own trainer on CPU with the tiny Qwen3-VL, through the recipes' entry point.

The config is ``recipe/config/cpu_tiny.yaml`` (the GPU recipes' shared settings with CPU scale) and
the entry point ``recipe/main.py`` (verl's ``run_ppo`` after our pre-flight checks), the same the GPU
recipes use. This module only adds what changes per run (method, paths, steps), starts it in a
subprocess with
``VERL_PLATFORM=cpu``, and reads back the metrics verl's file logger wrote (one JSON object per step,
``{"step": s, "data": {...}}``).

    python -m verl_ext.cpu.launch --method rlsd --workdir outputs/cpu [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

RECIPE_DIR = Path(__file__).resolve().parents[2] / "recipe"  # the repository's recipes (run from a clone)
ENTRY_POINT = RECIPE_DIR / "main.py"
CONFIG_DIR = RECIPE_DIR / "config"
CONFIG_NAME = "cpu_tiny"
# modality -> (overrides, generated data set): the tiny Qwen3-VL on images, or the tiny text Qwen3 on arithmetic
# (recipe/config/modality/text.yaml over the same CPU config)
MODALITIES = {"vl": ((), "synthetic"), "text": (("+modality=text",), "arithmetic")}
METHODS = ("grpo", "rlsd", "opsd", "sdpo", "grpo_opsd")
# hf: verl_ext.cpu.hf_rollout (transformers generate); vllm: verl's own vLLM server, the GPU recipes' rollout
ROLLOUTS = ("hf", "vllm")
DEFAULT_ROLLOUT = "hf"
DEFAULT_STEPS = 12
# verl_ext's trainer mode: verl's sync trainer plus the teacher pass (none for grpo). Every method runs on it, so
# GRPO and the teacher methods share the trainer (verl's own sync mode polls for rollouts every 2 s, which alone
# made GRPO's generation ~1.2 s per step slower than RLSD's on CPU)
TEACHER_MODE = "self_distill"

# verl's validation accuracy on the synthetic test split: mean over the val_kwargs.n = 4 samples per row
# of recipe/config/cpu_tiny.yaml
VAL_KEY = "val-core/synthetic/acc/mean@4"

# (label, metric key) printed per step; missing keys are shown as "-".
STEP_COLUMNS = (
    ("reward", "critic/score/mean"),
    ("acc", "rollout/acc"),
    ("val_acc", VAL_KEY),
    ("adv_min", "critic/advantages/min"),
    ("adv_max", "critic/advantages/max"),
    ("lambda", "rlsd/lambda"),
    ("clip", "rlsd/weight_clip_frac"),
    ("clip_lo", "rlsd/weight_clip_low_frac"),
    ("clip_hi", "rlsd/weight_clip_high_frac"),
    ("gap", "teacher/logprob_gap_mean"),
    ("pg_clip", "actor/pg_clipfrac"),
    ("pg_loss", "actor/pg_loss"),
    ("grad", "actor/grad_norm"),
    ("resp_len", "response_length/mean"),
    ("step_s", "timing_s/step"),
)


def method_overrides(method: str) -> list[str]:
    """Hydra overrides selecting ``method``: the estimator and the trainer mode it needs."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return [f"algorithm.adv_estimator={method}", f"trainer.v1.trainer_mode={TEACHER_MODE}"]


def train_command(overrides: list[str], python: str = sys.executable) -> list[str]:
    """The recipes' entry point with the CPU config and ``overrides`` (later overrides win)."""
    if not ENTRY_POINT.is_file():
        raise FileNotFoundError(f"{ENTRY_POINT} not found: the CPU default runs from a clone of the repository")
    return [python, str(ENTRY_POINT), "--config-name", CONFIG_NAME, *overrides]


def train_env(metrics_path: str | os.PathLike, base: dict | None = None) -> dict:
    """Environment for the trainer: the CPU platform and the file logger's output path.

    ``VERL_PLATFORM`` must be set before verl resolves its platform in the driver; the Ray workers
    receive it through ``ray_kwargs.ray_init.runtime_env`` in the config as well.
    """
    env = dict(os.environ if base is None else base)
    env["VERL_PLATFORM"] = "cpu"
    env["VERL_FILE_LOGGER_PATH"] = str(Path(metrics_path).resolve())
    env.setdefault("RAY_DEDUP_LOGS", "0")
    return env


def run_training(
    method: str,
    workdir: str | os.PathLike,
    model_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    steps: int,
    extra: list[str] = (),
    run_name: str | None = None,
    log_path: str | os.PathLike | None = None,
    timeout: float | None = None,
    ckpt_name: str | None = None,
    modality: str = "vl",
) -> tuple[Path, Path]:
    """Run ``steps`` training steps of ``method``; return (metrics JSONL path, checkpoint dir
    ``<workdir>/checkpoints/<ckpt_name or method>``).

    verl's output goes to ``log_path`` (default ``<workdir>/logs/<run>.log``); a non-zero exit raises
    with the log's tail.
    """
    workdir = Path(workdir).resolve()
    run_name = run_name or method
    metrics = workdir / "metrics" / f"{run_name}.jsonl"
    ckpt = workdir / "checkpoints" / (ckpt_name or method)  # a run named otherwise still resumes the method's
    log = Path(log_path) if log_path else workdir / "logs" / f"{run_name}.log"
    for path in (metrics.parent, log.parent):
        path.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir).resolve()
    modality_overrides, dataset = MODALITIES[modality]
    overrides = [
        *modality_overrides,
        f"data.train_files={data_dir / dataset / 'train.parquet'}",
        f"data.val_files={data_dir / dataset / 'test.parquet'}",
        f"actor_rollout_ref.model.path={Path(model_dir).resolve()}",
        f"trainer.total_training_steps={steps}",
        f"trainer.experiment_name={ckpt_name or method}",
        f"trainer.default_local_dir={ckpt}",
        *method_overrides(method),
        *extra,
    ]
    with open(log, "w") as out:
        proc = subprocess.run(
            train_command(overrides), env=train_env(metrics), cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
            timeout=timeout,
        )  # fmt: skip
    if proc.returncode != 0:
        tail = "".join(open(log, errors="replace").readlines()[-40:])
        raise RuntimeError(f"verl's trainer exited with {proc.returncode} (log: {log}):\n{tail}")
    return metrics, ckpt


def read_metrics(path: str | os.PathLike) -> dict[int, dict[str, float]]:
    """Per-step metrics from verl's file logger: ``{step: {key: value}}`` (later lines of a step merge in)."""
    steps: dict[int, dict[str, float]] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                step, data = int(record["step"]), record["data"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not a verl file-logger record ({e})") from e
            steps.setdefault(step, {}).update(data)
    return steps


# The project's reward is (1 - w) * acc + w * format with w = 0.1 for math and acc otherwise
# (verl_ext.reward.compute_score, no overlong penalty here), so score >= 0.5 exactly when acc = 1.
ACC_THRESHOLD = 0.5


def rollout_accuracy(rollout_dir: str | os.PathLike) -> dict[int, float]:
    """Per-step training accuracy from verl's rollout dump (``trainer.rollout_data_dir``: ``<step>.jsonl``,
    one line per response with its ``score``): the fraction of responses with ``score >= 0.5``."""
    acc = {}
    for path in Path(rollout_dir).glob("*.jsonl"):
        scores = [json.loads(line)["score"] for line in open(path) if line.strip()]
        if scores:
            acc[int(path.stem)] = sum(s >= ACC_THRESHOLD for s in scores) / len(scores)
    return acc


def format_table(metrics: dict[int, dict[str, float]], columns=STEP_COLUMNS) -> str:
    """One row per step with the columns of ``columns`` (a missing metric is '-')."""

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            return str(value)
        return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)

    rows = [["step", *[label for label, _ in columns]]]
    for step in sorted(metrics):
        rows.append([str(step), *[cell(metrics[step].get(key)) for _, key in columns]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """``global_step_N`` folder named in verl's ``latest_checkpointed_iteration.txt``, if any."""
    marker = Path(ckpt_dir) / "latest_checkpointed_iteration.txt"
    if not marker.is_file():
        return None
    return Path(ckpt_dir) / f"global_step_{int(marker.read_text().strip())}"


def train_steps(metrics: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
    """The training steps only (step 0 holds just the validation before training)."""
    return {s: m for s, m in metrics.items() if "timing_s/step" in m}


def val_acc_key(metrics: dict[int, dict[str, float]], dataset: str = "synthetic") -> str:
    """The run's validation accuracy key, ``val-core/<dataset>/acc/mean@<n>`` for its ``val_kwargs.n`` (the
    comparison validates with fewer samples than the quickstart); ``VAL_KEY`` for ``dataset`` when none was logged."""
    prefix = f"val-core/{dataset}/acc/mean@"
    found = {k for m in metrics.values() for k in m if k.startswith(prefix) and k[len(prefix):].isdigit()}
    return max(found, key=lambda k: int(k[len(prefix):])) if found else VAL_KEY.replace("/synthetic/", f"/{dataset}/")


def start_end(metrics: dict[int, dict[str, float]], key: str) -> tuple[float, float] | None:
    """``key`` at its first and last logged step, or None when it was never logged."""
    steps = [s for s in sorted(metrics) if key in metrics[s]]
    return (metrics[steps[0]][key], metrics[steps[-1]][key]) if steps else None


def start_end_lines(metrics: dict[int, dict[str, float]]) -> list[str]:
    """'name: start -> end (steps a -> b)' for the mean reward and every validation accuracy."""
    keys = ["critic/score/mean"] + sorted(k for m in metrics.values() for k in m if k.startswith("val-core/"))
    lines = []
    for key in dict.fromkeys(keys):
        pair = start_end(metrics, key)
        if pair:
            steps = [s for s in sorted(metrics) if key in metrics[s]]
            lines.append(f"{key}: {pair[0]:.4g} -> {pair[1]:.4g} (step {steps[0]} -> {steps[-1]}, {pair[1] - pair[0]:+.4g})")
    return lines


def mean_step_seconds(metrics: dict[int, dict[str, float]], skip_first: bool = True) -> float:
    """Mean ``timing_s/step`` over the steps (the first, which includes warm-up, skipped if others exist); NaN
    when no step ran (``trainer.val_only=true``)."""
    steps = sorted(metrics)
    if not steps:
        return float("nan")
    if skip_first and len(steps) > 1:
        steps = steps[1:]
    return sum(metrics[s]["timing_s/step"] for s in steps) / len(steps)


def rollout_name(default: str, overrides: list[str]) -> str:
    """The rollout server a run gets: the last ``actor_rollout_ref.rollout.name=`` override, else ``default``."""
    names = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("actor_rollout_ref.rollout.name=")]
    return names[-1] if names else default


def seed_overrides(seed: int) -> list[str]:
    """The RL side of ``--seed``: data order, the rollout server's sampling and the teacher's draws."""
    return [f"data.seed={seed}", f"actor_rollout_ref.rollout.seed={seed}", f"algorithm.teacher.seed={seed}"]


def seed_dirs(workdir: Path, seed: int, modality: str = "vl") -> tuple[Path, Path]:
    """The tiny model and its warm start of ``seed`` (seed 0 keeps the unsuffixed names)."""
    suffix = "" if seed == 0 else f"_seed{seed}"
    name = "tiny_qwen3vl" if modality == "vl" else "tiny_qwen3"
    return workdir / f"{name}{suffix}", workdir / f"{name}_warm{suffix}"


def warm_start_lines(warm_dir: Path) -> list[str]:
    """What the warm start measured on the validation split (greedy): the student without a hint and the
    teacher given the answer hint, per task."""
    record = warm_dir / "warm_start.json"
    if not record.is_file():
        return []
    done = json.loads(record.read_text())
    val = done.get("validation")
    probe = "" if "probe_passed" not in done else f", probe {'passed' if done['probe_passed'] else 'NOT passed'}"
    lines = [f"warm start: {done.get('steps')} supervised steps{probe}"]
    if done.get("blur_acc") is not None:
        lines.append(f"  {done.get('blur_task')} taught with soft targets: the true answer weighted {done['blur_acc']}, "
                     "the others sharing the rest")
    if val:
        tasks = sorted(k.split("/", 1)[1] for k in val if k.startswith("student_acc/"))
        per = lambda who: ", ".join(f"{t} {val[f'{who}/{t}']:.2f}" for t in tasks)  # noqa: E731
        lines.append(f"  student, no hint (greedy, validation): {val['student_acc']:.3f} ({per('student_acc')})")
        lines.append(f"  teacher given the answer (greedy, validation): {val['teacher_answer_acc']:.3f} "
                     f"({per('teacher_answer_acc')})")
        if "blur_true_prob" in val:
            lines.append(f"  student's probability of the true {done.get('blur_task')} answer (validation): "
                         f"{val['blur_true_prob']:.2f}, the most probable one on {val['blur_true_top']:.2f} of rows")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default=os.environ.get("METHOD", "rlsd"), choices=METHODS)
    parser.add_argument("--modality", default=os.environ.get("MODALITY", "vl"), choices=sorted(MODALITIES),
                        help="vl: the tiny Qwen3-VL on the synthetic images; text: the tiny text Qwen3 on arithmetic")
    parser.add_argument("--workdir", default="outputs/cpu")
    parser.add_argument("--model-dir", default=None, help="tiny model (default: <workdir>/tiny_qwen3vl, built once)")
    parser.add_argument("--data-dir", default=None, help="holds synthetic/{train,test}.parquet (default: <workdir>/data)")
    parser.add_argument("--steps", type=int, default=int(os.environ.get("STEPS", DEFAULT_STEPS)))
    parser.add_argument("--rollout", default=os.environ.get("ROLLOUT", DEFAULT_ROLLOUT), choices=ROLLOUTS,
                        help="rollout server: hf (transformers) or vllm (verl's vLLM server, as on GPU)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SEED", 0)),
                        help="the tiny model's initialisation, its warm start and RL (data order, sampling)")
    parser.add_argument("--run-name", default=None, help="metrics and log name (default: <method>, _seed<N> added)")
    parser.add_argument("--no-warm-start", action="store_true",
                        help="train the random tiny model itself (its reward is 0: nothing to learn from)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for verl's trainer")
    args = parser.parse_intermixed_args(argv)  # --seed may follow the Hydra overrides

    if rollout_name(args.rollout, args.overrides) == "vllm" and importlib.util.find_spec("vllm") is None:
        parser.error("the vllm rollout needs vLLM's CPU build: bash scripts/setup_venv.sh --vllm "
                     "(examples/quickstart_cpu.sh runs it when ROLLOUT=vllm or --rollout vllm is given)")
    from verl_ext.text_warm_start import build_text_warm_start
    from verl_ext.tiny_model import build_tiny_qwen3vl
    from verl_ext.tiny_text_model import build_tiny_qwen3
    from verl_ext.warm_start import build_warm_start

    workdir = Path(args.workdir).resolve()
    data_dir = Path(args.data_dir or workdir / "data")
    dataset = MODALITIES[args.modality][1]
    for split in ("train", "test"):
        if not (data_dir / dataset / f"{split}.parquet").is_file():
            raise FileNotFoundError(f"{data_dir / dataset / f'{split}.parquet'} is missing (build_parquet.py {dataset})")
    run_name = args.run_name or (args.method if args.seed == 0 else f"{args.method}_seed{args.seed}")
    if args.modality != "vl" and not args.run_name:
        run_name = f"{args.modality}_{run_name}"  # its own metrics, logs and checkpoints beside the VL runs
    if args.model_dir:
        model_dir = Path(args.model_dir)
    else:
        base_dir, warm = seed_dirs(workdir, args.seed, args.modality)
        build_model, warm_start = ((build_tiny_qwen3vl, build_warm_start) if args.modality == "vl"
                                   else (build_tiny_qwen3, build_text_warm_start))
        model_dir = build_model(base_dir, seed=args.seed)
        if not args.no_warm_start:
            print(f"warm start (seed {args.seed}): {warm} (built once, then reused)")
            model_dir = warm_start(model_dir, data_dir / dataset / "train.parquet", warm, seed=args.seed,
                                   val_parquet=data_dir / dataset / "test.parquet")
            for line in warm_start_lines(warm):
                print(line)
    print(f"[{run_name}] verl's trainer on CPU, {args.steps} steps, {args.rollout} rollout; "
          f"log: {workdir / 'logs' / (run_name + '.log')}")
    start = time.time()
    rollouts = workdir / "rollouts" / run_name
    metrics_path, ckpt = run_training(
        args.method, workdir, model_dir, data_dir, args.steps, run_name=run_name, ckpt_name=run_name, modality=args.modality,
        extra=[f"trainer.save_freq={args.steps}", f"trainer.test_freq={args.steps}",
               f"trainer.rollout_data_dir={rollouts}", f"actor_rollout_ref.rollout.name={args.rollout}",
               *seed_overrides(args.seed), *args.overrides],
    )  # fmt: skip
    metrics = read_metrics(metrics_path)
    for step, acc in rollout_accuracy(rollouts).items():
        if step in metrics:
            metrics[step]["rollout/acc"] = acc
    val_key = val_acc_key(metrics, dataset)
    print(format_table(metrics, [(label, val_key if key == VAL_KEY else key) for label, key in STEP_COLUMNS]))
    print(f"\nsummary [{run_name}]: {args.steps} steps in {time.time() - start:.0f} s (Ray start and model load included)")
    print(f"  seconds per step (after the first): {mean_step_seconds(train_steps(metrics)):.2f}")
    for line in start_end_lines(metrics):
        print(f"  {line}")
    print(f"  metrics: {metrics_path}")
    print(f"  checkpoint: {latest_checkpoint(ckpt) or ckpt}")


if __name__ == "__main__":
    main()
