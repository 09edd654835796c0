"""verl's trainer on CPU with two FSDP ranks (``trainer.n_gpus_per_node=2``: gloo, one thread each) against one
rank, and a run killed with SIGKILL after a checkpoint and resumed with ``trainer.resume_mode=auto``.

Equivalence (1 vs 2 workers, RLSD, step 1, same seed and data): the rollout samples each request with a seed
drawn from its content and its occurrence (shared by the replicas), so both runs sample the same responses; the
test matches them per prompt group by their token ids and compares the token-credit dump (teacher and student
log-probs, RLSD token advantages) and the step's loss.

Tolerance, from the arithmetic. verl's FSDP2 engines compute in bf16 (mixed precision, ``param_dtype``); a padded
micro-batch of several rows gives a row's log-probs that depend on its neighbours' lengths (other padded widths,
other kernel blocking), at the bf16 level: up to a few units of 2^-8 x |logit| (0.06-0.11 seen with rows in another
order). The tests therefore run one row per micro-batch (``*micro_batch_size_per_gpu=1``, one thread per rank):
every row's forward is then the same bf16 program on the same inputs whichever rank or order it has, and its
log-probs are equal bit for bit. What can still differ is fp32 arithmetic across rows: the loss is verl's
``token-mean`` over the global mini-batch (each rank divides its token sum by the global token count and
multiplies by the rank count; FSDP averages), i.e. the same terms summed in another order: at most n u sum|terms|
with u = 2^-24 and n <= 256 tokens, below 1e-6 for losses of order 0.1. The RLSD advantage
``A_i clip(exp(sign(A_i) delta_t), 1 - eps, 1 + eps)`` is computed on the driver from bitwise-equal inputs except
``A_i``'s group mean and std, fp32 sums over 4 rows: |dA_t| <= (1 + eps) |dA_i| ~ 1e-7. We allow 1e-6 absolute on
log-probs, advantages and the loss (ATOL), and report the largest difference seen.

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
    # one row per micro-batch: a row's bf16 log-probs then do not depend on which rows share its micro-batch
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1", "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1",
    "trainer.val_before_train=false", "trainer.test_freq=-1",
    "+ray_kwargs.ray_init.runtime_env.env_vars.OMP_NUM_THREADS='1'",
    "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_EXT_ROLLOUT_THREADS='1'",
]  # fmt: skip
RLSD = ["algorithm.rlsd.lambda_init=0.4", "algorithm.rlsd.decay_steps=4", "algorithm.teacher.mode=frozen",
        "algorithm.teacher.sync_every=2"]  # fmt: skip
SDPO = ["algorithm.distill.loss=jsd_topk", "algorithm.distill.topk=8", "algorithm.teacher.mode=ema",
        "algorithm.teacher.ema_rate=0.5"]  # fmt: skip
ATOL, RTOL = 1e-6, 0.0
CLIP_EPS = 0.2  # algorithm.rlsd.clip_eps default (checked against the dump)


def workers(n: int) -> list[str]:
    return [f"trainer.n_gpus_per_node={n}", f"ray_kwargs.ray_init.num_gpus={n}"]


def dumps(folder: Path) -> list[str]:
    return ["algorithm.diagnostics.dump_every=1", "algorithm.diagnostics.num_responses=100000",
            f"algorithm.diagnostics.dir={folder}"]  # fmt: skip


def read_dump(folder: Path, step: int) -> dict[tuple, dict[tuple, dict]]:
    """``{group: {response ids: record}}`` of one step. Row order and uids differ between runs, so a group is named
    by its ground truth and the sorted response ids of its rows (runs that sampled alike name it alike)."""
    by_uid: dict[str, list[dict]] = defaultdict(list)
    with open(folder / f"step_{step:06d}.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            by_uid[rec["uid"]].append(rec)
    groups = {}
    for recs in by_uid.values():
        ids = sorted(tuple(r["tokens"]["id"]) for r in recs)
        groups[(str(recs[0]["ground_truth"]), tuple(ids))] = {tuple(r["tokens"]["id"]): r for r in recs}
    return groups


def close(a: float, b: float, atol: float = ATOL) -> bool:
    return abs(a - b) <= atol + RTOL * abs(b)


def compare_dumps(a_dir: Path, b_dir: Path, step: int, atol: float) -> dict[str, float]:
    """Both runs sampled the same groups; per token the same log-probs and advantages (within ``atol`` for the
    log-probs and the advantage bound derived from it). Returns the largest differences."""
    one, two = read_dump(a_dir, step), read_dump(b_dir, step)
    assert len(one) == 4 and sorted(one) == sorted(two), "the runs sampled other responses"
    worst = {"teacher_logp": 0.0, "student_logp": 0.0, "advantage": 0.0}
    # one seed per sample: some group's samples differ (a group may still agree when the warm start is sure of
    # its answer, e.g. a short trace with a confident yes/no)
    assert any(len(one[g]) > 1 for g in one), f"every group's {N} samples are identical: one seed for all?"
    for g in one:
        for ids, a in one[g].items():
            b = two[g][ids]
            assert a["reward"] == b["reward"] and a["lambda"] == b["lambda"]
            assert abs(a["seq_advantage"] - b["seq_advantage"]) <= 1e-6
            for key in ("teacher_logp", "student_logp"):
                for x, y in zip(a["tokens"][key], b["tokens"][key], strict=True):
                    assert abs(x - y) <= atol + RTOL * abs(y), f"{key}: {x} vs {y}"
                    worst[key] = max(worst[key], abs(x - y))
            bound = (1 + CLIP_EPS) * atol
            for x, y in zip(a["tokens"]["advantage"], b["tokens"]["advantage"], strict=True):
                assert abs(x - y) <= bound, f"advantage {x} vs {y} (bound {bound})"
                worst["advantage"] = max(worst["advantage"], abs(x - y))
    return worst


def rlsd_run(work, model, data, name, n_workers, steps, extra=(), timeout=900, method="rlsd"):
    folder = work / f"dump_{name}"
    method_extra = {"rlsd": RLSD, "sdpo": SDPO}.get(method, [])
    metrics, _ = run_training(
        method, work, model, data, steps=steps, run_name=name,
        extra=[*COMMON, *method_extra, *workers(n_workers), *dumps(folder), "trainer.save_freq=1",
               f"trainer.default_local_dir={work / f'ckpt_{name}'}", *extra], timeout=timeout,
    )  # fmt: skip
    return read_metrics(metrics), folder, work / f"ckpt_{name}"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("multiworker")


@pytest.fixture(scope="module")
def reference(work, warm_model_dir, synthetic_data_dir):
    """RLSD, one worker, 3 steps, a checkpoint each step: the uninterrupted run."""
    return rlsd_run(work, warm_model_dir, synthetic_data_dir, "rlsd_1w", 1, 3)


@pytest.fixture(scope="module")
def two_workers(work, warm_model_dir, synthetic_data_dir):
    return rlsd_run(work, warm_model_dir, synthetic_data_dir, "rlsd_2w", 2, 1)


def test_two_workers_teacher_log_probs_and_rlsd_advantages_match_one(reference, two_workers):
    worst = compare_dumps(reference[1], two_workers[1], 1, ATOL)
    print("largest 1-vs-2-worker differences:", worst)


def test_two_workers_loss_matches_one(reference, two_workers):
    m1, m2 = reference[0][1], two_workers[0][1]
    bound = ATOL  # the same per-token terms, summed over ranks and micro-batches in another order
    assert m1["critic/score/mean"] == m2["critic/score/mean"]
    assert m1["rlsd/lambda"] == m2["rlsd/lambda"] == pytest.approx(0.4)
    assert abs(m1["actor/pg_loss"] - m2["actor/pg_loss"]) <= bound, (m1["actor/pg_loss"], m2["actor/pg_loss"], bound)
    assert m2["actor/grad_norm"] > 0


def _tree(pid: int) -> list:
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _wait_for_checkpoint(proc, ckpt: Path, step: int, timeout: float) -> None:
    tracker = ckpt / "latest_checkpointed_iteration.txt"
    end = time.time() + timeout
    while time.time() < end:
        if tracker.is_file() and tracker.read_text().strip() == str(step):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before checkpoint {step}")
        time.sleep(0.5)
    raise AssertionError(f"no checkpoint {step} within {timeout} s")


def _start(work, model, data, name, n_workers, steps, extra=(), method="rlsd"):
    log = open(work / f"{name}.log", "w")
    overrides = [
        f"data.train_files={data / 'synthetic' / 'train.parquet'}", f"data.val_files={data / 'synthetic' / 'test.parquet'}",
        f"actor_rollout_ref.model.path={model}", f"trainer.total_training_steps={steps}", "trainer.experiment_name=rlsd",
        f"trainer.default_local_dir={work / f'ckpt_{name}'}", f"algorithm.adv_estimator={method}",
        "trainer.v1.trainer_mode=self_distill", *COMMON, *{"rlsd": RLSD, "sdpo": SDPO}[method], *workers(n_workers),
        *dumps(work / f"dump_{name}"),
        "trainer.save_freq=1", *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(train_command(overrides), env=train_env(work / "metrics" / f"{name}.jsonl"), cwd=work,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    return proc, work / f"ckpt_{name}", work / f"{name}.log"


def kill_and_resume(work, model, data, name, n_workers, method="rlsd"):
    """Run until checkpoint 2 is written, SIGKILL the whole run (driver, Ray, workers), resume with
    resume_mode=auto up to step 3; returns the resumed run's (metrics, dump folder, checkpoint folder)."""
    (work / "metrics").mkdir(exist_ok=True)
    proc, ckpt, _ = _start(work, model, data, name, n_workers, 3, method=method)
    try:
        _wait_for_checkpoint(proc, ckpt, 2, 900)
    finally:
        for p in reversed(_tree(proc.pid)):
            p.kill()
        proc.wait()
    return rlsd_run(work, model, data, name, n_workers, 3, extra=["trainer.resume_mode=auto"], method=method)


