"""A worked example of the five advantage estimators on one group of four responses.

Prints, for a toy batch, the per-token advantage each method gives, so the difference between
GRPO's flat credit and RLSD's teacher-shaped credit is visible at a glance.
"""

import numpy as np
import torch
import verl  # noqa: F401  (loads verl_ext through the verl.plugins entry point)
from omegaconf import OmegaConf
from verl.trainer.ppo.core_algos import get_adv_estimator_fn


def main() -> None:
    torch.manual_seed(0)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    token_rewards = torch.zeros(4, 5)
    last = mask.sum(-1) - 1
    token_rewards[torch.arange(4), last] = rewards
    old = -torch.rand(4, 5)
    teacher = old + torch.randn(4, 5) * 0.3
    index = np.array(["q0"] * 4, dtype=object)
    config = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "rlsd": {}, "grpo_opsd": {"beta": 0.1}})
    torch.set_printoptions(precision=3, sci_mode=False)
    print("delta = teacher - student log-prob of each sampled token:\n", (teacher - old) * mask)
    for name in ("grpo", "rlsd", "opsd", "sdpo", "grpo_opsd"):
        kwargs = dict(token_level_rewards=token_rewards, response_mask=mask, index=index, config=config)
        if name != "grpo":
            kwargs.update(teacher_log_probs=teacher, old_log_probs=old, global_step=1, metrics={})
        adv, _ = get_adv_estimator_fn(name)(**kwargs)
        print(f"\n{name}:\n{adv}")
        if name != "grpo" and kwargs["metrics"]:
            print("  metrics:", {k: round(v, 4) for k, v in kwargs["metrics"].items()})


if __name__ == "__main__":
    main()
