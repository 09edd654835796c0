"""Checks of a composed training config that must fail before Ray or any GPU work starts.

verl finds most mistakes only inside its Ray workers, minutes into a run (an unknown estimator
name raises there without listing the valid ones). These checks run on the driver right after
Hydra has composed the config.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from verl_ext.algorithms import GRPO_OPSD_DEFAULTS, RLSD_DEFAULTS, TEACHER_ESTIMATORS, TEACHER_TRAINER_MODE
from verl_ext.algorithms.checks import section


class ConfigError(ValueError):
    """A training config that cannot run, with the key to fix in the message."""


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v) for v in value]
    return [str(value)]


def check_data_files(config: DictConfig) -> None:
    for key in ("train_files", "val_files"):
        for path in _files(config.data.get(key)):
            if "://" in path and not path.startswith("file://"):
                continue  # remote paths are verl's to resolve
            local = path.removeprefix("file://")
            if not (os.path.exists(local) or glob.glob(local)):
                raise ConfigError(
                    f"data.{key}: {local} does not exist; build it with `python data_prep/build_parquet.py` "
                    f"(see README, 'Data') or point data.{key} / DATA_DIR at your copy"
                )


def check_estimator(config: DictConfig) -> None:
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

    name = str(config.algorithm.adv_estimator)
    if name not in ADV_ESTIMATOR_REGISTRY:
        raise ConfigError(
            f"algorithm.adv_estimator={name} is not a registered advantage estimator; "
            f"valid: {', '.join(sorted(ADV_ESTIMATOR_REGISTRY))}"
        )
    mode = config.trainer.get("v1", {}).get("trainer_mode", "sync")
    if name in TEACHER_ESTIMATORS and mode != TEACHER_TRAINER_MODE:
        raise ConfigError(
            f"algorithm.adv_estimator={name} needs teacher log-probs: set trainer.v1.trainer_mode={TEACHER_TRAINER_MODE} "
            f"(got {mode})"
        )
    # estimator and teacher knobs: unknown keys and bad values raise, naming the valid ones
    try:
        section(config.algorithm, "rlsd", RLSD_DEFAULTS)
        section(config.algorithm, "grpo_opsd", GRPO_OPSD_DEFAULTS)
        if name in TEACHER_ESTIMATORS:
            from verl_ext.privileged.config import TeacherConfig

            TeacherConfig.resolve(config.algorithm.get("teacher"), name)
        from verl_ext.distill.config import check_config as check_distill

        check_distill(config)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def check_verl(config: DictConfig) -> None:
    """verl's own driver-side validation, as its main_ppo runs it."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


def preflight(config: DictConfig) -> None:
    """Run every check; raises :class:`ConfigError` (or verl's own assertion) on the first problem."""
    check_estimator(config)
    check_data_files(config)
    check_verl(config)


def summary(config: DictConfig) -> str:
    """The values that define a run, one per line: what a dry run prints before the full config."""
    a, r = config.actor_rollout_ref, config.algorithm
    lines = {
        "algorithm.adv_estimator": r.adv_estimator,
        "algorithm.teacher": OmegaConf.to_container(r.get("teacher", {}), resolve=True),
        "trainer.v1.trainer_mode": config.trainer.v1.trainer_mode,
        "actor.optim.lr": a.actor.optim.lr,
        "data.train_batch_size x rollout.n": f"{config.data.train_batch_size} x {a.rollout.n}",
        "max prompt + response": f"{config.data.max_prompt_length} + {config.data.max_response_length}",
        "trainer.total_training_steps": config.trainer.total_training_steps,
    }
    return "\n".join(f"{k}: {v}" for k, v in lines.items())
