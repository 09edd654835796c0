"""verl's own validation (``trainer.val_only``) on CPU with the tiny Qwen3-VL, the benchmark fixture
files as ``data.val_files`` and ``verl_ext.eval.val_reward`` as the reward function: the logged
metrics hold one accuracy per benchmark, equal to the evaluation scorers re-applied to the
responses verl dumped."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from verl_ext.cpu.launch import train_command

from test_eval_command import make_fixtures
from verl_ext.eval.scorers import score

REPO = Path(__file__).resolve().parents[1]
BENCHES = ["mmmu", "mathvista", "zerobench", "wemath"]
FILES = {"mmmu": "validation", "mathvista": "testmini", "zerobench": "zerobench_subquestions", "wemath": "testmini"}


@pytest.mark.e2e
def test_verl_validation_reports_per_benchmark_accuracy(tmp_path):
    from verl_ext.tiny_model import build_tiny_qwen3vl

    model = build_tiny_qwen3vl(tmp_path / "model")
    data = tmp_path / "data"
    make_fixtures(data)
    files = [str(data / b / f"{FILES[b]}.parquet") for b in BENCHES]
    metrics_file, dump = tmp_path / "metrics.jsonl", tmp_path / "dump"
    cmd = train_command([
        "algorithm.adv_estimator=grpo",
        f"data.train_files={files[0]}", f"data.val_files=[{','.join(files)}]", f"actor_rollout_ref.model.path={model}",
        "reward.custom_reward_function.path=pkg://verl_ext.eval.val_reward", "reward.custom_reward_function.name=compute_score",
        "trainer.val_only=True", "trainer.val_before_train=True", "trainer.logger=[console,file]",
        f"trainer.validation_data_dir={dump}", f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={metrics_file}",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=True", "actor_rollout_ref.rollout.val_kwargs.temperature=0.7",
        "actor_rollout_ref.rollout.val_kwargs.top_p=0.8", "actor_rollout_ref.rollout.val_kwargs.top_k=20",
        "actor_rollout_ref.rollout.val_kwargs.n=1",  # one response per row, as the evaluation protocol
        "data.max_response_length=8",
        "data.val_max_samples=-1",  # every fixture row
        "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",  # a few fixture rows for training
    ])
    proc = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "VERL_PLATFORM": "cpu"}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    logged = json.loads(metrics_file.read_text().splitlines()[0])["data"]
    # re-score every dumped response with the evaluation scorer, finding its row by question text
    rows = {}
    for b in BENCHES:
        for r in pq.read_table(data / b / f"{FILES[b]}.parquet").to_pylist():
            rows[r["extra_info"]["question"].replace("<image>", "").strip()] = (b, r)  # image tokens are not decoded
    per_bench: dict[str, list[float]] = {b: [] for b in BENCHES}
    dumped = [json.loads(x) for x in (dump / "0.jsonl").read_text().splitlines()]
    for d in dumped:
        (b, r), = [v for q, v in rows.items() if q in d["input"]]
        ok = score(b, d["output"], r["reward_model"]["ground_truth"], r["extra_info"])["correct"]
        assert d["acc"] == float(ok) and d["score"] == float(ok)
        per_bench[b].append(float(ok))
    assert len(dumped) == sum(pq.read_metadata(f).num_rows for f in files)
    for b in BENCHES:
        assert logged[f"val-core/{b}/acc/mean@1"] == pytest.approx(sum(per_bench[b]) / len(per_bench[b]))
    assert "val-aux/zerobench/acc_subquestions/mean@1" in logged
