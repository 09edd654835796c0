"""Bad rows (error naming dataset, row and field, or a rejects file with --skip-bad), atomic output
under interruption, and byte-identical re-runs."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_prep.build_parquet import build, parse_args
from data_prep.common import BadRow
from data_prep.sources import SourceError
from fixtures import data_layouts as L

ROOT = Path(__file__).resolve().parent.parent


def run(out, *argv):
    """build_parquet on a fixture; tiny fixture images stay as they are (byte-exact checks) unless
    the call names a pixel clamp (the default clamp has its own test)."""
    clamp = [] if any(a in argv for a in ("--min-pixels", "--max-pixels")) else ["--no-pixel-clamp"]
    return build(parse_args([*argv, *clamp, "--out-dir", str(out), "--quiet"]))


def good_paper_row(i, root):
    L.save_png(root, f"imgs/{i}.png", i)
    return {"id": f"r{i}", "problem": f"<image> q{i}", "answer": str(i), "images": [f"imgs/{i}.png"],
            "problem_type": "math", "qwen3vl_235b_thinking_response": "t"}


def write_jsonl(root: Path, rows):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "train.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


# (row overrides, field named in the error, words of the reason)
BAD_TRAIN = {
    "missing_file": ({"images": ["imgs/nope.png"]}, "images[0]", "cannot be read"),
    "null_image": ({"images": [None]}, "images[0]", "missing"),
    "corrupt_image": ("corrupt", "images[0]", "cannot be decoded"),
    # header intact, data cut: the cheap check (PNG checksums, JPEG at 1/8 scale) still catches it
    "truncated_png": ("truncated_png", "images[0]", "cannot be decoded"),
    "truncated_jpeg": ("truncated_jpeg", "images[0]", "cannot be decoded"),
    "elongated_image": ("elongated", "images[0]", "cannot be loaded by qwen-vl-utils"),  # aspect ratio 250
    "empty_answer": ({"answer": "  "}, "answer", "empty"),
    "null_answer": ({"answer": None}, "answer", "empty"),
    "too_few_images": ({"problem": "<image> and <image>"}, "images", "1 image(s) but 2"),
    "too_many_images": ({"problem": "no placeholder"}, "images", "1 image(s) but 0"),
    "mc_answer_not_an_option": ({"problem_type": "multiple choice", "options": ["x", "y"], "answer": "z"},
                                "answer", "neither an option letter"),
    "mc_letter_out_of_range": ({"problem_type": "multiple choice", "options": ["x", "y"], "answer": "C"},
                               "answer", "neither an option letter"),
    "mc_one_option": ({"problem_type": "multiple choice", "options": ["x"]}, "options", "1 option"),
    "missing_column": ("no_answer_column", "answer", "column 'answer' is missing"),
}


def make_bad(case, root):
    row = good_paper_row(99, root)
    change = BAD_TRAIN[case][0]
    if change == "corrupt":
        (root / "imgs/bad.png").write_bytes(L.png(5)[:40])  # truncated PNG
        row["images"] = ["imgs/bad.png"]
    elif change in ("truncated_png", "truncated_jpeg", "elongated"):
        import io

        from PIL import Image

        img = Image.effect_noise((1000, 4) if change == "elongated" else (64, 48), 60).convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format="JPEG" if change == "truncated_jpeg" else "PNG")
        data = buf.getvalue()
        (root / f"imgs/{change}").write_bytes(data if change == "elongated" else data[: len(data) * 3 // 4])
        row["images"] = [f"imgs/{change}"]
    elif change == "no_answer_column":
        del row["answer"]
    else:
        row.update(change)
    return row


@pytest.mark.parametrize("case", sorted(BAD_TRAIN))
def test_bad_row_stops_with_dataset_row_and_field(tmp_path, case):
    src = tmp_path / "src"
    rows = [good_paper_row(i, src) for i in range(3)]
    rows.insert(1, make_bad(case, src))
    write_jsonl(src, rows)
    with pytest.raises(BadRow) as ei:
        run(tmp_path / "out", "train", "--source", str(src))
    _, field, words = BAD_TRAIN[case]
    msg = str(ei.value)
    assert ei.value.dataset == "train" and ei.value.row_id == "r99" and ei.value.field == field
    assert "train" in msg and "'r99'" in msg and f"'{field}'" in msg and words in msg
    assert not list((tmp_path / "out").rglob("*.parquet")) and not list((tmp_path / "out").rglob(".*tmp*"))


def test_skip_bad_writes_every_reject_with_its_reason(tmp_path):
    src = tmp_path / "src"
    rows = [good_paper_row(i, src) for i in range(3)]
    bad = []
    for case in sorted(BAD_TRAIN):
        r = make_bad(case, src)
        r["id"] = f"bad-{case}"
        bad.append(r)
    write_jsonl(src, rows[:1] + bad + rows[1:])
    summary = run(tmp_path / "out", "train", "--source", str(src), "--skip-bad")
    assert summary[0]["written"] == 3 and summary[0]["rejected"] == len(BAD_TRAIN)
    assert sum(summary[0]["reasons"].values()) == len(BAD_TRAIN)
    kept = pq.read_table(tmp_path / "out/train/train.parquet").to_pylist()
    assert [r["extra_info"]["id"] for r in kept] == ["r0", "r1", "r2"]
    assert [r["extra_info"]["index"] for r in kept] == [0, 1, 2]
    lines = [json.loads(x) for x in (tmp_path / "out/train/train.rejects.jsonl").read_text().splitlines()]
    assert {rec["row_id"]: rec["field"] for rec in lines} == {f"bad-{c}": BAD_TRAIN[c][1] for c in BAD_TRAIN}
    for rec in lines:
        assert rec["dataset"] == "train" and rec["split"] == "train"
        assert BAD_TRAIN[rec["row_id"][4:]][2] in rec["reason"]
    # a clean re-run removes the stale rejects file
    write_jsonl(src, rows)
    run(tmp_path / "out", "train", "--source", str(src), "--skip-bad")
    assert not (tmp_path / "out/train/train.rejects.jsonl").exists()


def test_benchmark_specific_bad_rows(tmp_path):
    # MMMU: a placeholder pointing at a null image column; an unknown question type
    rows = [L.mmmu_row("m1", "see <image 2>", "['a', 'b']", "A", "multiple-choice", {1: L.png(1)}),
            L.mmmu_row("m2", "<image 1>?", "['a', 'b']", "A", "essay", {1: L.png(1)})]
    L.write_parquet(tmp_path / "mmmu/validation.parquet", rows, L.MMMU_SCHEMA)
    s = run(tmp_path / "out", "mmmu", "--source", str(tmp_path / "mmmu"), "--skip-bad")
    assert s[0]["written"] == 0 and s[0]["rejected"] == 2
    rec = [json.loads(x) for x in (tmp_path / "out/mmmu/validation.rejects.jsonl").read_text().splitlines()]
    assert [(r["row_id"], r["field"]) for r in rec] == [("m1", "image_2"), ("m2", "question_type")]
    assert pq.ParquetFile(tmp_path / "out/mmmu/validation.parquet").metadata.num_rows == 0
    # WeMath: an option string that cannot be split; ZeroBench: a null image in the list
    (tmp_path / "wm").mkdir()
    L.save_png(tmp_path / "wm", "i.png", 1)
    (tmp_path / "wm/testmini.json").write_text(json.dumps([{"ID": "g", "key": "2steps_1", "question": "q",
                                                             "option": "one, two", "answer": "A", "image_path": "i.png"}]))
    with pytest.raises(BadRow, match=r"wemath \[testmini\] row 'g/2steps_1', field 'option'"):
        run(tmp_path / "out", "wemath", "--source", str(tmp_path / "wm"))
    L.write_parquet(tmp_path / "zb/z.parquet", [{"question_id": "7", "question_text": "q", "question_answer": "1",
                                                 "question_images_decoded": [{"bytes": L.png(1), "path": None}, None],
                                                 "question_images": []}], L.ZB_SCHEMA)
    with pytest.raises(BadRow, match=r"row '7', field 'question_images_decoded\[1\]': image is missing"):
        run(tmp_path / "out", "zerobench", "--source", str(tmp_path / "zb"))


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_arguments_give_identical_files(tmp_path):
    L.write_mmmu(tmp_path / "mmmu")
    for out in ("a", "b"):
        run(tmp_path / out, "synthetic", "mmmu", "--mmmu-source", str(tmp_path / "mmmu"),
            "--synthetic-train-size", "40", "--synthetic-test-size", "10", "--row-group-rows", "8")
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert sorted(a) == ["mmmu/validation.parquet", "synthetic/test.parquet", "synthetic/train.parquet"]
    assert a == b
    run(tmp_path / "c", "synthetic", "--synthetic-train-size", "40", "--synthetic-test-size", "10",
        "--row-group-rows", "8", "--seed", "1")
    assert _digest(tmp_path / "c")["synthetic/train.parquet"] != a["synthetic/train.parquet"]


def test_worker_processes_give_the_single_process_files(tmp_path, monkeypatch):
    """--workers 2 (a real process pool over 32-row chunks) writes byte-identical parquet and rejects
    files to --workers 1: same order, ids, indices, val slice, rejects and counts; without
    --skip-bad it stops at the first bad row in source order."""
    import data_prep.build_parquet as bp

    pools = []

    class CountingPool(bp.ProcessPoolExecutor):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            pools.append(self)

    monkeypatch.setattr(bp, "ProcessPoolExecutor", CountingPool)
    src = tmp_path / "src"
    rows = [good_paper_row(i, src) for i in range(150)]
    for k in (40, 41, 97):
        rows[k]["answer"] = " "
    rows[120]["images"] = ["imgs/nope.png"]
    rows[60]["problem"] = "<image> " + "word " * 5000  # over the prompt budget
    write_jsonl(src, rows)
    common = ["train", "--source", str(src), "--skip-bad", "--val-size", "15", "--row-group-rows", "8"]
    s1 = run(tmp_path / "w1", *common, "--workers", "1")
    assert not pools
    s2 = run(tmp_path / "w2", *common, "--workers", "2")
    assert len(pools) == 1
    assert _digest(tmp_path / "w1") == _digest(tmp_path / "w2")
    strip = [{k: v for k, v in r.items() if k not in ("files", "rejects_file", "workers")} for r in s1]
    assert strip == [{k: v for k, v in r.items() if k not in ("files", "rejects_file", "workers")} for r in s2]
    assert [r["split"] for r in s1] == ["train", "val"]
    assert (sum(r["written"] for r in s1), sum(r["rejected"] for r in s1)) == (145, 5)
    assert sum(r["written"] + r["rejected"] for r in s1 if r["split"] == "val") == 15
    kept = pq.read_table(tmp_path / "w2/train/train.parquet").to_pylist()
    assert [r["extra_info"]["index"] for r in kept] == list(range(s1[0]["written"]))
    with pytest.raises(BadRow, match=r"row 'r40', field 'answer'"):
        run(tmp_path / "w3", "train", "--source", str(src), "--workers", "2")
    assert len(pools) == 2
    assert not list((tmp_path / "w3").rglob("*.parquet"))


def test_error_mid_write_leaves_no_finished_file(tmp_path):
    """A bad row after several row groups were flushed: temporaries are removed, and an older
    finished file of the same split is left untouched (never half-replaced)."""
    src = tmp_path / "src"
    rows = [good_paper_row(i, src) for i in range(40)]
    write_jsonl(src, rows)
    run(tmp_path / "out", "train", "--source", str(src), "--limit", "5")
    before = (tmp_path / "out/train/train.parquet").read_bytes()
    rows[30]["answer"] = ""
    write_jsonl(src, rows)
    with pytest.raises(BadRow):
        run(tmp_path / "out", "train", "--source", str(src), "--row-group-rows", "4")
    assert sorted(p.name for p in (tmp_path / "out/train").iterdir()) == ["train.parquet"]
    assert (tmp_path / "out/train/train.parquet").read_bytes() == before


def _processes_naming(path: Path) -> list[int]:
    pids = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if str(path).encode() in (d / "cmdline").read_bytes():
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


def test_killed_run_leaves_no_finished_file(tmp_path):
    """SIGKILL mid-run: only a hidden temporary (not named *.parquet) can remain, and no worker process."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(ROOT / "data_prep/build_parquet.py"), "synthetic", "--out-dir",
                             str(out), "--synthetic-train-size", "100000", "--row-group-rows", "16", "--quiet",
                             "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            tmps = list((out / "synthetic").glob(".train-*.tmp-*")) if (out / "synthetic").exists() else []
            if tmps and tmps[0].stat().st_size > 0:
                break
            assert proc.poll() is None, "the build ended before it could be interrupted"
            time.sleep(0.1)
        else:
            pytest.fail("no temporary output appeared")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # its worker processes (forked, same command line) die with it
    deadline = time.time() + 10
    while time.time() < deadline and _processes_naming(out):
        time.sleep(0.1)
    assert not _processes_naming(out)
    names = [p.name for p in (out / "synthetic").iterdir()]
    assert not [n for n in names if n.endswith(".parquet")], names
    assert all(n.startswith(".") and ".tmp-" in n for n in names)
    # the half-written temporary is not a readable parquet file
    with pytest.raises(Exception):
        pq.read_table(out / "synthetic" / names[0])


