"""The baselines' released forms (``BASELINE_FORM=released``) through verl's trainer on CPU: the
overrides come from the recipes' own ``released_overrides``, 2 steps each on the warm-started tiny
Qwen3-VL with the project's reward."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest

from verl_ext.cpu.launch import read_metrics, run_training

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
FORMS = ("opsd", "sdpo", "grpo_opsd")
COMMON = ["data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.rollout.n=4",
          "trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.save_freq=-1"]
# the recipe's SDPO loss (k for the tiny model); OPSD's one response per prompt gives 4 rows a step, so
# micro-batches of 4 (the CPU config's 16 need 16 rows; the GPU recipes batch by tokens)
TINY = {"sdpo": ["algorithm.distill.loss=jsd_topk", "algorithm.distill.topk=8"],
        "opsd": ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
                 "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
                 "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4"]}


def released_overrides(method: str) -> list[str]:
    """What ``BASELINE_FORM=released bash recipe/run_<method>_qwen3vl8b.sh`` adds, from common.sh itself."""
    env = dict(os.environ, BASELINE_FORM="released", EXPERIMENT_NAME=f"{method}_released")
    out = subprocess.run(["bash", "-c", f'source "{ROOT}/recipe/common.sh"; released_overrides {method}'],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, warm_model_dir, synthetic_data_dir):
    work = tmp_path_factory.mktemp("e2e_released")
    results = {}
    for method in FORMS:
        extra = [*COMMON, *TINY.get(method, []), *released_overrides(method)]
        metrics, _ = run_training(method, work, warm_model_dir, synthetic_data_dir, steps=2, extra=extra, timeout=900)
        results[method] = read_metrics(metrics)
    return results


def test_released_overrides_are_the_documented_ones():
    assert released_overrides("opsd") == ["algorithm.rollout.seed=1", "actor_rollout_ref.rollout.n=1",
                                          "algorithm.teacher.mode=live", "algorithm.distill.loss=sampled_kl"]


@pytest.mark.parametrize("method", FORMS)
def test_released_form_trains(runs, method):
    metrics = runs[method]
    assert sorted(metrics) == [1, 2]
    for step, data in metrics.items():
        assert "teacher/logprob_gap_mean" in data and "actor/grad_norm" in data, (method, step)
        assert data["actor/grad_norm"] > 0, (method, step)
        bad = {k: v for k, v in data.items() if isinstance(v, float) and not math.isfinite(v)}
        assert not bad, f"{method} step {step}: non-finite metrics {bad}"


def test_released_opsd_trains_the_sampled_kl_loss(runs):
    """One response per prompt, every token with a teacher signal at advantage -1 (the released kl loss)."""
    for step, data in runs["opsd"].items():
        assert data["critic/advantages/min"] == -1.0, step
        assert data["critic/advantages/max"] in (-1.0, 0.0), step
