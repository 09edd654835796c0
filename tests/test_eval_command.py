"""End-to-end runs of ``python -m verl_ext.eval`` with a tiny random Qwen3-VL (real Qwen3 tokenizer,
real processor, transformers ``generate``) on small fixture parquet files in the project's row
contract, one directory per benchmark. A random model scores near zero: these tests check the
plumbing (files, ids, table, resume, errors), not accuracy."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from verl_ext.eval.__main__ import main
from verl_ext.eval.scorers import BENCHMARKS
from verl_ext.eval.table import PAPER_TABLE2

FAST = ["--backend", "hf", "--set", "max_new_tokens=6", "--set", "min_pixels=1024", "--set", "max_pixels=4096"]


def png(color, size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def row(ds, split, i, question, gt, n_images=1, problem_type="multiple choice", options=None, **extra):
    content = "<image>" * n_images + question + " Put the final answer in <answer></answer>."
    return {
        "data_source": ds,
        "prompt": [{"role": "user", "content": content}],
        "images": [{"bytes": png((40 * i % 255, 90, 200 - 30 * k))} for k in range(content.count("<image>"))],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": gt},
        "extra_info": {
            "index": i, "split": split, "id": f"{ds}-{i}", "problem_type": problem_type,
            "options": list(options or []), "question": question, "answer": gt, **extra,
        },
    }


def write(data_dir: Path, ds: str, split: str, rows: list[dict]) -> Path:
    d = data_dir / ds
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{split}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), p)
    return p


def make_fixtures(data_dir: Path) -> None:
    o = ["1", "2", "3", "4"]
    write(data_dir, "mmmu", "validation", [
        row("mmmu", "validation", 0, "Which? A. 1 B. 2 C. 3 D. 4", "B", options=o, question_type="multiple-choice", subfield="x"),
        row("mmmu", "validation", 1, "How long?", "3.5", problem_type="open", question_type="open", subfield="y"),
        row("mmmu", "validation", 2, "<image> Compare both images.", "A", options=o, question_type="multiple-choice", subfield="x"),
    ])
    write(data_dir, "mathvista", "testmini", [
        row("mathvista", "testmini", 0, "Pick one.", "C", options=o, question_type="multi_choice", answer_type="text", precision=None, unit=""),
        row("mathvista", "testmini", 1, "Area?", "1.5", problem_type="numerical", question_type="free_form", answer_type="float", precision=1.0, unit=""),
    ])
    write(data_dir, "mathvision", "test", [
        row("mathvision", "test", 0, "Value?", "\\frac{1}{2}", problem_type="math", level=2, subject="algebra"),
        row("mathvision", "test", 1, "Which?", "E", options=[], level=1, subject="counting"),
    ])
    write(data_dir, "zerobench", "zerobench_subquestions", [
        row("zerobench", "zerobench_subquestions", 0, "Count.", "12", problem_type="open", question_id="1_1", variant="subquestions"),
        row("zerobench", "zerobench_subquestions", 1, "Name it.", "red", problem_type="open", question_id="1_2", variant="subquestions"),
    ])
    write(data_dir, "zerobench", "zerobench", [
        row("zerobench", "zerobench", 0, "Total?", "7", problem_type="open", question_id="1", variant="main"),
    ])
    write(data_dir, "wemath", "testmini", [
        row("wemath", "testmini", i, f"Q{k}", "A", options=["1", "2"], group_id=gid, key=k)
        for i, (gid, k) in enumerate([("5", "2steps_1"), ("5", "2steps_2"), ("5", "2steps_multi")])
    ])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from verl_ext.tiny_model import build_tiny_qwen3vl

    return build_tiny_qwen3vl(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bench")
    make_fixtures(d)
    return d


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines()]


def test_full_run_writes_every_output(tiny_model, data_dir, tmp_path):
    out = tmp_path / "out"
    summary = main(["--model", str(tiny_model), "--data-dir", str(data_dir), "--out-dir", str(out), "--label", "RLSD", *FAST])
    expected_n = {"mmmu": 3, "mathvista": 2, "mathvision": 2, "zerobench": 3, "wemath": 3}
    for b in BENCHMARKS:
        recs = read_jsonl(out / b / "samples.jsonl")
        assert len(recs) == expected_n[b]
        assert len({r["id"] for r in recs}) == expected_n[b]
        for r in recs:
            assert set(r) >= {"id", "response", "extracted", "pred", "correct", "num_tokens", "finish_reason"}
            assert 0 < r["num_tokens"] <= 6
            assert isinstance(r["correct"], bool)
        res = json.loads((out / b / "results.json").read_text())
        assert res["protocol"]["max_new_tokens"] == 6 and res["protocol"]["temperature"] == 0.7
        assert res["protocol"]["presence_penalty"] == 1.5 and res["scorer_version"]
        assert res["metrics"]["n"] == expected_n[b]
        # the accuracy written is the share of correct records
        assert res["metrics"]["accuracy"] == pytest.approx(100 * sum(r["correct"] for r in recs) / len(recs))
    zb = json.loads((out / "zerobench" / "results.json").read_text())
    assert zb["splits"] == {"zerobench_subquestions": ["zerobench_subquestions.parquet"], "zerobench": ["zerobench.parquet"]}
    assert zb["metrics"]["n_subquestions"] == 2 and zb["metrics"]["n_main"] == 1
    we = json.loads((out / "wemath" / "results.json").read_text())
    assert we["metrics"]["groups"]["groups"] == 1
    table = (out / "table.md").read_text()
    for name in PAPER_TABLE2:
        assert f"| {name} (paper) |" in table
    assert "| **RLSD (ours)** |" in table and "Δ ours − paper (RLSD)" in table
    assert summary["average"] is not None and set(summary["scores"]) == set(BENCHMARKS)


def test_resume_after_interruption_matches_uninterrupted_run(tiny_model, data_dir, tmp_path):
    args = ["--model", str(tiny_model), "--data-dir", str(data_dir), "--benchmarks", "mmmu,wemath", *FAST]
    full = tmp_path / "full"
    main([*args, "--out-dir", str(full)])

    part = tmp_path / "part"
    seen = []

    def crash_after_four(rec):
        seen.append(rec["id"])
        if len(seen) == 4:  # 3 MMMU rows done, 1 WeMath row done
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        main([*args, "--out-dir", str(part)], on_record=crash_after_four)
    assert len(read_jsonl(part / "wemath" / "samples.jsonl")) == 1
    assert not (part / "table.md").exists()

    resumed = []
    main([*args, "--out-dir", str(part)], on_record=lambda r: resumed.append(r["id"]))
    assert resumed == ["testmini:wemath-1", "testmini:wemath-2"]  # finished samples are not redone
    for b in ("mmmu", "wemath"):
        a = read_jsonl(full / b / "samples.jsonl")
        c = read_jsonl(part / b / "samples.jsonl")
        assert a == c  # same responses (per-sample seeds), same order
        ra = json.loads((full / b / "results.json").read_text())["metrics"]
        rc = json.loads((part / b / "results.json").read_text())["metrics"]
        assert ra == rc
    assert (full / "table.md").read_text() == (part / "table.md").read_text()


def test_torn_last_line_is_dropped_and_redone(tiny_model, data_dir, tmp_path):
    args = ["--model", str(tiny_model), "--data-dir", str(data_dir), "--benchmarks", "mathvision", "--out-dir", str(tmp_path), *FAST]
    main(args)
    f = tmp_path / "mathvision" / "samples.jsonl"
    lines = f.read_text().splitlines(keepends=True)
    f.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # crash in the middle of a write
    redone = []
    main(args, on_record=lambda r: redone.append(r["id"]))
    assert redone == ["test:mathvision-1"]
    assert f.read_text().splitlines(keepends=True) == lines


def test_limit_and_greedy_preset(tiny_model, data_dir, tmp_path):
    main(["--model", str(tiny_model), "--data-dir", str(data_dir), "--out-dir", str(tmp_path), "--benchmarks", "mmmu",
          "--preset", "greedy", "--limit", "1", *FAST])
    res = json.loads((tmp_path / "mmmu" / "results.json").read_text())
    assert res["metrics"]["n"] == 1 and res["rows_in_files"] == 3 and res["limit"] == 1
    assert res["protocol"]["temperature"] == 0.0 and res["protocol"]["preset"] == "greedy"
    assert "first 1 rows per benchmark only" in (tmp_path / "table.md").read_text()


def test_resume_refuses_a_different_protocol(tiny_model, data_dir, tmp_path):
    args = ["--model", str(tiny_model), "--data-dir", str(data_dir), "--out-dir", str(tmp_path), "--benchmarks", "mathvista", "--limit", "1"]
    main([*args, *FAST])
    with pytest.raises(ValueError, match="different setup"):
        main([*args, *FAST, "--set", "temperature=1.0"])


def test_bad_row_names_file_row_and_field(tiny_model, tmp_path):
    r = row("mmmu", "validation", 0, "Which?", "B", options=["1", "2"])
    r["images"] = []  # the prompt still has its <image> placeholder
    p = write(tmp_path / "data", "mmmu", "validation", [r])
    with pytest.raises(ValueError, match=rf"{p} row 0: field 'prompt' has 1 <image> placeholders but the row has 0 images"):
        main(["--model", str(tiny_model), "--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "o"), "--benchmarks", "mmmu", *FAST])


def test_vllm_backend_fails_clearly_without_vllm(tiny_model, data_dir, tmp_path):
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="needs vLLM.*--backend hf"):
        main(["--model", str(tiny_model), "--data-dir", str(data_dir), "--out-dir", str(tmp_path), "--benchmarks", "mmmu", "--backend", "vllm"])


def test_shell_recipe_passes_arguments_through(tiny_model, data_dir, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    env = {"MODEL": str(tiny_model), "DATA_DIR": str(data_dir), "OUT_DIR": str(tmp_path), "BENCHMARKS": "zerobench",
           "PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(repo / "recipe" / "eval_qwen3vl8b.sh"), "--limit", "1", *FAST],
                          env=env, capture_output=True, text=True, cwd=repo, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(read_jsonl(tmp_path / "zerobench" / "samples.jsonl")) == 1
    assert "| **" in proc.stdout


def test_presence_penalty_hits_generated_tokens_only():
    import torch

    from verl_ext.eval.backends import PresencePenalty

    ids = torch.tensor([[1, 3, 2, 2, 4]])  # prompt = [1, 3], generated = [2, 2, 4]
    out = PresencePenalty(1.5, prompt_len=2)(ids, torch.zeros(1, 6))
    # token 2 twice and token 4 once: each -1.5 once (presence, not frequency); prompt tokens 1, 3 untouched
    assert out.tolist() == [[0.0, 0.0, -1.5, 0.0, -1.5, 0.0]]


def test_images_are_placed_where_the_placeholders_are():
    from verl_ext.eval.backends import chat_messages
    from verl_ext.eval.data import Sample

    s = Sample("mmmu", "validation", "validation:1", 0, "<image>Compare <image> with the first.", [b"x", b"y"], "A")
    (msg,) = chat_messages(s)
    assert msg["content"] == [{"type": "image"}, {"type": "text", "text": "Compare "}, {"type": "image"},
                              {"type": "text", "text": " with the first."}]


def test_stored_responses_are_rescored_with_the_current_scorer(tiny_model, data_dir, tmp_path):
    args = ["--model", str(tiny_model), "--data-dir", str(data_dir), "--out-dir", str(tmp_path), "--benchmarks", "zerobench", *FAST]
    main(args)
    f = tmp_path / "zerobench" / "samples.jsonl"
    recs = read_jsonl(f)
    # pretend an older scorer produced these lines: a right answer marked wrong, a wrong one marked right
    recs[0].update(response="<answer>12</answer>", correct=False)  # gold of the first row is 12
    recs[1].update(correct=True)  # random text, gold "red"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    redone = []
    main(args, on_record=lambda r: redone.append(r))
    assert redone == []  # nothing regenerated
    after = read_jsonl(f)
    assert [r["correct"] for r in after] == [True, False, after[2]["correct"]]
    res = json.loads((tmp_path / "zerobench" / "results.json").read_text())
    assert res["rescored_samples"] == 2
    assert res["metrics"]["accuracy_subquestions"] == 50.0  # 1 of 2 sub-questions
