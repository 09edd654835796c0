"""The five methods on a text-only model, end to end through verl's trainer on CPU: the tiny text Qwen3 (real
tokenizer, no processor) after a short warm start on the generated arithmetic set, 2 steps of each method with the
project's reward on \\boxed{} answers, through ``verl_ext.cpu.launch --modality text`` (the CPU config with
``+modality=text``).

The warm start answers in the format and leaves the ``larger`` task at chance, so sampled groups mix rewards:
advantages and gradients are non-zero. RLSD runs with ``lambda_init=0.4, decay_steps=4``: by hand lambda is 0.4 at
step 1 and 0.3 at step 2. SDPO runs with the logit-level loss (top-k JSD), the others with the sampled-token form.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from verl_ext.cpu.launch import METHODS, read_metrics, run_training

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
# 100 supervised steps: the format is learned by ~80 (loss 8.6 -> 0.6, measured on this machine kind)
TEST_WARM_STEPS = 100
COMMON = [
    "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.rollout.n=4",
    "trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.save_freq=2",
    "algorithm.rlsd.lambda_init=0.4", "algorithm.rlsd.decay_steps=4",
]
METHOD_EXTRA = {"sdpo": ["algorithm.distill.loss=jsd_topk", "algorithm.distill.topk=8"]}


@pytest.fixture(scope="module")
def text_data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("text_data")
    subprocess.run([sys.executable, str(ROOT / "data_prep" / "build_parquet.py"), "arithmetic", "--out-dir", str(out),
                    "--arithmetic-train-size", "200", "--arithmetic-test-size", "8", "--quiet"], check=True, cwd=ROOT)
    return out


@pytest.fixture(scope="module")
def text_warm_dir(tmp_path_factory, text_data_dir) -> Path:
    from verl_ext.text_warm_start import build_text_warm_start
    from verl_ext.tiny_text_model import build_tiny_qwen3

    base = build_tiny_qwen3(tmp_path_factory.mktemp("tiny_qwen3"))
    return build_text_warm_start(base, text_data_dir / "arithmetic" / "train.parquet",
                                 tmp_path_factory.mktemp("tiny_qwen3_warm"), log=None, steps=TEST_WARM_STEPS)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, text_warm_dir, text_data_dir):
    work = tmp_path_factory.mktemp("e2e_text")
    out = {}
    for method in METHODS:
        metrics, ckpt = run_training(method, work, text_warm_dir, text_data_dir, steps=2, modality="text", timeout=900,
                                     extra=[*COMMON, *METHOD_EXTRA.get(method, [])])
        out[method] = (read_metrics(metrics), ckpt)
    return out


@pytest.mark.parametrize("method", METHODS)
def test_text_method_runs_with_real_rewards_and_advantages(runs, method):
    metrics, _ = runs[method]
    assert sorted(metrics) == [1, 2]
    for step, data in metrics.items():
        bad = {k: v for k, v in data.items() if isinstance(v, float) and not math.isfinite(v)}
        assert not bad, f"{method} step {step}: non-finite metrics {bad}"
        assert 0.0 <= data["critic/score/min"] <= data["critic/score/max"] <= 1.0
        assert data["response_length/mean"] > 0
    assert any(abs(d["critic/advantages/max"]) > 1e-6 or abs(d["critic/advantages/min"]) > 1e-6
               for d in metrics.values()), method
    assert any(d["actor/grad_norm"] > 0.0 for d in metrics.values()), method


@pytest.mark.parametrize("method", METHODS)
def test_text_teacher_pass(runs, method):
    """The teacher methods ran the teacher pass on the tokenizer-only model with the data's question as context."""
    metrics, _ = runs[method]
    for step, data in metrics.items():
        if method == "grpo":
            assert not any(k.startswith("teacher/") for k in data)
            continue
        assert "timing_s/teacher" in data and math.isfinite(data["teacher/logprob_gap_mean"])
        assert data["teacher/context_fallback"] == 0.0 and data["teacher/rows_over_budget"] == 0.0
        if method != "sdpo":
            assert data["teacher/valid_frac"] == 1.0 and data["teacher/hint_missing"] == 0.0


def test_text_rlsd_lambda_schedule(runs):
    metrics, _ = runs["rlsd"]
    assert [metrics[s]["rlsd/lambda"] for s in (1, 2)] == pytest.approx([0.4, 0.3], abs=1e-9)


def test_text_sdpo_logit_level_loss(runs):
    metrics, _ = runs["sdpo"]
    for data in metrics.values():
        assert math.isfinite(data["actor/distill/loss"]) and data["actor/distill/divergence_mean"] >= 0.0
