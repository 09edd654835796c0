"""Times each registered estimator against verl's ``grpo`` on one batch and prints the ratios.

Default batch: 2048 responses (256 prompts x 8) of 4096 tokens, CPU. Not a test: timings vary.

    python examples/bench_estimators.py [--rows 2048] [--tokens 4096] [--repeats 5]
"""

import argparse
import time

import numpy as np
import torch
import verl  # noqa: F401  (registers verl_ext's estimators)
from omegaconf import OmegaConf
from verl.trainer.ppo.core_algos import get_adv_estimator_fn


def make_batch(rows: int, tokens: int, group: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(tokens // 4, tokens + 1, (rows,), generator=g)
    mask = (torch.arange(tokens).unsqueeze(0) < lengths.unsqueeze(1)).float()
    rewards = torch.zeros(rows, tokens)
    rewards[torch.arange(rows), lengths - 1] = (torch.rand(rows, generator=g) > 0.5).float()
    old = -torch.rand(rows, tokens, generator=g) * 3
    teacher = old + torch.randn(rows, tokens, generator=g) * 0.3
    index = np.array([f"q{i // group}" for i in range(rows)], dtype=object)
    return dict(token_level_rewards=rewards, response_mask=mask, index=index, teacher_log_probs=teacher, old_log_probs=old)


def prepare(name: str, batch: dict):
    fn = get_adv_estimator_fn(name)
    kwargs = dict(batch, config=OmegaConf.create({"norm_adv_by_std_in_grpo": True}))
    if name == "grpo":
        kwargs.pop("teacher_log_probs")
        kwargs.pop("old_log_probs")
    else:
        kwargs.update(global_step=1, metrics={})
    fn(**kwargs)  # warm-up
    return lambda: fn(**kwargs)


def measure(names: list[str], batch: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) seconds of ``repeats`` interleaved rounds.

    The best of interleaved rounds, and process CPU time, are what stay meaningful when other
    work shares the machine.
    """
    calls = {n: prepare(n, batch) for n in names}
    wall = {n: float("inf") for n in names}
    cpu = {n: float("inf") for n in names}
    for _ in range(repeats):
        for n, call in calls.items():
            w0, c0 = time.perf_counter(), time.process_time()
            call()
            wall[n] = min(wall[n], time.perf_counter() - w0)
            cpu[n] = min(cpu[n], time.process_time() - c0)
    return {n: (wall[n], cpu[n]) for n in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = make_batch(args.rows, args.tokens, args.group)
    print(f"batch {args.rows} x {args.tokens}, groups of {args.group}, torch threads {torch.get_num_threads()}")
    names = ["grpo", "rlsd", "opsd", "sdpo", "grpo_opsd"]
    best = measure(names, batch, args.repeats)
    g_wall, g_cpu = best["grpo"]
    print(f"{'estimator':<10} {'wall s':>8} {'/ grpo':>7} {'cpu s':>8} {'/ grpo':>7}")
    for name in names:
        w, c = best[name]
        print(f"{name:<10} {w:8.3f} {w / g_wall:7.2f} {c:8.3f} {c / g_cpu:7.2f}")

if __name__ == "__main__":
    main()
