"""The evaluation scorers inside verl's validation: loaded through verl's own custom-reward loader,
called from a worker thread as verl's reward loop does, and aggregated by verl's own validation
metric code into per-benchmark ``val-core/<benchmark>/acc/mean@1``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from omegaconf import OmegaConf

MC = "multiple choice"

# (data_source, response, ground_truth, extra_info, correct) -- labelled by hand
CASES = [
    ("mmmu", "<answer>B</answer>", "B", {"problem_type": MC, "options": ["1", "2"]}, 1.0),
    ("mmmu", "<answer>A</answer>", "B", {"problem_type": MC, "options": ["1", "2"]}, 0.0),
    ("mathvista", "\\boxed{2.0}", "2", {"question_type": "free_form", "answer_type": "integer", "options": []}, 1.0),
    ("mathvision", "\\boxed{0.5}", "\\frac{1}{2}", {"problem_type": "math", "options": []}, 1.0),
    ("mathvision", "\\boxed{0.25}", "\\frac{1}{2}", {"problem_type": "math", "options": []}, 0.0),
    # only math-verify accepts this one, and math-verify's signal timeout fails outside the main thread
    ("mathvision", "\\boxed{\\frac{6}{8}}", "\\frac{3}{4}", {"problem_type": "math", "options": []}, 1.0),
    ("zerobench", "<answer>12</answer>", "12", {"variant": "subquestions"}, 1.0),
    ("zerobench", "<answer>3</answer>", "4", {"variant": "main"}, 0.0),
    ("wemath", "<answer>C</answer>", "C", {"problem_type": MC, "options": ["1", "2", "3"], "group_id": "1", "key": "2steps_1"}, 1.0),
]


def load_via_verl():
    from verl.trainer.ppo.reward import get_custom_reward_fn

    cfg = OmegaConf.create({"reward": {"custom_reward_function": {"path": "pkg://verl_ext.eval.val_reward", "name": "compute_score"}}})
    return get_custom_reward_fn(cfg)


def test_scores_benchmark_rows_in_worker_threads():
    fn = load_via_verl()
    with ThreadPoolExecutor(2) as ex:  # verl's reward loop calls sync reward functions in an executor
        outs = list(ex.map(lambda c: fn(data_source=c[0], solution_str=c[1], ground_truth=c[2], extra_info=dict(c[3])), CASES))
    for c, out in zip(CASES, outs):
        assert out["score"] == c[4] and out["acc"] == c[4], c
    assert outs[6]["acc_subquestions"] == 1.0 and "acc_main" not in outs[6]
    assert outs[7]["acc_main"] == 0.0


def test_other_data_sources_go_to_the_fallback(monkeypatch):
    from verl_ext.eval import val_reward

    calls = []
    monkeypatch.setattr(val_reward, "fallback", lambda *a, **k: calls.append((a, k)) or 0.5)
    assert val_reward.compute_score("mmfinereason", "x", "y", {}, format_weight=0.1) == 0.5
    assert calls == [(("mmfinereason", "x", "y", {}), {"format_weight": 0.1})]


def test_verl_validation_metrics_are_per_benchmark_accuracy():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    fn = load_via_verl()
    sources, uids, infos = [], [], {"reward": [], "acc": [], "pred": []}
    for i, c in enumerate(CASES):
        out = fn(data_source=c[0], solution_str=c[1], ground_truth=c[2], extra_info=dict(c[3]))
        sources.append(c[0])
        uids.append(f"u{i}")
        for k in infos:
            infos[k].append(out["score"] if k == "reward" else out[k])
    # _val_metrics_update only reads its arguments; call verl's method as the trainer does
    metrics = PPOTrainer._val_metrics_update(None, sources, uids, infos, sample_turns=[])
    # hand count: mmmu 1/2, mathvista 1/1, mathvision 2/3, zerobench 1/2, wemath 1/1
    assert metrics["val-core/mmmu/acc/mean@1"] == pytest.approx(0.5)
    assert metrics["val-core/mathvista/acc/mean@1"] == pytest.approx(1.0)
    assert metrics["val-core/mathvision/acc/mean@1"] == pytest.approx(2 / 3)
    assert metrics["val-core/zerobench/acc/mean@1"] == pytest.approx(0.5)
    assert metrics["val-core/wemath/acc/mean@1"] == pytest.approx(1.0)


def test_training_rows_get_the_training_reward():
    from verl_ext.eval.val_reward import compute_score

    info = {"problem_type": "multiple choice", "options": ["1", "2", "3"]}
    right = compute_score("mmfinereason", "<thought>2 fits</thought><answer>B</answer>", "B", dict(info))
    wrong = compute_score("mmfinereason", "<thought>no</thought><answer>C</answer>", "B", dict(info))
    assert right["acc"] == 1 and wrong["acc"] == 0  # graded by the training reward, not by a benchmark scorer
