"""The CPU launcher's pieces that do not need a training run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from verl_ext.cpu.launch import (
    CONFIG_DIR,
    format_table,
    mean_step_seconds,
    method_overrides,
    read_metrics,
    rollout_accuracy,
    start_end,
    start_end_lines,
    train_command,
    train_env,
    train_steps,
)


def test_method_overrides():
    # one trainer for every method: grpo too, so that the comparison differs in the estimator only
    for method in ("grpo", "rlsd", "opsd", "sdpo", "grpo_opsd"):
        assert method_overrides(method) == [f"algorithm.adv_estimator={method}", "trainer.v1.trainer_mode=self_distill"]
    with pytest.raises(ValueError, match="unknown method 'ppo'"):
        method_overrides("ppo")


def test_command_and_env_use_verl_entry_point(tmp_path):
    cmd = train_command(["a=1"], python="py")
    assert cmd[:2] == ["py", str(CONFIG_DIR.parent / "main.py")] and cmd[-1] == "a=1"
    assert (CONFIG_DIR / f"{cmd[cmd.index('--config-name') + 1]}.yaml").is_file()
    env = train_env(tmp_path / "m.jsonl", base={})
    assert env["VERL_PLATFORM"] == "cpu" and env["VERL_FILE_LOGGER_PATH"] == str((tmp_path / "m.jsonl").resolve())


def test_read_metrics_and_table(tmp_path):
    path = tmp_path / "m.jsonl"
    rows = [{"step": 1, "data": {"timing_s/step": 10.0, "rlsd/lambda": 0.5}},
            {"step": 2, "data": {"timing_s/step": 3.0}}, {"step": 3, "data": {"timing_s/step": 5.0}}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = read_metrics(path)
    assert metrics[1]["rlsd/lambda"] == 0.5 and sorted(metrics) == [1, 2, 3]
    assert mean_step_seconds(metrics) == pytest.approx(4.0)  # (3 + 5) / 2, warm-up step left out
    assert math.isnan(mean_step_seconds({}))  # trainer.val_only=true: no step ran
    table = format_table(metrics, columns=(("lambda", "rlsd/lambda"), ("step_s", "timing_s/step")))
    assert table.splitlines()[1].split() == ["1", "0.5", "10"]
    assert table.splitlines()[2].split() == ["2", "-", "3"]


def test_read_metrics_names_bad_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"step": 1, "data": {}}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"m\.jsonl:2: not a verl file-logger record"):
        read_metrics(path)


def test_rollout_accuracy(tmp_path):
    for step, scores in ((1, [0.0, 0.1, 0.9, 1.0]), (2, [0.0, 0.0])):
        (tmp_path / f"{step}.jsonl").write_text("".join(json.dumps({"score": s}) + "\n" for s in scores))
    assert rollout_accuracy(tmp_path) == {1: 0.5, 2: 0.0}


def test_start_end_reads_validation_before_training_and_at_the_end():
    val = "val-core/synthetic/acc/mean@1"
    metrics = {0: {val: 0.4},  # validation before training: no training metrics at step 0
               1: {"timing_s/step": 9.0, "critic/score/mean": 0.30},
               2: {"timing_s/step": 3.0, "critic/score/mean": 0.50, val: 0.55}}  # fmt: skip
    assert sorted(train_steps(metrics)) == [1, 2]
    assert mean_step_seconds(train_steps(metrics)) == pytest.approx(3.0)
    assert start_end(metrics, val) == (0.4, 0.55) and start_end(metrics, "missing") is None
    lines = start_end_lines(metrics)
    assert lines[0] == "critic/score/mean: 0.3 -> 0.5 (step 1 -> 2, +0.2)"
    assert lines[1] == f"{val}: 0.4 -> 0.55 (step 0 -> 2, +0.15)"


def test_compare_script_table_and_plot(tmp_path):
    """examples/compare_cpu.py on hand-written metric files of two seeds: mean +- sample std of start, end and gain
    (points, computed by hand below), the smallest gain, every run's numbers and the warm start per seed."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "compare_cpu.py"
    spec = importlib.util.spec_from_file_location("compare_cpu", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    val = "val-core/synthetic/acc/mean@2"  # the comparison validates with val_kwargs.n=2

    def run(start, mid, end):
        return [{"step": 0, "data": {val: start}}, {"step": 1, "data": {"critic/score/mean": 0.3}},
                {"step": 3, "data": {"critic/score/mean": 0.5, val: mid}}, {"step": 6, "data": {val: end}}]

    runs = {"grpo_seed0": run(0.50, 0.55, 0.70), "grpo_seed1": run(0.60, 0.62, 0.70),
            "rlsd_seed0": [{"step": 0, "data": {val: 0.25}}, {"step": 1, "data": {"rlsd/lambda": 0.5}}]}
    (tmp_path / "metrics").mkdir()
    for name, rows in runs.items():
        (tmp_path / "metrics" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    warm = tmp_path / "tiny_qwen3vl_warm"
    warm.mkdir()
    (warm / "warm_start.json").write_text(json.dumps({"steps": 160, "probe_passed": True, "validation": {
        "student_acc": 0.7, "student_acc/colour": 0.9, "student_acc/more": 0.5, "teacher_answer_acc": 1.0,
        "teacher_answer_acc/colour": 1.0, "teacher_answer_acc/more": 1.0, "blur_true_prob": 0.43}}))
    assert module.main(["--workdir", str(tmp_path), "--variants", "grpo", "rlsd", "--seeds", "0", "1"]) == 0
    lines = (tmp_path / "compare" / "cpu_compare.md").read_text().splitlines()
    # starts 50, 60 (mean 55, std sqrt(50) = 7.07); ends 70, 70; gains 20, 10 (mean 15, std 7.07)
    assert lines[2] == "| grpo | 2 | 55.0 ± 7.1 | 70.0 ± 0.0 | +15.0 ± 7.1 | +10.0 |"
    assert lines[3] == "| rlsd | 0 | - | - | - | - |"  # no validation after training
    assert "| grpo | 1 | 0.600 | 0.700 | +10.0 |" in lines
    assert "| 0 | 160 | passed | 0.700 (colour 0.90, more 0.50) | 1.000 (colour 1.00, more 1.00) | 0.43 |" in lines
    assert (tmp_path / "compare" / "cpu_compare.png").read_bytes().startswith(b"\x89PNG")


def test_val_acc_key_follows_val_kwargs_n():
    from verl_ext.cpu.launch import VAL_KEY, val_acc_key

    assert val_acc_key({0: {"val-core/synthetic/acc/mean@2": 0.5, "val-core/synthetic/acc/best@2/mean": 0.7}}) == (
        "val-core/synthetic/acc/mean@2")
    assert val_acc_key({0: {"critic/score/mean": 0.1}}) == VAL_KEY  # nothing logged yet: the config's n
    assert val_acc_key({}, "arithmetic") == "val-core/arithmetic/acc/mean@4"


def test_seed_plumbing():
    """--seed reaches the tiny model, its warm start (their directories) and RL (data order, sampling, teacher)."""
    from pathlib import Path

    from verl_ext.cpu.launch import seed_dirs, seed_overrides

    assert seed_overrides(3) == ["data.seed=3", "actor_rollout_ref.rollout.seed=3", "algorithm.teacher.seed=3"]
    assert seed_dirs(Path("w"), 0) == (Path("w/tiny_qwen3vl"), Path("w/tiny_qwen3vl_warm"))
    assert seed_dirs(Path("w"), 2) == (Path("w/tiny_qwen3vl_seed2"), Path("w/tiny_qwen3vl_warm_seed2"))


def test_val_key_matches_the_cpu_config():
    """The launcher's validation column is verl's key for the config's val_kwargs.n (mean@n)."""
    from omegaconf import OmegaConf

    from verl_ext.cpu.launch import CONFIG_DIR, VAL_KEY

    cfg = OmegaConf.load(CONFIG_DIR / "cpu_tiny.yaml")
    val = cfg.actor_rollout_ref.rollout.val_kwargs
    assert VAL_KEY == f"val-core/synthetic/acc/mean@{val.n}"
    # the released code's validation sampling, as the 8B recipe has it
    released = OmegaConf.load(CONFIG_DIR / "qwen3vl8b.yaml").actor_rollout_ref.rollout.val_kwargs
    assert (val.temperature, val.top_p, val.top_k, val.do_sample) == (
        released.temperature, released.top_p, released.top_k, released.do_sample)


def test_warm_start_lines_report_the_probe_and_the_gap(tmp_path):
    """What the launcher prints before training, from a warm-start record: the steps and the probe, the soft
    targets' weight, and the validation measurement (student, teacher given the answer, true-colour probability)."""
    from verl_ext.cpu.launch import warm_start_lines

    assert warm_start_lines(tmp_path) == []
    (tmp_path / "warm_start.json").write_text(json.dumps({
        "steps": 350, "probe_passed": True, "blur_task": "colour", "blur_acc": 0.4,
        "validation": {"student_acc": 0.8, "student_acc/colour": 1.0, "student_acc/more": 0.6, "teacher_answer_acc": 1.0,
                       "teacher_answer_acc/colour": 1.0, "teacher_answer_acc/more": 1.0,
                       "blur_true_prob": 0.43, "blur_true_top": 1.0}}))
    lines = warm_start_lines(tmp_path)
    assert lines[0] == "warm start: 350 supervised steps, probe passed"
    assert lines[1] == "  colour taught with soft targets: the true answer weighted 0.4, the others sharing the rest"
    assert lines[2] == "  student, no hint (greedy, validation): 0.800 (colour 1.00, more 0.60)"
    assert lines[4] == "  student's probability of the true colour answer (validation): 0.43, the most probable one on 1.00 of rows"


def test_rollout_name_reads_the_last_override():
    from verl_ext.cpu.launch import rollout_name

    assert rollout_name("hf", []) == "hf"
    assert rollout_name("hf", ["trainer.total_training_steps=2", "actor_rollout_ref.rollout.name=vllm"]) == "vllm"
    assert rollout_name("vllm", ["+actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.rollout.name=hf"]) == "hf"
    assert rollout_name("hf", ["actor_rollout_ref.rollout.name_suffix=vllm"]) == "hf"


def test_vllm_rollout_without_vllm_stops_before_any_work(monkeypatch, tmp_path, capsys):
    """The default venv has no vLLM (it comes with ``setup_venv.sh --vllm``): asking for its rollout stops with the
    command that installs it, before the data check or the warm start. vLLM is installed in the test venv, so
    its absence is simulated by hiding it from ``importlib.util.find_spec``."""
    import importlib.util

    from verl_ext.cpu import launch

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    for argv in (["--rollout", "vllm"], ["actor_rollout_ref.rollout.name=vllm"]):
        with pytest.raises(SystemExit) as stop:
            launch.main(["--workdir", str(tmp_path), *argv])
        assert stop.value.code == 2
        assert "bash scripts/setup_venv.sh --vllm" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing built


def test_quickstart_installs_vllm_only_when_asked():
    """examples/quickstart_cpu.sh's needs_vllm (which adds ``--vllm`` to the setup): ROLLOUT, --rollout and the
    Hydra override, and nothing else."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "examples" / "quickstart_cpu.sh"
    body = script.read_text()
    func = body[body.index("needs_vllm() {"): body.index("\n}\n", body.index("needs_vllm() {")) + 3]
    cases = {"": False, "grpo --seed 2": False, "--rollout hf": False, "--rollout vllm": True, "--rollout=vllm": True,
             "rlsd actor_rollout_ref.rollout.name=vllm": True, "+actor_rollout_ref.rollout.name=vllm": True,
             "actor_rollout_ref.rollout.name=hf": False, "vllm": False}
    for args, want in cases.items():
        run = subprocess.run(["bash", "-c", f"{func}\nneeds_vllm {args}"], env={"PATH": os.environ["PATH"]})
        assert (run.returncode == 0) == want, args
    run = subprocess.run(["bash", "-c", f"{func}\nneeds_vllm grpo"], env={"PATH": os.environ["PATH"], "ROLLOUT": "vllm"})
    assert run.returncode == 0