def test_unexpected_value_type_is_a_row_error_too(tmp_path):
    src = tmp_path / "src"
    row = good_paper_row(1, src)
    row.update(problem_type="multiple choice", options=5, id="odd")
    write_jsonl(src, [row])
    with pytest.raises(BadRow, match=r"row 'odd', field 'options': options are a int"):
        run(tmp_path / "out", "train", "--source", str(src))
    s = run(tmp_path / "out", "train", "--source", str(src), "--skip-bad")
    assert (s[0]["written"], s[0]["rejected"]) == (0, 1)


def test_undecodable_jsonl_lines_name_file_and_line(tmp_path):
    """A line that is not UTF-8, or not JSON, stops the run naming the file and line; --skip-bad
    rejects just that line."""
    src = tmp_path / "src"
    rows = [good_paper_row(i, src) for i in range(3)]
    write_jsonl(src, rows)
    path = src / "train.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(1, b'{"id": "latin1", "problem": "caf\xe9 <image>"}\n')
    lines.insert(3, b'{"id": "cut", "problem": \n')
    path.write_bytes(b"".join(lines))
    with pytest.raises(BadRow) as ei:
        run(tmp_path / "out", "train", "--source", str(src))
    assert ei.value.row_id == f"{path}:2" and "line 2 is not UTF-8" in str(ei.value) and "0xe9" in str(ei.value)
    summary = run(tmp_path / "out", "train", "--source", str(src), "--skip-bad")
    assert (summary[0]["written"], summary[0]["rejected"]) == (3, 2)
    rejects = [json.loads(x) for x in (tmp_path / "out/train/train.rejects.jsonl").read_text().splitlines()]
    assert [r["row_id"] for r in rejects] == [f"{path}:2", f"{path}:4"]
    assert "not valid JSON" in rejects[1]["reason"]


