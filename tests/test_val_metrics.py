"""The trainer's validation metrics: verl's own for the score keys, mean@n/std@n without the bootstrap for the
reward's counters (verl_ext.trainer.val_metrics), checked against verl's ``_val_metrics_update`` itself and a
hand-computed mean."""

from __future__ import annotations

import random

import numpy as np
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from verl_ext.trainer.self_distill import SelfDistillTrainer
from verl_ext.trainer.val_metrics import BOOTSTRAPPED


def _validation(seed: int = 0):
    """Two data sources, prompts with 4 samples (one with 3), score keys and counters, some None and a string."""
    rng = random.Random(seed)
    sources, uids = [], []
    for source, prompts in (("synthetic", 12), ("other", 5)):
        for p in range(prompts):
            k = 3 if (source, p) == ("other", 2) else 4
            sources += [source] * k
            uids += [f"{source}-{p}"] * k
    n = len(uids)
    acc = [float(rng.random() < 0.6) for _ in range(n)]
    infos = {
        "acc": acc, "score": [a - 0.1 * rng.random() for a in acc], "reward": list(acc),
        "format": [float(rng.random() < 0.9) for _ in range(n)],
        "error": [None if i % 7 == 0 else float(rng.random() < 0.1) for i in range(n)],
        "length": [float(rng.randrange(5, 40)) for _ in range(n)],
        "note": ["text"] * n,
    }  # fmt: skip
    return sources, uids, infos


def test_counters_keep_verls_means_and_skip_its_bootstrap():
    sources, uids, infos = _validation()
    trainer = object.__new__(SelfDistillTrainer)  # the method reads its arguments only
    verl = PPOTrainerSync._val_metrics_update(trainer, sources, uids, infos, [])
    ours = SelfDistillTrainer._val_metrics_update(trainer, sources, uids, infos, [])
    aux = {k for k in infos if k not in BOOTSTRAPPED}

    def resampled_counter(name: str) -> bool:
        var = name.split("/")[2]
        return var in aux and ("best@" in name or "worst@" in name)

    expected = {k: v for k, v in verl.items() if not resampled_counter(k)}
    assert ours.keys() == expected.keys()
    for k, v in expected.items():
        assert ours[k] == v, k  # the same numpy reductions in the same order: equal
    # what was dropped is only the counters' resampling, and there was some
    assert any(resampled_counter(k) for k in verl)
    assert "val-core/synthetic/acc/best@4/mean" in ours and "val-aux/synthetic/acc/worst@4/mean" in ours


def test_counter_mean_by_hand():
    sources, uids, infos = _validation(seed=3)
    trainer = object.__new__(SelfDistillTrainer)
    ours = SelfDistillTrainer._val_metrics_update(trainer, sources, uids, infos, [])
    # 'error' on source 'synthetic': per prompt, the mean of its non-None values; then the mean over prompts
    per_prompt = {}
    for s, u, e in zip(sources, uids, infos["error"]):
        if s == "synthetic" and e is not None:
            per_prompt.setdefault(u, []).append(e)
    by_n = {}
    for vals in per_prompt.values():
        by_n.setdefault(len(vals), []).append((sum(vals) / len(vals), (sum((v - sum(vals) / len(vals)) ** 2 for v in vals) / len(vals)) ** 0.5))
    for n, pairs in by_n.items():
        assert abs(ours[f"val-aux/synthetic/error/mean@{n}"] - sum(m for m, _ in pairs) / len(pairs)) < 1e-12
        if n > 1:
            assert abs(ours[f"val-aux/synthetic/error/std@{n}"] - sum(s for _, s in pairs) / len(pairs)) < 1e-12
    assert not any("/note/" in k for k in ours)  # strings are skipped, as verl skips them
    assert np.isfinite(list(ours.values())).all()
