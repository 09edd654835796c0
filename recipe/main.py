"""Entry point of the recipes: verl's own PPO driver with pre-flight checks and a dry run.

    python recipe/main.py [--config-name qwen3vl8b] key=value ...
    RLSD_DRY_RUN=1 python recipe/main.py ...   # compose, check, print the config, exit (no Ray)

It composes the config with Hydra (verl's ppo_trainer under ours), runs verl's validation and our
checks (estimator registered and wired to the teacher pass, data files present, teacher options
valid), then hands over to verl's ``run_ppo`` with verl's V1 task runner, exactly as verl's
``main_ppo`` does. Nothing of verl is copied: the trainer class comes from verl's registry through
``trainer.v1.trainer_mode``.
"""

import os
import sys

import hydra
from omegaconf import OmegaConf

DRY_RUN_MARKER = "--- composed config (dry run: nothing started) ---"


@hydra.main(config_path="config", config_name="qwen3vl8b", version_base=None)
def main(config) -> None:
    import verl  # noqa: F401  (loads verl_ext through the verl.plugins entry point)
    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
    from verl.utils.device import auto_set_device

    from verl_ext.preflight import ConfigError, preflight, summary

    auto_set_device(config)
    try:
        preflight(config)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(summary(config), flush=True)
    if os.environ.get("RLSD_DRY_RUN", "0") not in ("", "0"):
        print(DRY_RUN_MARKER)
        print(OmegaConf.to_yaml(config, resolve=True))
        return
    from verl_ext.watchdog import WorkerWatchdog

    # a dead worker ends the run with a message (the other ranks would wait in a collective for ever)
    watchdog = WorkerWatchdog(config.trainer.get("default_local_dir")).start()
    try:
        run_ppo(config, task_runner_class=TaskRunnerV1)
    except KeyboardInterrupt:
        if watchdog.message is None:
            raise
        import ray

        ray.shutdown()
        raise SystemExit(1) from None
    except Exception:
        if watchdog.report() is None:  # verl's own error reached the driver first: name the dead worker too
            raise
        import traceback

        import ray

        traceback.print_exc()
        print(f"ERROR: {watchdog.message}", file=sys.stderr, flush=True)  # last, below the traceback

        ray.shutdown()
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