def test_json_name_with_json_lines_content_is_read_as_lines(tmp_path):
    src = tmp_path / "src"
    write_jsonl(src, [good_paper_row(i, src) for i in range(3)])
    (src / "train.jsonl").rename(src / "train.json")
    summary = run(tmp_path / "out", "train", "--source", str(src), "--val-size", "1")
    assert {s["split"]: s["written"] for s in summary} == {"train": 2, "val": 1}


def test_broken_json_list_names_the_file(tmp_path):
    src = tmp_path / "src"
    rows = [good_paper_row(i, src) for i in range(2)]
    (src / "train.json").write_text(json.dumps(rows)[:-30])
    with pytest.raises(SourceError, match=r"train\.json: not valid JSON after its row 1"):
        run(tmp_path / "out", "train", "--source", str(src))


def test_over_long_prompt_is_counted_or_rejected(tmp_path):
    """A 1 MB question would be dropped later by verl's prompt-length filter: counted in the
    summary (and warned), or rejected with --skip-bad."""
    src = tmp_path / "src"
    rows = [good_paper_row(i, src) for i in range(3)]
    rows[1]["problem"] = "<image> " + "lorem ipsum " * 90_000
    rows[2]["problem"] = "<image> " + "word " * 500  # ~500 tokens: within 4096, over 300
    write_jsonl(src, rows)
    summary = run(tmp_path / "out", "train", "--source", str(src))
    assert summary[0]["written"] == 3 and summary[0]["over_prompt_budget"] == 1
    summary = run(tmp_path / "out", "train", "--source", str(src), "--max-prompt-tokens", "300")
    assert summary[0]["over_prompt_budget"] == 2
    summary = run(tmp_path / "out", "train", "--source", str(src), "--skip-bad")
    assert (summary[0]["written"], summary[0]["rejected"]) == (2, 1)
    rec = json.loads((tmp_path / "out/train/train.rejects.jsonl").read_text())
    assert rec["row_id"] == "r1" and rec["field"] == "prompt" and "over --max-prompt-tokens 4096" in rec["reason"]


