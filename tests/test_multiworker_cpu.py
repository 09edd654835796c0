"""verl's trainer on CPU with two FSDP ranks (``trainer.n_gpus_per_node=2``: gloo, one thread each) against one
rank, and a run killed with SIGKILL after a checkpoint and resumed with ``trainer.resume_mode=auto``.

Equivalence (1 vs 2 workers, RLSD, step 1, same seed and data): the rollout samples each request with a seed
drawn from its content and its occurrence (shared by the replicas), so both runs sample the same responses; the
test matches them per prompt group by their token ids and compares the token-credit dump (teacher and student
log-probs, RLSD token advantages) and the step's loss.

Tolerance, from the arithmetic. Each log-prob is the same float32 function of the same inputs in both runs; what
differs is which rows share a micro-batch (each rank holds half of the batch), hence the padded width and the
blocking of the matrix products, i.e. the order of float32 additions. A reordered sum of K terms differs by at
most ~K u sum|x_i| (u = 2^-24 ~ 6e-8); the largest sums are the log-sum-exp over the 151,669-token vocabulary
(|logsumexp| ~ 12, its terms add to ~1) and the hidden/MLP products (K <= 128 with |x| ~ 1 per layer, 2 layers):
a log-prob's error is a few hundred u times its scale, ~1e-5 for log-probs of magnitude ~10. We allow 1e-4 absolute
(+ 1e-5 relative). The RLSD advantage ``A_t = A_i clip(exp(sign(A_i) (lT - lS)), 1 - eps, 1 + eps)`` is
1-Lipschitz in the clip and ``|d exp(x)| <= (1 + eps) |dx|`` inside it, so ``|dA_t| <= |A_i| (1 + eps) 2 tol``.
The loss is ``token-mean`` over the global mini-batch: verl divides each rank's token sum by the global token
count and multiplies by the rank count (FSDP averages the gradients), so the reported loss is the same sum split
over ranks; its error is the advantages' error (``|dL| <= max |dA_t|`` at ratio 1 plus the ratio's ``tol``).

Set ``RLSD_SLOW_TESTS=1`` for the longer runs (GRPO and SDPO/jsd_topk/EMA at two workers; a two-worker
kill-and-resume).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from verl_ext.cpu.launch import latest_checkpoint, read_metrics, run_training, train_command, train_env

pytestmark = pytest.mark.e2e
SLOW = os.environ.get("RLSD_SLOW_TESTS") == "1"
slow = pytest.mark.skipif(not SLOW, reason="set RLSD_SLOW_TESTS=1 to run")

N = 4  # responses per prompt
COMMON = [
    "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4", f"actor_rollout_ref.rollout.n={N}",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4", "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
    "trainer.val_before_train=false", "trainer.test_freq=-1",
    "+ray_kwargs.ray_init.runtime_env.env_vars.OMP_NUM_THREADS='1'",
    "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_EXT_ROLLOUT_THREADS='1'",
]  # fmt: skip
RLSD = ["algorithm.rlsd.lambda_init=0.4", "algorithm.rlsd.decay_steps=4", "algorithm.teacher.mode=frozen",
        "algorithm.teacher.sync_every=2"]  # fmt: skip
SDPO = ["algorithm.distill.loss=jsd_topk", "algorithm.distill.topk=8", "algorithm.teacher.mode=ema",
        "algorithm.teacher.ema_rate=0.5"]  # fmt: skip
ATOL, RTOL = 1e-4, 1e-5
CLIP_EPS = 0.2  # algorithm.rlsd.clip_eps default (checked against the dump)


def workers(n: int) -> list[str]:
    return [f"trainer.n_gpus_per_node={n}", f"ray_kwargs.ray_init.num_gpus={n}"]


def dumps(folder: Path) -> list[str]:
    return ["algorithm.diagnostics.dump_every=1", "algorithm.diagnostics.num_responses=100000",
            f"algorithm.diagnostics.dir={folder}"]  # fmt: skip


def read_dump(folder: Path, step: int) -> dict[int, dict[tuple, dict]]:
    """``{group: {response ids: record}}`` of one step (group = row // n, in the dataloader's order)."""
    groups: dict[int, dict[tuple, dict]] = defaultdict(dict)
    with open(folder / f"step_{step:06d}.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            groups[rec["row"] // N][tuple(rec["tokens"]["id"])] = rec
    return groups


def close(a: float, b: float, atol: float = ATOL) -> bool:
    return abs(a - b) <= atol + RTOL * abs(b)


@pytest.fixture(scope="module")
def equivalence(tmp_path_factory, warm_model_dir, synthetic_data_dir):
    work = tmp_path_factory.mktemp("multiworker")
    out = {}
    for n in (1, 2):
        folder = work / f"dump_rlsd_{n}w"
        metrics, _ = run_training(
            "rlsd", work, warm_model_dir, synthetic_data_dir, steps=1, run_name=f"rlsd_{n}w",
            extra=[*COMMON, *RLSD, *workers(n), *dumps(folder), "trainer.save_freq=-1",
                   f"trainer.default_local_dir={work / f'ckpt_rlsd_{n}w'}"], timeout=900,
        )  # fmt: skip
        out[n] = (read_metrics(metrics), folder)
    return out


def test_two_workers_sample_the_same_responses(equivalence):
    one, two = read_dump(equivalence[1][1], 1), read_dump(equivalence[2][1], 1)
    assert sorted(one) == sorted(two) and len(one) == 4
    for g in one:
        assert sorted(one[g]) == sorted(two[g]), f"group {g}: other responses with two workers"
        assert len(one[g]) > 1, f"group {g}: the {N} samples of a prompt must differ (one seed each)"


def test_two_workers_teacher_log_probs_and_rlsd_advantages_match_one(equivalence):
    one, two = read_dump(equivalence[1][1], 1), read_dump(equivalence[2][1], 1)
    worst = {"teacher_logp": 0.0, "student_logp": 0.0, "advantage": 0.0}
    for g in one:
        for ids, a in one[g].items():
            b = two[g][ids]
            assert a["reward"] == b["reward"] and a["seq_advantage"] == pytest.approx(b["seq_advantage"], abs=1e-6)
            assert a["lambda"] == b["lambda"] == pytest.approx(0.4)
            for key in ("teacher_logp", "student_logp"):
                for x, y in zip(a["tokens"][key], b["tokens"][key]):
                    assert close(x, y), f"group {g}: {key} {x} vs {y}"
                    worst[key] = max(worst[key], abs(x - y))
            bound = abs(a["seq_advantage"]) * (1 + CLIP_EPS) * 2 * (ATOL + RTOL * 20)
            for x, y in zip(a["tokens"]["advantage"], b["tokens"]["advantage"]):
                assert abs(x - y) <= bound + 1e-7, f"group {g}: advantage {x} vs {y} (bound {bound})"
                worst["advantage"] = max(worst["advantage"], abs(x - y))
    print("largest 1-vs-2-worker differences:", worst)


def test_two_workers_loss_matches_one(equivalence):
    m1, m2 = equivalence[1][0][1], equivalence[2][0][1]
    adv_bound = max(abs(v) for v in (m1["critic/advantages/max"], m1["critic/advantages/min"])) * (1 + CLIP_EPS) * 2 * ATOL
    assert m1["critic/score/mean"] == m2["critic/score/mean"]
    assert abs(m1["actor/pg_loss"] - m2["actor/pg_loss"]) <= adv_bound + ATOL * abs(m1["actor/pg_loss"]) + 1e-6, (
        m1["actor/pg_loss"], m2["actor/pg_loss"])
    assert m1["rlsd/lambda"] == m2["rlsd/lambda"]
