"""verl's own trainer (main_ppo, V1) on CPU with the warm-started tiny Qwen3-VL and the project's reward:
2 steps of each method, then resume.

Runs through ``verl_ext.cpu.launch`` (verl's entry point in a subprocess with the CPU config) and
reads the metrics verl's file logger wrote. The warm start answers in the format and is right part of
the time, so sampled groups mix rewards: advantages and gradients are non-zero. RLSD runs with
``lambda_init=0.4, decay_steps=4``, so by hand ``lambda(step s) = 0.4 * (1 - (s - 1) / 4)``: 0.4, 0.3,
then 0.2 at step 3 after the resume. OPSD and SDPO run with the logit-level loss
(``algorithm.distill.loss=jsd_topk``), GRPO+OPSD with the sampled-token form (the default), so both
forms go through verl's trainer.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from verl_ext.cpu.launch import METHODS, latest_checkpoint, read_metrics, run_training

pytestmark = pytest.mark.e2e

TEACHER_METRIC = "teacher/logprob_gap_mean"
LAMBDA_INIT, DECAY_STEPS = 0.4, 4
COMMON = [
    # the project's reward (cpu_tiny.yaml's default, pkg://verl_ext.reward); smaller steps than the quickstart's
    "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.rollout.n=4",
    "trainer.val_before_train=false", "trainer.test_freq=-1",
    "trainer.save_freq=2",  # one checkpoint per run, at step 2 (RLSD resumes from it)
    f"algorithm.rlsd.lambda_init={LAMBDA_INIT}",
    f"algorithm.rlsd.decay_steps={DECAY_STEPS}",
]


# Per-method extra overrides: the top-k JSD for opsd and sdpo (k small for the tiny model).
LOGIT_LEVEL = ("opsd", "sdpo")
METHOD_EXTRA = {m: ["algorithm.distill.loss=jsd_topk", "algorithm.distill.topk=8"] for m in LOGIT_LEVEL}
DISTILL_METRICS = ("actor/distill/loss", "actor/distill/divergence_mean", "actor/distill/student_topk_mass",
                   "actor/distill/teacher_topk_mass", "actor/distill/valid_frac")  # fmt: skip


def expected_lambda(step: int) -> float:
    return LAMBDA_INIT * max(0.0, 1.0 - (step - 1) / DECAY_STEPS)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, warm_model_dir, synthetic_data_dir):
    """Every method for 2 steps, then RLSD resumed from its step-2 checkpoint for step 3."""
    work = tmp_path_factory.mktemp("e2e")
    results = {}
    for method in METHODS:
        extra = [*COMMON, *METHOD_EXTRA.get(method, [])]
        metrics, ckpt = run_training(method, work, warm_model_dir, synthetic_data_dir, steps=2, extra=extra, timeout=900)
        results[method] = (read_metrics(metrics), ckpt)
    metrics, ckpt = run_training(
        "rlsd", work, warm_model_dir, synthetic_data_dir, steps=3, run_name="rlsd_resume",
        extra=[*COMMON, "trainer.resume_mode=auto"], timeout=900,
    )  # fmt: skip
    results["rlsd_resume"] = (read_metrics(metrics), ckpt)
    return results


@pytest.mark.parametrize("method", METHODS)
def test_steps_ran_with_finite_metrics(runs, method):
    metrics, _ = runs[method]
    assert sorted(metrics) == [1, 2]
    for step, data in metrics.items():
        assert data["training/global_step"] == step
        # opsd/sdpo with the top-k loss train on that loss alone: no PPO term
        loss_key = "actor/distill/loss" if method in LOGIT_LEVEL else "actor/pg_loss"
        for key in ("critic/score/mean", loss_key, "actor/grad_norm", "timing_s/step", "timing_s/gen"):
            assert key in data, f"{method} step {step}: {key} missing"
        bad = {k: v for k, v in data.items() if isinstance(v, float) and not math.isfinite(v)}
        assert not bad, f"{method} step {step}: non-finite metrics {bad}"


@pytest.mark.parametrize("method", METHODS)
def test_real_reward_gives_advantages_and_gradients(runs, method):
    """The project's reward on the warm start's samples: scores in [0, 1], some group with mixed scores
    (a non-zero advantage), and a non-zero gradient in some step."""
    metrics, _ = runs[method]
    for step, data in metrics.items():
        assert 0.0 <= data["critic/score/min"] <= data["critic/score/max"] <= 1.0, (method, step)
    assert any(abs(d["critic/advantages/max"]) > 1e-6 or abs(d["critic/advantages/min"]) > 1e-6 for d in metrics.values()), method
    assert any(d["actor/grad_norm"] > 0.0 for d in metrics.values()), method


@pytest.mark.parametrize("method", METHODS)
def test_teacher_pass_only_for_teacher_methods(runs, method):
    metrics, _ = runs[method]
    for step, data in metrics.items():
        if method == "grpo":
            assert not any(k.startswith("teacher/") for k in data), f"grpo logged teacher metrics at step {step}"
        else:
            assert TEACHER_METRIC in data and "timing_s/teacher" in data, f"{method} step {step}: no teacher pass"


@pytest.mark.parametrize("method", LOGIT_LEVEL)
def test_topk_distillation_metrics(runs, method):
    metrics, _ = runs[method]
    for step, data in metrics.items():
        for key in DISTILL_METRICS:
            assert key in data and math.isfinite(data[key]), f"{method} step {step}: {key} missing or non-finite"
        assert data["actor/distill/divergence_mean"] >= 0.0
        assert 0.0 < data["actor/distill/student_topk_mass"] <= 1.0 and 0.0 < data["actor/distill/teacher_topk_mass"] <= 1.0
        assert "actor/pg_loss" not in data  # the loss is the distillation term only
    assert metrics[1]["actor/distill/valid_frac"] == 1.0 or method == "sdpo"  # opsd: every row has a reference


def test_rlsd_lambda_follows_schedule(runs):
    metrics, _ = runs["rlsd"]
    for step in (1, 2):
        assert metrics[step]["rlsd/lambda"] == pytest.approx(expected_lambda(step), abs=1e-9)
        assert 0.0 <= metrics[step]["rlsd/weight_clip_frac"] <= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_policy_weights_changed(runs, method, warm_model_dir):
    """Weight decay is 0 in the CPU config, so any change is a gradient step."""
    from safetensors.torch import load_file

    _, ckpt = runs[method]
    final = ckpt / "global_step_2"  # (rlsd's folder also holds the resumed run's step 3)
    assert final.is_dir()
    before = load_file(str(Path(warm_model_dir) / "model.safetensors"))
    after = load_file(str(final / "actor" / "huggingface" / "model.safetensors"))
    assert set(before) == set(after)
    change = max(float((after[k].float() - before[k].float()).abs().max()) for k in before)
    assert change > 1e-4, f"{method}: largest weight change {change}"


def test_resume_restores_step_and_lambda(runs):
    metrics, ckpt = runs["rlsd_resume"]
    assert sorted(metrics) == [3], "the resumed run must continue at step 3, not restart at 1"
    assert metrics[3]["training/global_step"] == 3
    assert metrics[3]["rlsd/lambda"] == pytest.approx(expected_lambda(3), abs=1e-9)
    assert latest_checkpoint(ckpt).name == "global_step_3"


def test_eval_command_scores_the_synthetic_split(tmp_path, warm_model_dir, synthetic_data_dir):
    """``python -m verl_ext.eval --backend hf`` on the synthetic test split: every stored response re-scored
    by hand with the training reward, and the reported accuracy their mean."""
    import json
    import subprocess
    import sys

    import pyarrow.parquet as pq

    from verl_ext.reward import compute_score

    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "verl_ext.eval", "--model", str(warm_model_dir), "--data-dir", str(synthetic_data_dir),
           "--out-dir", str(out), "--benchmarks", "synthetic", "--backend", "hf", "--preset", "greedy",
           "--set", "max_new_tokens=24"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "synthetic" / "samples.jsonl").read_text().splitlines()]
    rows = {r["extra_info"]["id"]: r for r in pq.read_table(synthetic_data_dir / "synthetic" / "test.parquet").to_pylist()}
    assert len(records) == len(rows) == 6
    correct = []
    for rec in records:
        row = rows[rec["id"].split(":", 1)[1]]
        acc = compute_score("synthetic", rec["response"], row["reward_model"]["ground_truth"], row["extra_info"])["acc"]
        assert rec["correct"] == (acc == 1.0)
        correct.append(acc)
    result = json.loads((out / "synthetic" / "results.json").read_text())
    assert result["metrics"]["accuracy"] == pytest.approx(100.0 * sum(correct) / len(correct))
    assert "synthetic: accuracy" in (out / "table.md").read_text()
