"""Evaluation of text models on the text math benchmarks: \\boxed{} scoring, avg@k over repeated samples (by hand),
and ``python -m verl_ext.eval --benchmarks math500,aime24`` with the hf backend on the tiny text Qwen3."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.build_parquet import build, parse_args
from verl_ext.eval.protocol import load_protocol
from verl_ext.eval.scorers import aggregate, score


def test_boxed_scoring():
    assert score("math500", "so \\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", {})["correct"]
    assert score("aime24", "\\boxed{33} then \\boxed{034}", "34", {})["correct"]  # the last box, 034 = 34
    out = score("aime24", "<answer>34</answer>", "34", {})
    assert not out["correct"] and out["extracted"] == ""  # the prompt asked for \boxed{}


def test_avg_at_k_by_hand():
    # question a: 3 of 4 right, question b: 0 of 4 -> avg@4 = (75 + 0) / 2 = 37.5, pass@4 = 50
    recs = [{"id": f"test:a#{r}", "correct": r != 0} for r in range(4)] + [{"id": f"test:b#{r}", "correct": False} for r in range(4)]
    m = aggregate("aime24", recs)
    assert (m["k"], m["questions"], m["score_name"]) == (4, 2, "avg@4")
    assert m["score"] == pytest.approx(37.5) and m["pass@4"] == pytest.approx(50.0)


def test_repeats_default_and_greedy():
    assert load_protocol().repeats_for("aime24") == 16 and load_protocol().repeats_for("math500") == 1
    assert load_protocol("greedy").repeats_for("aime24") == 1  # identical samples: one is enough
    assert load_protocol(overrides={"repeats": "{aime24: 3}"}).repeats_for("aime24") == 3
    with pytest.raises(ValueError, match="repeats"):
        load_protocol(overrides={"repeats": "{aime24: 0}"})


def test_eval_command_on_text_benchmarks(tmp_path):
    from verl_ext.tiny_text_model import build_tiny_qwen3

    model = build_tiny_qwen3(tmp_path / "model")
    src = tmp_path / "src"
    (src / "m").mkdir(parents=True)
    with open(src / "m" / "test.jsonl", "w") as f:
        for i in range(4):
            f.write(json.dumps({"problem": f"What is {i} + 1?", "solution": "", "answer": str(i + 1), "subject": "A",
                                "level": 1, "unique_id": f"u{i}"}) + "\n")
    (src / "a").mkdir()
    pq.write_table(pa.Table.from_pylist([{"id": i, "problem": f"P{i}", "solution": "", "answer": str(i), "url": "",
                                          "year": "2024"} for i in range(2)]), src / "a" / "train.parquet")
    data = tmp_path / "data"
    build(parse_args(["math500", "aime24", "--math500-source", str(src / "m"), "--aime24-source", str(src / "a"),
                      "--out-dir", str(data), "--quiet"]))
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "verl_ext.eval", "--model", str(model), "--data-dir", str(data), "--out-dir", str(out),
           "--benchmarks", "math500,aime24", "--backend", "hf", "--set", "max_new_tokens=6", "--set", "repeats={aime24: 3}",
           "--set", "enable_thinking=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    math = [json.loads(x) for x in (out / "math500" / "samples.jsonl").read_text().splitlines()]
    aime = [json.loads(x) for x in (out / "aime24" / "samples.jsonl").read_text().splitlines()]
    assert len(math) == 4 and sorted(r["id"] for r in aime) == [f"test:{q}#{r}" for q in (0, 1) for r in range(3)]
    for rec in math + aime:  # every stored response re-scored by hand
        assert rec["correct"] == score("math500", rec["response"], rec["ground_truth"], {})["correct"]
    res = json.loads((out / "aime24" / "results.json").read_text())["metrics"]
    by_q = {q: [r["correct"] for r in aime if r["id"].startswith(f"test:{q}#")] for q in (0, 1)}
    assert res["score"] == pytest.approx(100 * sum(sum(v) / 3 for v in by_q.values()) / 2)
    assert res["score_name"] == "avg@3"
    assert "aime24: avg@3" in (out / "table.md").read_text()
