"""verl's trainer with its own vLLM rollout server (``actor_rollout_ref.rollout.name=vllm``, the GPU recipes'
rollout) on CPU: GRPO, RLSD and SDPO with the top-k JSD, 2 steps each; the served weights are the synced
weights; a killed engine ends the run with a message.

Each run starts vLLM's CPU engine (about a minute and a half on 2 busy cores). Deselect with -m "not vllm".

Log-prob convention: both CPU servers return raw log-softmax log-probs of the sampled tokens
(``rollout.logprobs_mode=raw_logprobs`` for vLLM, before temperature, top-k and top-p), and the actor
recomputes log-probs at the rollout temperature. At temperature 1 the two are the same quantity, so the GRPO
run here samples at temperature 1 and checks them against each other.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_e2e_cpu import COMMON, DISTILL_METRICS
from verl_ext.cpu.launch import read_metrics, run_training, train_command, train_env

# In the default suite: the file passed as one pytest run on a quiet 2-core machine in 14 min 50 s (three
# training runs 593 s with the e2e warm start, the killed engine 179 s, the eval 106 s). -m "not vllm" skips it.
pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

VLLM = ["actor_rollout_ref.rollout.name=vllm"]
# The weight-sync check: vLLM starts from random weights (load_format=dummy), so everything it serves came
# through verl's sync; temperature 1 makes its raw log-probs the actor's quantity; a checkpoint per step gives
# the weights served at step 2; a larger step size makes the update easy to tell from rounding.
SYNC_CHECK = ["actor_rollout_ref.rollout.load_format=dummy", "actor_rollout_ref.rollout.temperature=1.0",
              "trainer.save_freq=1", "actor_rollout_ref.actor.optim.lr=3e-3"]  # fmt: skip
METHOD_EXTRA = {
    "grpo": SYNC_CHECK,
    "rlsd": [],
    "sdpo": ["algorithm.distill.loss=jsd_topk", "algorithm.distill.topk=8"],
}
# Per-sequence mean log-prob difference allowed between vLLM's forward and the actor's recomputation. vLLM
# computes in float32; the actor's forward runs under verl's FSDP mixed precision, bf16 (unit roundoff
# u = 2^-9 ~ 2e-3). A logit of the tiny model sums 64-128 products of bf16-rounded factors, so with |logit| up
# to ~10 it is off by a few u * |logit| ~ 1e-2, and a token's log-softmax by up to ~2e-2; a sequence's mean
# log-prob no more. Measured on this machine: up to 7e-3. The update's own effect, which the test measures,
# must exceed 10x this bound (measured: ~0.55 with the step size below).
SYNC_BOUND = 2e-2


@pytest.fixture(scope="module")
def runs(tmp_path_factory, warm_model_dir, synthetic_data_dir):
    work = tmp_path_factory.mktemp("e2e_vllm")
    results = {}
    for method, extra in METHOD_EXTRA.items():
        metrics, ckpt = run_training(method, work, warm_model_dir, synthetic_data_dir, steps=2,
                                     extra=[*COMMON, *VLLM, *extra], timeout=1200)  # fmt: skip
        results[method] = (read_metrics(metrics), ckpt)
    return results


@pytest.mark.parametrize("method", list(METHOD_EXTRA))
def test_vllm_rollout_steps_ran(runs, method):
    metrics, _ = runs[method]
    assert sorted(metrics) == [1, 2]
    for step, data in metrics.items():
        loss_key = "actor/distill/loss" if method == "sdpo" else "actor/pg_loss"
        for key in ("critic/score/mean", loss_key, "actor/grad_norm", "timing_s/gen", "timing_s/update_weights"):
            assert key in data, f"{method} step {step}: {key} missing"
        bad = {k: v for k, v in data.items() if isinstance(v, float) and not math.isfinite(v)}
        assert not bad, f"{method} step {step}: non-finite metrics {bad}"
        assert 0.0 <= data["critic/score/min"] <= data["critic/score/max"] <= 1.0
        if method != "grpo":
            assert "teacher/logprob_gap_mean" in data, f"{method} step {step}: no teacher pass"
        if method == "sdpo":
            for key in DISTILL_METRICS:
                assert key in data and math.isfinite(data[key]), key
    # the warm start answers in the format part of the time: the reward is not zero everywhere
    assert any(d["critic/score/max"] > 0.0 for d in metrics.values()), method


def _sequence_log_ppl(model_dir, sequences):
    """Mean token log-prob of each (prompt ids, response ids) under the model in ``model_dir`` (float32)."""
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for prompt, response in sequences:
            ids = torch.tensor([prompt + response])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            tok = logp[len(prompt) - 1:].gather(-1, ids[0, len(prompt):, None])[:, 0]
            out.append(float(tok.mean()))
    return out


def test_served_weights_are_the_synced_weights(runs, warm_model_dir):
    """Step 1 is generated from the first sync (vLLM started from random weights, whose log-probs are ~ -12 per
    token), step 2 from the sync after the step-1 update. At each step, every sequence's mean rollout log-prob
    (vLLM, raw) matches the actor's recomputation within SYNC_BOUND. The update itself moves the mean log-prob of text sequences by more than
    10 x SYNC_BOUND (warm start vs the step-1 checkpoint, recomputed here with transformers), so a sync that did
    not reach vLLM would fail the step-2 check."""
    from verl_ext.tiny_model import load_tokenizer

    metrics, ckpt = runs["grpo"]
    for step in (1, 2):
        data = metrics[step]
        worst = max(abs(data["rollout_corr/log_ppl_diff_max"]), abs(data["rollout_corr/log_ppl_diff_min"]))
        assert worst < SYNC_BOUND, f"step {step}: rollout vs actor log-prob differ by {worst} per token"
    tok = load_tokenizer()
    texts = [("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n", "The answer is 5."),
             ("<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n", "Red, like a brick.")]
    seqs = [(tok(p)["input_ids"], tok(r)["input_ids"]) for p, r in texts]
    before = _sequence_log_ppl(warm_model_dir, seqs)
    after = _sequence_log_ppl(ckpt / "global_step_1" / "actor" / "huggingface", seqs)
    moved = max(abs(a - b) for a, b in zip(after, before))
    assert moved > 10 * SYNC_BOUND, f"the step-1 update moved log-probs by only {moved}: the check cannot tell"


def test_killed_engine_ends_the_run(tmp_path, warm_model_dir, synthetic_data_dir):
    """SIGKILL to vLLM's engine core process once training has started: the run stops within a bounded time,
    non-zero, with a message naming the engine process and its signal (instead of waiting on a dead engine)."""
    psutil = pytest.importorskip("psutil")
    metrics = tmp_path / "metrics.jsonl"
    overrides = [
        f"data.train_files={synthetic_data_dir / 'synthetic' / 'train.parquet'}",
        f"data.val_files={synthetic_data_dir / 'synthetic' / 'test.parquet'}",
        f"actor_rollout_ref.model.path={warm_model_dir}", "trainer.total_training_steps=50",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}", "algorithm.adv_estimator=grpo", *COMMON, *VLLM,
        "trainer.save_freq=-1",
    ]  # fmt: skip
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(train_command(overrides), env=train_env(metrics), cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 900
        while not (metrics.is_file() and metrics.read_text().strip()):  # step 1 done: the engine is serving
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "no training step within 15 minutes"
            time.sleep(2)
        engines = []
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "EngineCore" in " ".join(child.cmdline()) + child.name():
                    engines.append(child)
            except psutil.Error:
                continue
        assert engines, "no vLLM engine core process under the run"
        engine_pid = engines[0].pid
        os.kill(engine_pid, signal.SIGKILL)
        killed = time.time()
        rc = proc.wait(timeout=240)
        took = time.time() - killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    assert rc != 0
    assert "ERROR: the rollout engine died: vLLM engine process EngineCore" in text, text[-3000:]
    assert f"(pid {engine_pid}) was killed by signal SIGKILL" in text, text[-3000:]
    assert took < 240
    print(f"run ended {took:.0f} s after the engine was killed")


def test_eval_vllm_backend_greedy_matches_hf(tmp_path, warm_model_dir, synthetic_data_dir):
    """``python -m verl_ext.eval --backend vllm`` on CPU: greedy responses on the synthetic test split equal the
    hf backend's. Both compute the same float32 model; a differing response would need two top logits within
    float32 rounding of each other at some step (the test prints the margin where they differ)."""
    import json
    import sys

    out = {}
    for backend in ("hf", "vllm"):
        d = tmp_path / backend
        cmd = [sys.executable, "-m", "verl_ext.eval", "--model", str(warm_model_dir), "--data-dir",
               str(synthetic_data_dir), "--out-dir", str(d), "--benchmarks", "synthetic", "--backend", backend,
               "--preset", "greedy", "--set", "max_new_tokens=24"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out[backend] = {json.loads(line)["id"]: json.loads(line) for line in
                        (d / "synthetic" / "samples.jsonl").read_text().splitlines()}  # fmt: skip
    assert set(out["hf"]) == set(out["vllm"]) and len(out["hf"]) == 6
    for uid, rec in out["hf"].items():
        assert out["vllm"][uid]["response"] == rec["response"], uid
        assert out["vllm"][uid]["correct"] == rec["correct"]
