"""The five recipe scripts, run in dry-run mode: Hydra composes the full config over verl's
ppo_trainer, verl's validation and our checks run, and nothing starts (no Ray, no GPU)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MARKER = "--- composed config (dry run: nothing started) ---"

# method -> (estimator, hint source, teacher mode, lr), as the paper and method.md give them
EXPECTED = {
    "rlsd": ("rlsd", "answer", "frozen", 1e-6),
    "grpo": ("grpo", None, None, 1e-6),
    "opsd": ("opsd", "reference", "frozen", 1e-5),
    "sdpo": ("sdpo", "sibling", "ema", 1e-5),
    "grpo_opsd": ("grpo_opsd", "reference", "frozen", 1e-6),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import pandas as pd

    d = tmp_path_factory.mktemp("data")
    (d / "train").mkdir()
    row = {"prompt": [[{"role": "user", "content": "1 + 1?"}]], "extra_info": [{"question": "1 + 1?", "answer": "2"}]}
    for split in ("train", "val"):
        pd.DataFrame(row).to_parquet(d / "train" / f"{split}.parquet")  # a dry run reads the schema only
    return d


def run_script(method, data_dir, *overrides, **env):
    full_env = dict(os.environ, RLSD_DRY_RUN="1", PYTHON=sys.executable, DATA_DIR=str(data_dir), **env)
    for key in ("NNODES", "GPUS_PER_NODE", "MODEL_PATH", "EXPERIMENT_NAME", "LOGGER"):
        if key not in env:
            full_env.pop(key, None)
    return subprocess.run(
        ["bash", str(ROOT / "recipe" / f"run_{method}_qwen3vl8b.sh"), *overrides],
        env=full_env, capture_output=True, text=True, timeout=600, cwd=ROOT,
    )


def composed(out):
    assert out.returncode == 0, out.stderr[-4000:]
    assert "ray init kwargs" not in out.stdout  # verl's run_ppo was never entered
    assert "provider=hydra.searchpath" not in out.stderr  # every Hydra search path resolves
    return yaml.safe_load(out.stdout.split(MARKER, 1)[1])


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_each_recipe_composes_the_paper_setup(method, data_dir):
    cfg = composed(run_script(method, data_dir))
    estimator, hint, mode, lr = EXPECTED[method]
    alg, actor, rollout = cfg["algorithm"], cfg["actor_rollout_ref"]["actor"], cfg["actor_rollout_ref"]["rollout"]
    assert alg["adv_estimator"] == estimator
    assert actor["optim"]["lr"] == pytest.approx(lr)
    if hint is not None:
        assert (alg["teacher"]["hint"], alg["teacher"]["mode"]) == (hint, mode)
    assert cfg["trainer"]["v1"]["trainer_mode"] == "self_distill"
    if hint is not None:  # the paper's SDPO is logit-level (top-100 JSD, alpha 0.5, IS clip 2); the rest sampled
        distill = alg["distill"]
        if method == "sdpo":
            assert (distill["loss"], distill["topk"], distill["alpha"], distill["tail"], distill["is_clip"]) == (
                "jsd_topk", 100, 0.5, True, 2.0
            )
            assert alg["teacher"]["ema_rate"] in (None, 0.05)  # null = the EMA default 0.05
        else:
            assert distill["loss"] == "sampled"
    # shared settings: 256 prompts x 8 responses, 4096 + 4096 tokens, 200 steps, one update per step
    assert cfg["data"]["train_batch_size"] == 256 and rollout["n"] == 8
    assert rollout["temperature"] == 1.0
    assert (cfg["data"]["max_prompt_length"], cfg["data"]["max_response_length"]) == (4096, 4096)
    assert cfg["trainer"]["total_training_steps"] == 200
    assert actor["ppo_mini_batch_size"] == 256 and actor["ppo_epochs"] == 1
    assert (actor["clip_ratio_low"], actor["clip_ratio_high"], actor["clip_ratio_c"]) == (0.2, 0.28, 3.0)
    assert actor["loss_agg_mode"] == "token-mean"
    assert actor["use_kl_loss"] is False and alg["use_kl_in_reward"] is False
    assert actor["entropy_coeff"] == 0
    assert actor["optim"]["weight_decay"] == 0.01 and actor["grad_clip"] == 1.0
    assert alg["rlsd"]["lambda_init"] == 0.5 and alg["rlsd"]["decay_steps"] == 50 and alg["rlsd"]["clip_eps"] == 0.2
    assert alg["teacher"]["sync_every"] == 10 and alg["teacher"]["ema_rate"] == 0.05
    assert cfg["reward"]["custom_reward_function"]["path"] == "pkg://verl_ext.reward"
    assert (cfg["trainer"]["nnodes"], cfg["trainer"]["n_gpus_per_node"]) == (4, 8)
    assert cfg["data"]["train_files"] == f"{data_dir}/train/train.parquet"


def test_environment_and_overrides_reach_the_config(data_dir):
    out = run_script(
        "rlsd", data_dir, "algorithm.rlsd.decay_steps=60", "trainer.total_training_steps=5",
        NNODES="2", GPUS_PER_NODE="4", MODEL_PATH="/models/qwen", LOGGER="[console,wandb]",
    )
    cfg = composed(out)
    assert cfg["algorithm"]["rlsd"]["decay_steps"] == 60 and cfg["trainer"]["total_training_steps"] == 5
    assert (cfg["trainer"]["nnodes"], cfg["trainer"]["n_gpus_per_node"]) == (2, 4)
    assert cfg["actor_rollout_ref"]["model"]["path"] == "/models/qwen"
    assert cfg["trainer"]["logger"] == ["console", "wandb"]


def test_switching_method_is_one_override(data_dir):
    cfg = composed(run_script("grpo", data_dir, "algorithm.adv_estimator=opsd"))
    assert cfg["algorithm"]["adv_estimator"] == "opsd"


def test_unknown_estimator_fails_before_anything_starts(data_dir):
    out = run_script("rlsd", data_dir, "algorithm.adv_estimator=rlds")
    assert out.returncode == 2
    assert "algorithm.adv_estimator=rlds is not a registered" in out.stderr
    assert "rlsd" in out.stderr.split("valid:")[1]


def test_missing_data_file_fails_with_its_path(tmp_path):
    out = run_script("grpo", tmp_path / "nowhere")
    assert out.returncode == 2
    assert f"data.train_files: {tmp_path / 'nowhere'}/train/train.parquet does not exist" in out.stderr


def test_unknown_estimator_option_lists_the_valid_ones(data_dir):
    out = run_script("rlsd", data_dir, "+algorithm.rlsd.lambda_inti=0.3")
    assert out.returncode == 2
    assert "valid options: clip_eps, decay_steps" in out.stderr


def test_more_than_one_update_per_step_fails_before_anything_starts(data_dir):
    out = run_script("rlsd", data_dir, "actor_rollout_ref.actor.ppo_epochs=2")
    assert out.returncode == 2
    assert "ppo_epochs=2 (must be 1)" in out.stderr and "allow_multiple_updates" in out.stderr

