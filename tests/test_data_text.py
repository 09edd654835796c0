"""The text math sets, each written as a small local copy in its published layout, converted offline and checked
row by row: the problem text, the boxed student prompt, the answer, ids, repeats, expected row counts."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.build_parquet import build, main, parse_args

BOXED = "Please reason step by step, and put your final answer within \\boxed{}."
DAPO_INSTRUCTION = ("Solve the following math problem step by step. The last line of your response should be of the "
                    "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
DAPO_REMINDER = '\n\nRemember to put your answer on its own line after "Answer:".'
DAPO_SCHEMA = pa.schema([
    ("data_source", pa.string()),
    ("prompt", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
    ("ability", pa.string()),
    ("reward_model", pa.struct([("ground_truth", pa.string()), ("style", pa.string())])),
    ("extra_info", pa.struct([("index", pa.string())])),
])


def run(out, *argv):
    return build(parse_args([*argv, "--out-dir", str(out), "--quiet"]))


def read(path):
    return pq.read_table(path).to_pylist()


def dapo_row(index, problem, answer):
    return {"data_source": "math_dapo", "prompt": [{"content": DAPO_INSTRUCTION + problem + DAPO_REMINDER, "role": "user"}],
            "ability": "MATH", "reward_model": {"ground_truth": answer, "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": index}}


def write_dapo(root, rows):
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=DAPO_SCHEMA), root / "data" / "dapo-math-17k.parquet")


def check_row(row, *, data_source, question, answer, rid, index, split):
    assert row["data_source"] == data_source and row["images"] == [] and row["ability"] == "math"
    assert row["prompt"] == [{"role": "user", "content": f"{question}\n\n{BOXED}"}]
    assert row["reward_model"] == {"style": "rule", "ground_truth": answer}
    info = row["extra_info"]
    assert (info["id"], info["index"], info["split"], info["question"]) == (rid, index, split, question)
    assert info["answer_format"] == "boxed" and info["problem_type"] == "math"


def test_dapo_problem_taken_out_of_its_instruction_and_repeats_skipped(tmp_path):
    write_dapo(tmp_path / "src", [
        dapo_row("u1", "Find $x$ if $2x = 6$.", "3"),
        dapo_row("u2", "How many primes are below 10?", "4"),
        dapo_row("u3", "Find $x$ if $2x = 6$.", "3"),        # DAPO repeats its problems: skipped, counted
        dapo_row("u4", "What is $1 + 1$?", "2"),
    ])
    summary = run(tmp_path / "out", "dapo", "--source", str(tmp_path / "src"))
    (rec,) = summary
    assert (rec["split"], rec["written"], rec["rejected"], rec["rows_read"]) == ("train", 3, 0, 4)
    assert rec["counts"] == {"repeat of an earlier row (same question and answer): skipped": 1}
    assert rec["expected_rows"] == 1791700 and rec["count_mismatch"]  # a 4-row copy is not the published set
    rows = read(tmp_path / "out/dapo/train.parquet")
    for i, (rid, q, a) in enumerate([("u1", "Find $x$ if $2x = 6$.", "3"), ("u2", "How many primes are below 10?", "4"),
                                     ("u4", "What is $1 + 1$?", "2")]):
        check_row(rows[i], data_source="dapo_math", question=q, answer=a, rid=rid, index=i, split="train")
        assert rows[i]["extra_info"]["source"] == "math_dapo"
    assert "qwen3vl_235b_thinking_response" not in rows[0]["extra_info"]  # no traces: OPSD falls back to the answer


def test_dapo_same_problem_with_another_answer_is_a_bad_row(tmp_path, capsys):
    write_dapo(tmp_path / "src", [dapo_row("u1", "Find $y$.", "3"), dapo_row("u2", "Find $y$.", "5"),
                                  dapo_row("u3", "Find $z$.", "1")])
    assert main(["dapo", "--source", str(tmp_path / "src"), "--out-dir", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "u2" in err and "answer" in err and "'u1'" in err
    (rec,) = run(tmp_path / "out2", "dapo", "--source", str(tmp_path / "src"), "--skip-bad")
    assert (rec["written"], rec["rejected"], rec["rows_read"]) == (2, 1, 3)


def test_dapo_bad_prompt_names_the_field(tmp_path, capsys):
    bad = dapo_row("u1", "x", "1")
    bad["prompt"] = []
    write_dapo(tmp_path / "src", [bad])
    assert main(["dapo", "--source", str(tmp_path / "src"), "--out-dir", str(tmp_path / "out"), "--quiet"]) == 1
    assert "prompt" in capsys.readouterr().err


def test_math500_jsonl_all_rows(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "test.jsonl", "w") as f:
        for i in range(500):
            f.write(json.dumps({"problem": f"Compute ${i} + 1$.", "solution": f"It is $\\boxed{{{i + 1}}}$.",
                                "answer": str(i + 1), "subject": "Algebra", "level": 1 + i % 5,
                                "unique_id": f"test/algebra/{i}.json"}) + "\n")
    (rec,) = run(tmp_path / "out", "math500", "--source", str(src))
    assert (rec["split"], rec["written"], rec["expected_rows"], rec["count_mismatch"]) == ("test", 500, 500, False)
    rows = read(tmp_path / "out/math500/test.parquet")
    check_row(rows[7], data_source="math500", question="Compute $7 + 1$.", answer="8", rid="test/algebra/7.json",
              index=7, split="test")
    assert (rows[7]["extra_info"]["subject"], rows[7]["extra_info"]["level"]) == ("Algebra", 3)
    assert rows[7]["extra_info"]["solution"] == "It is $\\boxed{8}$."


def test_aime24_layouts(tmp_path):
    """HuggingFaceH4/aime_2024 (data/train-*.parquet, 30 rows, the only split named train), and verl's
    BytedTsinghua-SIA/AIME-2024 (DAPO's layout, each problem repeated)."""
    h4 = tmp_path / "h4" / "data"
    h4.mkdir(parents=True)
    rows = [{"id": 60 + i, "problem": f"Find the remainder of {i}.", "solution": "...", "answer": f"{i:03d}",
             "url": "u", "year": "2024"} for i in range(30)]
    pq.write_table(pa.Table.from_pylist(rows), h4 / "train-00000-of-00001.parquet")
    (rec,) = run(tmp_path / "out", "aime24", "--source", str(tmp_path / "h4"))
    assert (rec["split"], rec["written"], rec["count_mismatch"]) == ("test", 30, False)
    out = read(tmp_path / "out/aime24/test.parquet")
    check_row(out[5], data_source="aime24", question="Find the remainder of 5.", answer="005", rid="65", index=5,
              split="test")

    write_dapo(tmp_path / "verl", [dapo_row(str(k), f"Problem {k % 30}", str(k % 30)) for k in range(60)])
    (rec,) = run(tmp_path / "out2", "aime24", "--source", str(tmp_path / "verl" / "data" / "dapo-math-17k.parquet"))
    assert (rec["written"], rec["rows_read"], rec["count_mismatch"]) == (30, 60, True)
    assert read(tmp_path / "out2/aime24/test.parquet")[3]["extra_info"]["question"] == "Problem 3"


def test_aime25_two_files_one_split(tmp_path):
    """opencompass/AIME2025: aime2025-I.jsonl and aime2025-II.jsonl (15 rows each, question + answer)."""
    src = tmp_path / "src"
    src.mkdir()
    for part in ("I", "II"):
        with open(src / f"aime2025-{part}.jsonl", "w") as f:
            for i in range(15):
                f.write(json.dumps({"question": f"AIME {part} problem {i + 1}", "answer": str(100 + i)}) + "\n")
    (rec,) = run(tmp_path / "out", "aime25", "--source", str(src))
    assert (rec["split"], rec["written"], rec["expected_rows"], rec["count_mismatch"]) == ("test", 30, 30, False)
    rows = read(tmp_path / "out/aime25/test.parquet")
    check_row(rows[16], data_source="aime25", question="AIME II problem 2", answer="101", rid="aime25-16", index=16,
              split="test")


def test_arithmetic_generated_with_traces(tmp_path):
    (train, test) = run(tmp_path / "out", "arithmetic", "--arithmetic-train-size", "10", "--arithmetic-test-size", "4")
    assert (train["written"], test["written"]) == (10, 4)
    rows = read(tmp_path / "out/arithmetic/train.parquet")
    for row in rows:
        info = row["extra_info"]
        q, gt = info["question"], row["reward_model"]["ground_truth"]
        a, b = [int(t) for t in q.replace("?", "").replace(",", "").split() if t.isdigit()]
        assert int(gt) == (a + b if info["task"] == "add" else max(a, b))  # the answer by hand
        assert info["qwen3vl_235b_thinking_response"].endswith(f"\\boxed{{{gt}}}.")
    assert [r["extra_info"]["task"] for r in rows[:4]] == ["add", "larger", "add", "larger"]


@pytest.mark.parametrize("name", ["dapo", "math500", "aime24", "aime25"])
def test_text_sets_need_a_source_flag_of_their_own(name):
    args = parse_args([name, f"--{name}-source", "somewhere"])
    assert getattr(args, f"{name}_source") == "somewhere"
