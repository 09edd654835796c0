"""verl's own trainer (``python -m verl.trainer.main_ppo``) in the ``self_distill`` mode on CPU.

A tiny random Qwen3-VL, real parquet rows (text and image), real Ray, TransferQueue and verl's FSDP
engine. With a teacher template that adds nothing to the student's prompt the teacher must score
the sampled tokens exactly as the student did (``teacher/logprob_gap_mean == 0``): through the
actor (``live``) and through the ref copy (``frozen``, before any sync the copy is the initial
policy). A resume restores the step counter and the teacher copy. A row whose teacher prompt cannot
fit the budget (the template pads image questions past it) runs through: it is counted, and its tokens
keep delta = 0.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from pathlib import Path

import pytest

from verl_ext.cpu.launch import train_command

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def _write_rows(out: Path) -> None:
    import pandas as pd
    from PIL import Image

    def png(rgb):
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), rgb).save(buf, format="PNG")
        return buf.getvalue()

    rows = []
    for i, (name, rgb) in enumerate([("red", (220, 20, 20)), ("3", None), ("blue", (20, 20, 220)), ("7", None)]):
        question = "<image>What colour is the square?" if rgb else f"What is {i} + {3 - i}?"
        rows.append({
            "data_source": "synthetic",
            "prompt": [{"role": "user", "content": question + " Put the final answer in <answer></answer>."}],
            "images": [{"bytes": png(rgb)}] if rgb else [],
            "ability": "visual_reasoning" if rgb else "math",
            "reward_model": {"style": "rule", "ground_truth": name},
            "extra_info": {"index": i, "split": "train", "id": str(i), "problem_type": "open" if rgb else "numerical",
                           "options": [], "question": question, "answer": name,
                           "qwen3vl_235b_thinking_response": f"<thought>look</thought><answer>{name}</answer>"},
        })
    pd.DataFrame(rows).to_parquet(out / "train.parquet")
    pd.DataFrame(rows[:2]).to_parquet(out / "test.parquet")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from verl_ext.tiny_model import build_tiny_qwen3vl

    base = tmp_path_factory.mktemp("self_distill_e2e")
    model = build_tiny_qwen3vl(tmp_path_factory.getbasetemp() / "tiny_qwen3vl")
    _write_rows(base)
    (base / "plain.jinja").write_text("{{ prompt }}")
    # image questions get 6000 filler tokens: past max_length (128 + 4096 + 512 + 32), even with no hint
    (base / "over_budget.jinja").write_text("{{ prompt }}{% if 'colour' in prompt %}{{ ' pad' * 6000 }}{% endif %}")
    return base, model


def _run(base: Path, model: Path, name: str, *overrides: str, template: str = "plain.jinja") -> list[dict[str, float]]:
    cmd = train_command([
        f"data.train_files={base / 'train.parquet'}", f"data.val_files={base / 'test.parquet'}",
        f"actor_rollout_ref.model.path={model}", "reward.custom_reward_function.path=pkg://verl_ext.reward",
        "trainer.v1.trainer_mode=self_distill", f"trainer.default_local_dir={base / name}", "trainer.logger=[console]",
        f"algorithm.teacher.template={base / template}", "algorithm.teacher.context=student_prompt",
        # the 4 fixture rows at 2 prompts x 4 responses per step, no validation (the CPU default's scale is larger)
        "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.rollout.n=4",
        *[f"actor_rollout_ref.{k}_micro_batch_size_per_gpu=4" for k in ("actor.ppo", "rollout.log_prob", "ref.log_prob")],
        "trainer.val_before_train=false", "trainer.test_freq=-1", *overrides,
    ])
    env = dict(os.environ, VERL_PLATFORM="cpu")
    proc = subprocess.run(cmd, cwd=base, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    steps = []
    for line in re.findall(r"step:\d+ - .*", log):
        steps.append({k: float(v) for k, v in re.findall(r"([\w/]+):(-?[\d.]+(?:e-?\d+)?)(?= - |$)", line)})
    return steps


def test_live_teacher_without_hint_reproduces_old_log_probs(setup):
    base, model = setup
    steps = _run(base, model, "live", "algorithm.adv_estimator=opsd", "algorithm.teacher.mode=live",
                 "trainer.total_training_steps=2")
    assert [s["training/global_step"] for s in steps] == [1, 2]
    for s in steps:
        assert s["teacher/logprob_gap_mean"] == 0.0 and s["opsd/delta_abs_mean"] == 0.0
        assert s["teacher/valid_frac"] == 1.0 and "timing_s/teacher" in s
        assert "timing_s/teacher_wait" in s  # inputs built in the driver thread during the old-log-prob pass


def test_frozen_teacher_copy_sync_and_resume(setup):
    base, model = setup
    common = ["algorithm.adv_estimator=rlsd", "algorithm.teacher.sync_every=3", "trainer.save_freq=2",
              "trainer.resume_mode=auto", "trainer.total_epochs=4"]  # 4 rows / 2 per step: 2 steps per epoch
    first = _run(base, model, "frozen", *common, "trainer.total_training_steps=2", template="over_budget.jinja")
    assert [s["teacher/synced"] for s in first] == [0.0, 0.0]
    assert first[0]["teacher/logprob_gap_mean"] == 0.0  # the ref copy starts as the policy
    # each step holds one image question x 4 responses: over budget, no error, no teacher signal (delta 0)
    assert [s["teacher/rows_over_budget"] for s in first] == [4.0, 4.0]
    assert [s["teacher/valid_frac"] for s in first] == [0.5, 0.5]
    assert first[0]["rlsd/delta_mean"] == 0.0 and first[0]["rlsd/weight_clip_frac"] == 0.0
    assert first[0]["rlsd/lambda"] == pytest.approx(0.5) and first[1]["rlsd/lambda"] == pytest.approx(0.49)
    assert (base / "frozen" / "global_step_2" / "teacher" / "teacher_rank0.pt").is_file()
    # resume: step 3 continues lambda; the teacher copy comes back from the checkpoint, so no re-sync
    # at step 3 ((3 - 1) % 3 != 0); step 4 is a scheduled sync
    second = _run(base, model, "frozen", *common, "trainer.total_training_steps=4")
    assert [s["training/global_step"] for s in second] == [3, 4]
    assert [s["teacher/synced"] for s in second] == [0.0, 1.0]
    assert second[0]["rlsd/lambda"] == pytest.approx(0.48)
