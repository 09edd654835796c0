"""The ``self_distill`` trainer mode (teacher pass) for verl's V1 trainer.

Importing :mod:`verl_ext.trainer.self_distill` registers the mode with verl's trainer registry;
:mod:`verl_ext` does that on ``import verl`` (the ``verl.plugins`` entry point). The Hydra config
``verl_ext/trainer/config/self_distill.yaml`` holds the defaults (``algorithm.teacher.*``).
"""

from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "config"

from verl_ext.trainer import self_distill  # noqa: E402,F401  (registers the trainer mode)
from verl_ext.trainer.self_distill import SelfDistillTrainer  # noqa: E402

__all__ = ["CONFIG_DIR", "SelfDistillTrainer"]