def assert_step3_reproduced(resumed, reference, n_workers, keys):
    import torch

    metrics, folder, ckpt = resumed
    ref_metrics, ref_folder, ref_ckpt = reference
    assert sorted(metrics) == [3], "the resumed run continues at step 3"
    got, want = metrics[3], ref_metrics[3]
    assert got["training/global_step"] == 3
    for key in keys:
        assert got[key] == want[key], key
    # same machine, same thread count, same inputs: the resumed computation is the same float program
    compare_dumps(ref_folder, folder, 3, 1e-6)
    loss = "actor/distill/loss" if "actor/distill/loss" in want else "actor/pg_loss"
    assert got[loss] == pytest.approx(want[loss], abs=1e-6)
    for rank in range(n_workers):
        name = f"teacher/teacher_rank{rank}.pt"
        a = torch.load(ckpt / "global_step_3" / name, weights_only=True)
        b = torch.load(ref_ckpt / "global_step_3" / name, weights_only=True)
        assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a), name


def test_killed_after_checkpoint_resumes_exactly(reference, work, warm_model_dir, synthetic_data_dir):
    """The whole run gets SIGKILL once checkpoint 2 is written; resume_mode=auto continues at step 3 and step 3
    reproduces the uninterrupted run: sampled responses (dataloader position and rollout seeds), reward, lambda,
    teacher sync, log-probs, advantages, loss, and the teacher copy's weights."""
    resumed = kill_and_resume(work, warm_model_dir, synthetic_data_dir, "rlsd_killed", 1)
    want = reference[0][3]
    assert want["rlsd/lambda"] == pytest.approx(0.4 * (1 - 2 / 4)) and want["teacher/synced"] == 1.0  # sync at 1, 3
    assert_step3_reproduced(resumed, reference, 1, ("critic/score/mean", "rlsd/lambda", "teacher/synced",
                                                    "teacher/blend_rate"))  # fmt: skip


