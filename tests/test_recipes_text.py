"""The five text recipes (run_*_qwen3_8b.sh), run in dry-run mode: Hydra composes config/qwen3_8b.yaml over the
same chain as the Qwen3-VL recipes, verl's validation and our checks run, and nothing starts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_recipes import EXPECTED, composed

ROOT = Path(__file__).resolve().parents[1]
BOXED = "Please reason step by step, and put your final answer within \\boxed{}."


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import pandas as pd

    d = tmp_path_factory.mktemp("data")
    row = {"prompt": [[{"role": "user", "content": "1 + 1?"}]], "extra_info": [{"question": "1 + 1?", "answer": "2"}]}
    for name, split in (("dapo", "train"), ("math500", "test"), ("aime24", "test")):
        (d / name).mkdir()
        pd.DataFrame(row).to_parquet(d / name / f"{split}.parquet")  # a dry run reads the schema only
    return d


def run_script(method, data_dir, *overrides, suffix="qwen3_8b", **env):
    full_env = dict(os.environ, RLSD_DRY_RUN="1", PYTHON=sys.executable, DATA_DIR=str(data_dir), **env)
    for key in ("NNODES", "GPUS_PER_NODE", "MODEL_PATH", "EXPERIMENT_NAME", "LOGGER", "RECIPE_CONFIG", "BASELINE_FORM"):
        if key not in env:
            full_env.pop(key, None)
    return subprocess.run(["bash", str(ROOT / "recipe" / f"run_{method}_{suffix}.sh"), *overrides],
                          env=full_env, capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_each_text_recipe_composes_the_method_at_text_scale(method, data_dir):
    cfg = composed(run_script(method, data_dir))
    estimator, hint, mode, lr = EXPECTED[method]
    alg, actor, rollout = cfg["algorithm"], cfg["actor_rollout_ref"]["actor"], cfg["actor_rollout_ref"]["rollout"]
    # the method: the same overrides as the Qwen3-VL recipe's
    assert alg["adv_estimator"] == estimator and actor["optim"]["lr"] == pytest.approx(lr)
    if hint is not None:
        assert (alg["teacher"]["hint"], alg["teacher"]["mode"]) == (hint, mode)
        assert alg["teacher"]["format_instruction"] == BOXED
    # the shared chain: loss and optimiser as the paper's
    assert (actor["clip_ratio_low"], actor["clip_ratio_high"], actor["clip_ratio_c"]) == (0.2, 0.28, 3.0)
    assert actor["ppo_epochs"] == 1 and actor["ppo_mini_batch_size"] == cfg["data"]["train_batch_size"] == 256
    assert alg["rlsd"]["lambda_init"] == 0.5 and alg["rlsd"]["decay_steps"] == 50
    assert cfg["trainer"]["v1"]["trainer_mode"] == "self_distill"
    # the text scale and data
    model = cfg["actor_rollout_ref"]["model"]
    assert model["path"] == "Qwen/Qwen3-8B" and rollout["n"] == 8
    assert (cfg["data"]["max_prompt_length"], cfg["data"]["max_response_length"]) == (2048, 8192)
    assert cfg["data"]["apply_chat_template_kwargs"] == {"enable_thinking": False}
    assert "custom_cls" not in cfg["data"] or cfg["data"]["custom_cls"].get("path") is None  # no image resize
    assert cfg["data"]["train_files"] == f"{data_dir}/dapo/train.parquet"
    assert cfg["data"]["val_files"] == [f"{data_dir}/math500/test.parquet", f"{data_dir}/aime24/test.parquet"]
    kwargs = cfg["reward"]["custom_reward_function"]["reward_kwargs"]
    assert (kwargs["variant"], kwargs["answer_format"], kwargs["format_weight"]) == ("strict", "boxed", 0.0)
    assert cfg["trainer"]["experiment_name"] == f"qwen3_8b_{estimator}"
    # the teacher's longest row fits the engine that scores it
    assert cfg["actor_rollout_ref"]["ref"]["log_prob_max_token_len_per_gpu"] >= 2048 + 4096 + 512 + 8192


def test_model_switch_and_overrides_reach_the_config(data_dir):
    cfg = composed(run_script("rlsd", data_dir, "trainer.total_training_steps=5", MODEL_PATH="Qwen/Qwen3-4B-Instruct-2507"))
    assert cfg["actor_rollout_ref"]["model"]["path"] == "Qwen/Qwen3-4B-Instruct-2507"
    assert cfg["trainer"]["total_training_steps"] == 5


def test_released_form_names_the_text_run(data_dir):
    cfg = composed(run_script("rlsd", data_dir, BASELINE_FORM="released"))
    assert cfg["trainer"]["experiment_name"] == "qwen3_8b_rlsd_released"
    assert cfg["algorithm"]["rlsd"]["decay_steps"] == 60


def test_vl_and_text_recipes_differ_only_in_config_and_model(data_dir):
    """The VL script with RECIPE_CONFIG=qwen3_8b is the text recipe; an unknown config stops with its name."""
    text = composed(run_script("opsd", data_dir))
    same = composed(run_script("opsd", data_dir, suffix="qwen3vl8b", RECIPE_CONFIG="qwen3_8b"))
    assert text == same
    out = run_script("opsd", data_dir, suffix="qwen3vl8b", RECIPE_CONFIG="qwen3_9b")
    assert out.returncode == 2 and "RECIPE_CONFIG=qwen3_9b" in out.stderr


def test_cpu_text_modality_composes_over_the_cpu_config(tmp_path):
    """`+modality=text` over cpu_tiny.yaml (what `verl_ext.cpu.launch --modality text` runs): the CPU scale stays,
    data, model and the teacher's Format sentence become the text ones."""
    import pandas as pd

    from verl_ext.cpu.launch import MODALITIES

    (tmp_path / "arithmetic").mkdir()
    row = {"prompt": [[{"role": "user", "content": "1 + 1?"}]], "extra_info": [{"question": "1 + 1?", "answer": "2"}]}
    for split in ("train", "test"):
        pd.DataFrame(row).to_parquet(tmp_path / "arithmetic" / f"{split}.parquet")
    overrides, dataset = MODALITIES["text"]
    env = dict(os.environ, RLSD_DRY_RUN="1", VERL_PLATFORM="cpu")
    out = subprocess.run([sys.executable, str(ROOT / "recipe" / "main.py"), "--config-name", "cpu_tiny", *overrides,
                          f"data.train_files={tmp_path / dataset / 'train.parquet'}",
                          f"data.val_files={tmp_path / dataset / 'test.parquet'}"],
                         env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    cfg = composed(out)
    assert cfg["actor_rollout_ref"]["model"]["path"] == "outputs/cpu/tiny_qwen3_warm"
    assert (cfg["data"]["max_prompt_length"], cfg["data"]["max_response_length"]) == (96, 32)
    assert cfg["algorithm"]["teacher"]["format_instruction"] == BOXED
    assert cfg["actor_rollout_ref"]["rollout"]["name"] == "hf" and cfg["trainer"]["device"] == "cpu"  # CPU scale kept
