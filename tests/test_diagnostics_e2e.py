"""One real RLSD training step of verl's trainer on CPU with token-credit dumps on, then the plot script.

The dump is written by the ``self_distill`` trainer's diagnostics hook from the real teacher pass;
the checks use only the dump's own numbers and the RLSD formula, written out here independently.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from verl_ext.cpu.launch import read_metrics, run_training
from verl_ext.diagnostics import read_records

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parent
SCRIPT = TESTS.parent / "examples" / "plot_token_credit.py"
CLIP_EPS = 0.2


def test_rlsd_step_dumps_token_credit_and_plots(tmp_path, warm_model_dir, synthetic_data_dir):
    dumps = tmp_path / "dumps"
    metrics_path, _ = run_training(
        "rlsd", tmp_path, warm_model_dir, synthetic_data_dir, steps=1, timeout=900,
        extra=[  # the project's reward on the warm start: groups with mixed scores, non-zero advantages
            "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.rollout.n=4",
            "trainer.val_before_train=false", "trainer.test_freq=-1",
            "trainer.save_freq=-1",
            f"algorithm.rlsd.clip_eps={CLIP_EPS}",
            "algorithm.diagnostics.dump_every=1",
            "algorithm.diagnostics.num_responses=3",
            f"algorithm.diagnostics.dir={dumps}",
        ],
    )  # fmt: skip
    step = read_metrics(metrics_path)[1]
    assert step["diag/dumped_responses"] == 3.0
    assert 0.0 <= step["diag/answer_leak_frac"] <= 1.0 and step["diag/answer_leak_evaluated"] > 0
    for key in ("diag/answer_token_teacher_excess", "diag/delta_abs_p99", "diag/token_adv_spread"):
        assert math.isfinite(step[key]), key
    assert step["diag/token_adv_sign_flip_frac"] == 0.0  # RLSD never flips the sign of A_i

    dump = dumps / "step_000001.jsonl"
    records = read_records(dump)
    assert len(records) == 3 and len({r.row for r in records}) == 3
    lam = step["rlsd/lambda"]
    for rec in records:
        assert rec.step == 1 and rec.estimator == "rlsd" and len(rec) > 0 and rec.ground_truth
        assert rec.lam == pytest.approx(lam) and rec.clip_eps == CLIP_EPS
        t = rec.tokens
        for k in range(len(rec)):
            assert t["delta"][k] == pytest.approx(t["teacher_logp"][k] - t["student_logp"][k], abs=1e-6)
            w = math.exp(rec.advantage_sign * t["delta"][k])
            assert t["w"][k] == pytest.approx(w, rel=1e-6)
            clipped = min(max(w, 1 - CLIP_EPS), 1 + CLIP_EPS)
            # the trainer's advantage (estimator) against the formula on the dumped numbers
            expected = rec.seq_advantage * ((1 - lam) + lam * clipped)
            assert t["advantage"][k] == pytest.approx(expected, rel=1e-4, abs=1e-6)
            assert t["student_logp"][k] <= 0.0 and t["teacher_logp"][k] <= 0.0
    if any(r.advantage_sign for r in records):  # the mix: positive and negative first when both exist
        signs = [r.advantage_sign for r in records]
        assert signs[0] == 1 or 1 not in signs

    spec = importlib.util.spec_from_file_location("plot_token_credit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "plots"
    assert module.main([str(dump), "--by", "weight", "--out", str(out)]) == 0
    assert module.main(["--curves", str(metrics_path), "--out", str(out)]) == 0
    for rec in records:
        assert (out / f"step_000001_r{rec.row}_weight.png").read_bytes().startswith(b"\x89PNG")
    page = (out / "step_000001_weight.html").read_text(encoding="utf-8")
    assert page.count("<span title=") == sum(len(r) for r in records)
    assert (out / f"{metrics_path.stem}_curves.png").stat().st_size > 5000