@slow
def test_grpo_and_sdpo_topk_ema_on_two_workers(work, warm_model_dir, synthetic_data_dir):
    for method in ("grpo", "sdpo"):
        metrics, _, _ = rlsd_run(work, warm_model_dir, synthetic_data_dir, f"{method}_2w", 2, 2, method=method)
        assert sorted(metrics) == [1, 2], method
        for step, m in metrics.items():
            bad = {k: v for k, v in m.items() if isinstance(v, float) and not math.isfinite(v)}
            assert not bad, (method, step, bad)
            assert m["actor/grad_norm"] >= 0.0
        if method == "sdpo":
            assert metrics[2]["teacher/blend_rate"] == 0.5  # EMA step before step 2
            for key in ("actor/distill/loss", "actor/distill/student_topk_mass", "actor/distill/teacher_topk_mass"):
                assert all(math.isfinite(m[key]) for m in metrics.values()), key


@slow
def test_two_workers_sdpo_ema_killed_and_resumed(work, warm_model_dir, synthetic_data_dir):
    reference2 = rlsd_run(work, warm_model_dir, synthetic_data_dir, "sdpo_2w_ref", 2, 3, method="sdpo")
    resumed = kill_and_resume(work, warm_model_dir, synthetic_data_dir, "sdpo_2w_killed", 2, method="sdpo")
    assert_step3_reproduced(resumed, reference2, 2, ("critic/score/mean", "teacher/blend_rate"))