# ---------------------------------------------------------------- the evaluation command's inputs
@pytest.mark.parametrize("limit", ["0", "-1"])
def test_eval_rejects_non_positive_limits(limit, capsys):
    from verl_ext.eval.__main__ import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--model", "m", "--data-dir", "d", "--out-dir", "o", "--limit", limit])
    assert "must be a positive number of rows" in capsys.readouterr().err


def test_eval_failed_start_leaves_no_run_json(tmp_path):
    """No benchmark folder: the run stops before anything is written, so another --model can use
    the same out-dir afterwards."""
    from verl_ext.eval.protocol import load_protocol
    from verl_ext.eval.runner import run as eval_run

    def never():
        raise AssertionError("no backend is built for a run that cannot start")

    kw = dict(backend_factory=never, backend_name="hf", data_dir=tmp_path / "missing", benchmarks=["mmmu"],
              out_dir=tmp_path / "out", protocol=load_protocol("default", None, {}))
    with pytest.raises(Exception, match="missing"):
        eval_run(model="model-a", **kw)
    assert not (tmp_path / "out" / "run.json").exists()
    with pytest.raises(Exception, match="missing"):
        eval_run(model="model-b", **kw)  # the same error, not "written by a different setup"
    with pytest.raises(ValueError, match="positive"):
        eval_run(model="model-b", limit=0, **kw)
