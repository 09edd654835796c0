"""The estimators must be visible to verl in a fresh process that only imports verl."""

import os
import subprocess
import sys

CHECK = """
import verl
from verl.trainer.ppo import core_algos
names = ["rlsd", "opsd", "sdpo", "grpo_opsd"]
fns = [core_algos.get_adv_estimator_fn(n) for n in names]
assert all(f.__module__ == "verl_ext.algorithms.registry" for f in fns), [f.__module__ for f in fns]
# grpo stays verl's own
assert core_algos.get_adv_estimator_fn("grpo") is core_algos.compute_grpo_outcome_advantage
print("OK")
"""


def test_import_verl_registers_estimators_in_a_fresh_process():
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_MODULES", "PYTHONPATH")}
    env["VERL_USE_EXTERNAL_PLUGINS"] = "auto"
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, cwd="/", timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")


def test_plugin_can_be_switched_off():
    """With verl's plugin discovery off, nothing of ours is registered: the entry point is the mechanism."""
    env = dict(os.environ, VERL_USE_EXTERNAL_PLUGINS="none")
    env.pop("VERL_USE_EXTERNAL_MODULES", None)
    code = "import sys, verl; from verl.trainer.ppo import core_algos; print('rlsd' in core_algos.ADV_ESTIMATOR_REGISTRY, 'verl_ext' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd="/", timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["False", "False"]