WATCHDOG_BOUND_S = 120  # poll 2 s + the driver's shutdown (grace 30 s before a hard exit), on a busy machine


def test_worker_killed_mid_step_ends_the_run_with_a_message(work, warm_model_dir, synthetic_data_dir):
    """Two ranks; one rank's process gets SIGKILL in step 2 (after checkpoint 1). The other rank would wait in a
    gloo collective; the run instead ends within a bound, naming the dead worker and the checkpoint to resume."""
    (work / "metrics").mkdir(exist_ok=True)
    proc, ckpt, log = _start(work, warm_model_dir, synthetic_data_dir, "rlsd_worker_killed", 2, 3)
    try:
        _wait_for_checkpoint(proc, ckpt, 1, 900)
        ranks = sorted((p for p in _tree(proc.pid) if "WorkerDict" in " ".join(p.cmdline())), key=lambda p: p.pid)
        assert len(ranks) == 2, [p.cmdline() for p in ranks]
        time.sleep(3)  # into step 2
        victim = ranks[-1]
        victim.kill()
        killed = time.time()
        status = proc.wait(timeout=WATCHDOG_BOUND_S)
        elapsed = time.time() - killed
    finally:
        for p in reversed(_tree(proc.pid)) if proc.poll() is None else ():
            p.kill()
    text = log.read_text()
    assert status != 0
    assert "a Ray worker died during training" in text and f"pid {victim.pid}" in text, text[-3000:]
    assert f"the last complete checkpoint is {ckpt / 'global_step_1'}" in text
    print(f"the run ended {elapsed:.1f} s after the kill")


def test_tracker_file_is_written_after_every_file_of_the_checkpoint(reference):
    """resume_mode=auto loads only what verl's tracker names, so a kill during a save leaves the previous checkpoint
    selected as long as the tracker is the last write: every file of the last checkpoint (the teacher copy included)
    is older than it."""
    ckpt = reference[2]
    tracker = ckpt / "latest_checkpointed_iteration.txt"
    assert tracker.read_text().strip() == "3"
    files = [p for p in (ckpt / "global_step_3").rglob("*") if p.is_file()]
    assert any(p.parent.name == "teacher" for p in files) and any(p.name == "data.pt" for p in files)
    newest = max(files, key=lambda p: p.stat().st_mtime_ns)
    assert newest.stat().st_mtime_ns <= tracker.stat().st_mtime_ns, newest
