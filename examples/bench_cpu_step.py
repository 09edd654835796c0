"""Seconds per training step of GRPO and RLSD through verl's trainer on CPU, and their ratio; or, with
``--rollouts hf,vllm``, one method under both rollout servers and the vllm / hf step-time ratio.

The runs go back to back on the same machine with the CPU default's config (the warm-started tiny
Qwen3-VL, 8 prompts x 8 responses, validation off); the first step of each run (warm-up) is left out of
the mean.

    python examples/bench_cpu_step.py [--steps 6] [--repeats 1] [--workdir outputs/cpu_bench]
    python examples/bench_cpu_step.py --rollouts hf,vllm [--method grpo] [--steps 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ["VERL_PLATFORM"] = "cpu"

from verl_ext.cpu.launch import read_metrics, run_training, train_steps  # noqa: E402
from verl_ext.tiny_model import build_tiny_qwen3vl  # noqa: E402
from verl_ext.warm_start import build_warm_start  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# timing_s/adv contains timing_s/teacher (the teacher pass runs inside verl's "adv" timer): the wait for its
# inputs and the workers' forward. The inputs (build, TransferQueue put) are prepared in a driver thread during
# old_log_prob, so teacher_build and teacher_put overlap that stage and are not part of the step's sum.
PARTS = ("timing_s/gen", "timing_s/old_log_prob", "timing_s/teacher", "timing_s/teacher_build",
         "timing_s/teacher_put", "timing_s/teacher_wait", "timing_s/teacher_forward", "timing_s/adv", "timing_s/adv_diag",
         "timing_s/update_actor", "timing_s/update_weights", "timing_s/teacher_sync")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=1, help="GRPO and RLSD runs, alternating; pooled steps")
    parser.add_argument("--workdir", default=str(ROOT / "outputs" / "cpu_bench"))
    parser.add_argument("--model-dir", default=None, help="a warm-started tiny model (default: built in --workdir)")
    parser.add_argument("--rollouts", default=None, help="e.g. hf,vllm: compare rollout servers instead of methods")
    parser.add_argument("--method", default="grpo", help="the method of the --rollouts comparison")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs")
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    data = work / "data"
    if not (data / "synthetic" / "train.parquet").is_file():
        subprocess.run([sys.executable, str(ROOT / "data_prep" / "build_parquet.py"), "synthetic", "--out-dir", str(data),
                        "--quiet"], check=True)  # fmt: skip
    if args.model_dir:
        model = Path(args.model_dir).resolve()
    else:
        model = build_warm_start(build_tiny_qwen3vl(work / "tiny_qwen3vl"), data / "synthetic" / "train.parquet",
                                 work / "tiny_qwen3vl_warm")
    if args.rollouts:
        compare_rollouts(args, work, model, data)
        return
    results: dict[str, dict[str, list[float]]] = {}
    pairs = []
    for repeat in range(args.repeats):
        step_means = {}
        for method in ("grpo", "rlsd"):
            print(f"running {method} for {args.steps} steps ({repeat + 1}/{args.repeats}) ...", flush=True)
            # GRPO on the self_distill trainer too (no teacher pass for grpo): both runs share the trainer, so the
            # teacher pass is the only difference (verl's own sync trainer polls for rollouts every 2 s)
            name = f"bench_{method}" + (f"_{repeat + 1}" if args.repeats > 1 else "")
            path, _ = run_training(method, work, model, data, args.steps, run_name=name,
                                   extra=["trainer.val_before_train=false", "trainer.test_freq=-1",
                                          "trainer.v1.trainer_mode=self_distill", *args.overrides])
            metrics = train_steps(read_metrics(path))
            steps = sorted(metrics)[1:]
            pooled = results.setdefault(method, {key: [] for key in ("timing_s/step", *PARTS)})
            for key in pooled:
                pooled[key] += [metrics[s].get(key, 0.0) for s in steps]
            step_means[method] = statistics.mean(metrics[s]["timing_s/step"] for s in steps)
        pairs.append(step_means["rlsd"] / step_means["grpo"])
    print(f"\nseconds per step (steps 2..{args.steps} of {args.repeats} run(s) each, mean +- stdev):")
    for method, timing in results.items():
        step = timing["timing_s/step"]
        parts = "  ".join(f"{k.split('/')[-1]}={statistics.mean(v):.2f}" for k, v in timing.items() if k != "timing_s/step")
        print(f"  {method:5s} {statistics.mean(step):6.2f} +- {statistics.stdev(step) if len(step) > 1 else 0:.2f}   ({parts})")
    ratio = statistics.mean(results["rlsd"]["timing_s/step"]) / statistics.mean(results["grpo"]["timing_s/step"])
    print(f"RLSD / GRPO step-time ratio: {ratio:.3f} (goal <= 1.05)")
    if len(pairs) > 1:  # GRPO and RLSD alternate, so a slow spell of the machine falls on both
        print(f"  of each pair of runs: {', '.join(f'{r:.3f}' for r in pairs)}")
    # within the RLSD run alone (robust to load that changes between the two runs): step / (step - teacher work)
    rlsd = results["rlsd"]
    extra = [t + s for t, s in zip(rlsd["timing_s/teacher"], rlsd.get("timing_s/teacher_sync", [0.0] * len(rlsd["timing_s/teacher"])))]
    inrun = statistics.mean(s / (s - e) for s, e in zip(rlsd["timing_s/step"], extra))
    print(f"within the RLSD run, step / (step - teacher pass - teacher sync): {inrun:.3f}")


ROLLOUT_PARTS = ("timing_s/gen", "timing_s/old_log_prob", "timing_s/update_actor", "timing_s/update_weights",
                 "timing_s/teacher", "timing_s/adv")  # fmt: skip


def compare_rollouts(args, work: Path, model: Path, data: Path) -> None:
    """``args.method`` under each rollout server of ``args.rollouts``; the first is the reference of the ratio."""
    names = [r.strip() for r in args.rollouts.split(",") if r.strip()]
    results, overhead = {}, {}
    for rollout in names:
        print(f"running {args.method} with the {rollout} rollout for {args.steps} steps ...", flush=True)
        start = time.time()
        path, _ = run_training(args.method, work, model, data, args.steps, run_name=f"bench_{args.method}_{rollout}",
                               extra=["trainer.val_before_train=false", "trainer.test_freq=-1",
                                      f"actor_rollout_ref.rollout.name={rollout}", *args.overrides])  # fmt: skip
        wall = time.time() - start
        metrics = train_steps(read_metrics(path))
        # start-up: Ray, workers, model loads and (vllm) the engine, i.e. the run's time outside its steps
        overhead[rollout] = wall - sum(m["timing_s/step"] for m in metrics.values())
        steps = sorted(metrics)[1:]
        results[rollout] = {k: [metrics[s].get(k, 0.0) for s in steps] for k in ("timing_s/step", *ROLLOUT_PARTS)}
    print(f"\n{args.method}: seconds per step (steps 2..{args.steps}, mean +- stdev) and where they go:")
    for rollout, timing in results.items():
        step = timing["timing_s/step"]
        parts = "  ".join(f"{k.split('/')[-1]}={statistics.mean(v):.2f}" for k, v in timing.items()
                          if k != "timing_s/step" and any(v))  # fmt: skip
        sd = statistics.stdev(step) if len(step) > 1 else 0.0
        print(f"  {rollout:5s} {statistics.mean(step):6.2f} +- {sd:.2f}   ({parts})   start-up {overhead[rollout]:.0f} s")
    ref = names[0]
    for rollout in names[1:]:
        ratio = statistics.mean(results[rollout]["timing_s/step"]) / statistics.mean(results[ref]["timing_s/step"])
        gen = statistics.mean(results[rollout]["timing_s/gen"]) / statistics.mean(results[ref]["timing_s/gen"])
        print(f"{rollout} / {ref} step-time ratio: {ratio:.2f} (generation alone: {gen:.2f}); "
              f"start-up difference {overhead[rollout] - overhead[ref]:+.0f} s")


if __name__ == "__main__":
    main()
