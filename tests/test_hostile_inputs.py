"""Hostile and malformed input: files users hand us (data, templates, checkpoints, resume state)
are untrusted. Each test feeds one such input and asserts the outcome: a clear error naming the
file/row/field, no side effect of the crafted content, bounded size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A template that, unsandboxed, runs a shell command creating a marker file.
def _rce_template(marker: Path) -> str:
    return "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}{{ question }}"


# ---------------------------------------------------------------- templates


def test_student_template_cannot_run_code(tmp_path):
    from data_prep.common import PromptRenderer, templating

    marker = tmp_path / "pwned"
    tpl = tmp_path / "evil.jinja"
    tpl.write_text(_rce_template(marker))
    with pytest.raises(templating.TemplateError, match=r"evil\.jinja.*sandbox"):
        PromptRenderer(tpl).render("q", "math", [])
    assert not marker.exists()


def test_build_parquet_with_hostile_template_reports_and_leaves_no_marker(tmp_path):
    marker = tmp_path / "pwned"
    tpl = tmp_path / "evil.jinja"
    tpl.write_text(_rce_template(marker))
    proc = subprocess.run([sys.executable, "data_prep/build_parquet.py", "synthetic", "--out-dir", str(tmp_path / "o"),
                           "--prompt-template", str(tpl), "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and not marker.exists()
    assert "evil.jinja" in proc.stderr and "Traceback" not in proc.stderr


def test_teacher_template_cannot_run_code(tmp_path):
    from verl_ext.privileged import load_template
    from verl_ext.templating import TemplateError

    marker = tmp_path / "pwned"
    tpl = tmp_path / "evil.jinja"
    tpl.write_text(_rce_template(marker) + " {{ hint }}")
    with pytest.raises(TemplateError, match="sandbox"):
        load_template(str(tpl))
    assert not marker.exists()


def test_template_cannot_build_a_huge_string(tmp_path):
    from verl_ext.templating import TemplateError, compile_template, render

    with pytest.raises(TemplateError, match="limit"):
        render(compile_template("{{ 'x' * 10**9 }}", "t.jinja"), "t.jinja")
    with pytest.raises(TemplateError, match="bits"):
        render(compile_template("{{ 10 ** 10 ** 1000 }}", "t.jinja"), "t.jinja")
    assert render(compile_template("{{ '-' * 3 }}{{ 2 ** 3 }}", "t.jinja"), "t.jinja") == "---8"


def test_template_syntax_error_names_file_and_line():
    from verl_ext.templating import TemplateError, compile_template

    with pytest.raises(TemplateError, match=r"t\.jinja: line 2"):
        compile_template("ok\n{% if %}", "t.jinja")


@pytest.mark.parametrize("text, words", [
    ("{{ hint }}", "exactly once"),
    ("{{ question }} {{ question }} {{ hint }}", "exactly once"),
    ("{% if hint %}{{ question }}{% endif %} {{ hint }}", "also when the hint is empty"),
])
def test_teacher_template_must_render_the_question_once(tmp_path, text, words):
    from verl_ext.privileged import load_template

    tpl = tmp_path / "t.jinja"
    tpl.write_text(text)
    with pytest.raises(ValueError, match=words):
        load_template(str(tpl))


def test_released_and_builtin_templates_render_unchanged_in_the_sandbox():
    """The sandbox changes nothing for an honest template: the student template's text is checked
    against the words written here, the teacher's against the released wording."""
    from data_prep.common import PromptRenderer
    from verl_ext.privileged import load_template

    out = PromptRenderer().render("<image> What is 2+2?", "multiple choice", ["3", "4"])
    assert out.endswith("Question:\n<image> What is 2+2?\n\nOptions:\nA. 3\nB. 4")
    teacher = load_template("teacher").render(question=" Q ", hint=" H ", format_instruction="F")
    assert teacher == ("Q\n\nHere is a reference solution:\nH\n\nAfter understanding the reference solution, please "
                       "try to solve this problem using your own approach below. F")


# ---------------------------------------------------------------- image paths, sizes, hidden data


def _build(out, *argv):
    from data_prep.build_parquet import build, parse_args

    return build(parse_args([*argv, "--no-pixel-clamp", "--out-dir", str(out), "--quiet"]))


def _paper_row(i, images):
    return {"id": f"r{i}", "problem": "<image> " * len(images) + f"q{i}", "answer": str(i), "images": images,
            "problem_type": "math", "qwen3vl_235b_thinking_response": "t"}


def _jsonl(root: Path, rows):
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _bad_row(tmp_path, rows, *extra):
    from data_prep.common import BadRow

    src = tmp_path / "src"
    _jsonl(src, rows)
    with pytest.raises(BadRow) as ei:
        _build(tmp_path / "out", "train", "--source", str(src), *extra)
    assert not list((tmp_path / "out").rglob("*.parquet"))
    return ei.value


@pytest.fixture
def outside(tmp_path):
    """A secret image outside the data folder, and the data folder with one good image."""
    from fixtures import data_layouts as L

    secret = L.save_png(tmp_path / "secret", "x.png", 7)
    L.save_png(tmp_path / "src", "imgs/ok.png", 1)
    return secret


@pytest.mark.parametrize("path", ["../secret/x.png", "imgs/../../secret/x.png", "ABS"])
def test_image_path_outside_the_data_folder_is_a_row_error(tmp_path, outside, path):
    path = str(tmp_path / "secret" / "x.png") if path == "ABS" else path
    err = _bad_row(tmp_path, [_paper_row(0, ["imgs/ok.png"]), _paper_row(1, [path])])
    assert err.row_id == "r1" and err.field == "images[0]" and "outside the data folder" in str(err)


def test_image_root_option_allows_another_folder(tmp_path, outside):
    src = tmp_path / "src"
    _jsonl(src, [_paper_row(0, [str(tmp_path / "secret" / "x.png")])])
    _build(tmp_path / "out", "train", "--source", str(src), "--image-root", str(tmp_path / "secret"))
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "out/train/train.parquet").to_pylist()[0]["images"][0]["bytes"] == outside


def test_symlink_out_of_the_data_folder_is_refused(tmp_path, outside):
    (tmp_path / "src" / "imgs" / "link.png").symlink_to(tmp_path / "secret" / "x.png")
    err = _bad_row(tmp_path, [_paper_row(0, ["imgs/link.png"])])
    assert "outside the data folder" in str(err)


def test_outside_path_error_does_not_tell_whether_the_file_exists(tmp_path, outside):
    a = _bad_row(tmp_path, [_paper_row(0, ["/etc/passwd"])])
    b = _bad_row(tmp_path, [_paper_row(0, ["/etc/no-such-file-here"])])
    assert a.reason.replace("/etc/passwd", "P") == b.reason.replace("/etc/no-such-file-here", "P")


def _zip_with(path: Path, member: str, head: bytes, zeros: int):
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open(member, "w", force_zip64=True) as f:
        f.write(head)
        block = bytes(1 << 20)
        for _ in range(zeros >> 20):
            f.write(block)


def _peak_rss_mib(tmp_path, src: Path, *extra) -> tuple[int, str, float]:
    """build_parquet in a child process: (exit code, stderr, peak resident memory in MiB)."""
    code = ("import resource, sys, runpy; sys.argv = sys.argv[1:]\n"
            "try:\n runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e: rc = e.code\n"
            "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "data_prep/build_parquet.py", "train", "--source", str(src),
                           "--out-dir", str(tmp_path / "o"), "--quiet", "--no-pixel-clamp", *extra],
                          cwd=ROOT, capture_output=True, text=True)
    rss = int(proc.stderr.rsplit("RSS", 1)[1].split()[0]) / 1024
    return proc.returncode, proc.stderr, rss


def test_zip_member_over_the_cap_is_refused_with_bounded_memory(tmp_path):
    """A 512 MiB member (a PNG then zeros) compresses to about half a megabyte. It is a row error and
    the conversion never holds it: the peak memory stays within that of converting a good zip plus a
    few copies of the cap, far below the member's size."""
    from fixtures import data_layouts as L

    good, bomb = tmp_path / "good", tmp_path / "bomb"
    for root, zeros in ((good, 0), (bomb, 512 << 20)):
        root.mkdir()
        _zip_with(root / "imgs.zip", "imgs/x.png", L.png(3), zeros)
        _jsonl(root, [_paper_row(0, ["imgs/x.png"])])
    assert (bomb / "imgs.zip").stat().st_size < 2 << 20
    cap = 8 << 20
    rc0, err0, base = _peak_rss_mib(tmp_path, good, "--max-image-bytes", str(cap))
    assert rc0 == 0, err0
    rc, err, peak = _peak_rss_mib(tmp_path, bomb, "--max-image-bytes", str(cap))
    assert rc == 1 and "images[0]" in err and "over the 8388608-byte image limit" in err
    assert peak - base < 3 * (cap >> 20) + 16, (base, peak)  # cap read + its bytes copy, plus slack


def test_image_over_the_cap_is_a_row_error(tmp_path):
    from fixtures import data_layouts as L

    L.save_png(tmp_path / "src", "imgs/ok.png", 1)
    err = _bad_row(tmp_path, [_paper_row(0, ["imgs/ok.png"])], "--max-image-bytes", "10")
    assert err.field == "images[0]" and "over the 10-byte image limit" in str(err)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_bytes_after_the_image_end_are_a_row_error(tmp_path, fmt):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 20, 30)).save(buf, format=fmt)
    clean = buf.getvalue()
    (tmp_path / "src" / "imgs").mkdir(parents=True)
    (tmp_path / "src/imgs/clean").write_bytes(clean)
    (tmp_path / "src/imgs/x").write_bytes(clean + b"hidden payload")
    _jsonl(tmp_path / "src", [_paper_row(0, ["imgs/clean"])])
    _build(tmp_path / "out_ok", "train", "--source", str(tmp_path / "src"))  # the clean image passes
    err = _bad_row(tmp_path, [_paper_row(0, ["imgs/x"])])
    assert err.field == "images[0]" and f"14 byte(s) after the end of the {fmt} image" in str(err)


def test_16_bit_and_animated_images_are_converted_and_counted(tmp_path):
    """A 16-bit grey PNG would load almost all white through verl's loader (RGB conversion clips at
    255): it is stored scaled to 8 bits (value >> 8). An animated GIF is stored as its first frame."""
    import io

    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image
    from qwen_vl_utils import fetch_image

    src = tmp_path / "src"
    (src / "imgs").mkdir(parents=True)
    grey = np.full((32, 32), 20000, dtype=np.uint16)
    Image.fromarray(grey).save(src / "imgs/deep.png")
    frames = [Image.new("RGB", (32, 32), c) for c in ((200, 0, 0), (0, 200, 0))]
    frames[0].save(src / "imgs/anim.gif", save_all=True, append_images=frames[1:])
    _jsonl(src, [_paper_row(0, ["imgs/deep.png"]), _paper_row(1, ["imgs/anim.gif"])])
    summary = _build(tmp_path / "out", "train", "--source", str(src))
    assert summary[0]["counts"] == {"16-bit image scaled to 8 bits": 1, "animated image: first frame kept": 1}
    rows = pq.read_table(tmp_path / "out/train/train.parquet").to_pylist()
    deep = np.asarray(fetch_image({"image": Image.open(io.BytesIO(rows[0]["images"][0]["bytes"]))}))
    assert (deep == 20000 >> 8).all()  # 78, not 255
    anim = Image.open(io.BytesIO(rows[1]["images"][0]["bytes"]))
    assert getattr(anim, "n_frames", 1) == 1 and anim.convert("RGB").getpixel((5, 5))[0] > 150


# ---------------------------------------------------------------- the evaluation command


@pytest.fixture
def eval_cli(capsys):
    """The command's entry point in this process: (exit code, stderr). Usage errors exit through
    argparse (SystemExit 2); data errors return 1 with a message, never a traceback."""
    from verl_ext.eval.__main__ import cli

    def call(*argv):
        try:
            rc = cli([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
        err = capsys.readouterr().err
        assert "Traceback" not in err, err[-3000:]
        return rc, err
    return call


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    from test_eval_command import make_fixtures

    d = tmp_path_factory.mktemp("bench")
    make_fixtures(d)
    return d


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from verl_ext.tiny_model import build_tiny_qwen3vl

    return build_tiny_qwen3vl(tmp_path_factory.mktemp("tiny") / "model")


FAST = ["--backend", "hf", "--set", "max_new_tokens=2", "--set", "min_pixels=1024", "--set", "max_pixels=4096"]


@pytest.mark.parametrize("case, words", [
    ("unknown_benchmark", "unknown benchmark(s) nosuch"),
    ("missing_data_dir", "--data-dir"),
    ("missing_model", "no such directory"),
    ("model_is_a_file", "is a file"),
    ("bad_set_value", "protocol field 'temperature' must be a number"),
    ("bad_set_syntax", "--set expects KEY=VALUE"),
    ("unknown_set_field", "unknown protocol field 'temprature'"),
    ("missing_split", "no split nosuch"),
])
def test_eval_usage_errors_exit_2_before_anything_loads(tmp_path, eval_data, eval_cli, case, words):
    model = tmp_path / "model"
    model.mkdir()  # an empty folder: anything that tried to load it would fail differently
    args = {"--model": model, "--data-dir": eval_data, "--out-dir": tmp_path / "out", "--benchmarks": "mmmu"}
    extra = []
    if case == "unknown_benchmark":
        args["--benchmarks"] = "mmmu,nosuch"
    elif case == "missing_data_dir":
        args["--data-dir"] = tmp_path / "nodata"
    elif case == "missing_model":
        args["--model"] = tmp_path / "nomodel"
    elif case == "model_is_a_file":
        (tmp_path / "weights.pt").write_bytes(b"x")
        args["--model"] = tmp_path / "weights.pt"
    elif case == "bad_set_value":
        extra = ["--set", "temperature=abc"]
    elif case == "bad_set_syntax":
        extra = ["--set", "temperature"]
    elif case == "unknown_set_field":
        extra = ["--set", "temprature=1"]
    elif case == "missing_split":
        extra = ["--split", "mmmu=nosuch"]  # the folder has only 'validation': never evaluated instead
    rc, err = eval_cli(*[x for kv in args.items() for x in kv], *extra)
    assert rc == 2 and words in err, err
    assert not (tmp_path / "out" / "run.json").exists()


def test_eval_bad_set_value_leaves_the_out_dir_usable(tmp_path, eval_data, tiny_model, eval_cli):
    """``temperature=abc`` stops before the model loads and writes no run.json; the corrected command
    then runs in the same folder."""
    base = ["--model", tiny_model, "--data-dir", eval_data, "--out-dir", tmp_path / "out", "--benchmarks", "mathvista",
            "--limit", "1", *FAST]
    rc, err = eval_cli(*base, "--set", "temperature=abc")
    assert rc == 2 and not (tmp_path / "out" / "run.json").exists()
    rc, err = eval_cli(*base)
    assert rc == 0, err
    assert json.loads((tmp_path / "out" / "run.json").read_text())["model"] == str(tiny_model)


@pytest.mark.parametrize("damage, words", [
    ("run_json", "run.json: damaged"),
    ("samples_bad_line", "samples.jsonl line 1: not valid JSON"),
    ("samples_no_response", "samples.jsonl line 1: field 'response' is missing"),
    ("samples_not_object", "samples.jsonl line 1: expected a JSON object"),
])
def test_eval_damaged_resume_state_names_file_line_and_recovery(tmp_path, eval_data, tiny_model, eval_cli, damage,
                                                                  words):
    base = ["--model", tiny_model, "--data-dir", eval_data, "--out-dir", tmp_path / "out", "--benchmarks", "mathvista",
            "--limit", "2", *FAST]
    rc, err = eval_cli(*base)
    assert rc == 0, err
    out = tmp_path / "out"
    samples = out / "mathvista" / "samples.jsonl"
    lines = samples.read_text().splitlines(keepends=True)
    if damage == "run_json":
        (out / "run.json").write_text('{"model": "x"')  # truncated
    elif damage == "samples_bad_line":
        samples.write_text("{oops\n" + "".join(lines[1:]))
    elif damage == "samples_no_response":
        rec = json.loads(lines[0])
        del rec["response"]
        samples.write_text(json.dumps(rec) + "\n" + "".join(lines[1:]))
    else:
        samples.write_text("[1, 2]\n" + "".join(lines[1:]))
    rc, err = eval_cli(*base)
    assert rc == 1 and words in err and ("delete" in err), err


def _tiny_verl_checkpoint(tmp_path, tiny_model):
    from test_eval_checkpoint import SAVE, free_port

    step = tmp_path / "global_step_1"
    proc = subprocess.run([sys.executable, "-c", SAVE, str(tiny_model), str(step / "actor"), str(free_port())],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return step


def test_crafted_checkpoint_shard_is_refused_and_runs_nothing(tmp_path, tiny_model, eval_cli):
    """A verl checkpoint whose shard is a pickle calling os.system: refused with a message naming
    --trust-checkpoint, and the command never ran. A real verl checkpoint merges weights-only."""
    import torch

    from verl_ext.eval.checkpoint import CheckpointRefused, resolve_model

    good = _tiny_verl_checkpoint(tmp_path, tiny_model)
    assert (Path(resolve_model(str(good), tmp_path / "merged")) / "config.json").is_file()

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil" / "actor"
    evil.mkdir(parents=True)
    (evil / "fsdp_config.json").write_text('{"FSDP_version": 2, "world_size": 1}')
    torch.save({"model.w": torch.zeros(2), "x": Payload()}, evil / "model_world_size_1_rank_0.pt")
    import shutil

    shutil.copytree(good / "actor" / "huggingface", evil / "huggingface")
    with pytest.raises(CheckpointRefused, match=r"--trust-checkpoint.*|posix.system"):
        resolve_model(str(evil.parent), tmp_path / "merged_evil")
    assert not marker.exists()
    # the command says the same, exit 1, without a traceback
    rc, err = eval_cli("--model", evil.parent, "--data-dir", tmp_path, "--out-dir", tmp_path / "o",
                       "--benchmarks", "mmmu", "--backend", "hf")
    assert rc == 1 and "--trust-checkpoint" in err and "posix.system" in err and not marker.exists()


# ---------------------------------------------------------------- the released reward: same rules, linear cost


def _fuzz_texts(seed=0, n=3000):
    """Short random strings over the alphabet the released rules look at (tags in any case,
    whitespace, braces), so that every branch of their regular expressions is exercised."""
    import random

    rng = random.Random(seed)
    atoms = ["<answer>", "</answer>", "<ANSWER>", "</Answer>", "<thought>", "</thought>", "< answer >", "</ answer>",
             " ", "  ", "\n", "\t", "<", ">", "/", "x", "42", "\\text{", "\\mbox{", "}", "{", "\\text{ a }", "ſ", "K"]
    return [''.join(rng.choice(atoms) for _ in range(rng.randint(0, 14))) for _ in range(n)]


def test_released_scans_equal_the_released_regular_expressions():
    """The released rules are regular expressions with quadratic backtracking; the linear scans that
    replace them must give the same result on every input (the expressions are the reference)."""
    import re

    from verl_ext.reward import released as R

    tag_space = re.compile(r"\s*(<|>|/)\s*")
    first = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
    fmt = re.compile(r"<thought>.*</thought>.*<answer>.*</answer>", re.DOTALL)
    text_cmd, mbox_cmd = re.compile(r"\\text\{\s*[^}]*\s*\}"), re.compile(r"\\mbox\{\s*[^}]*\s*\}")
    for t in _fuzz_texts():
        assert R.normalize_response(t) == tag_space.sub(r"\1", t), repr(t)
        m = first.search(t)
        assert R.first_answer(t) == (m.group(1) if m else None), repr(t)
        assert R.format_ok(t) == bool(fmt.fullmatch(t)), repr(t)
        assert R._drop_commands(R._drop_commands(t, "\\text{"), "\\mbox{") == mbox_cmd.sub("", text_cmd.sub("", t)), repr(t)
    # the shapes the format rule cares about, written out
    assert R.format_ok("<thought>a</thought>b<answer>c</answer>") and R.format_ok("<thought></thought><answer></answer>")
    assert not R.format_ok("<thought></thought></answer>") and not R.format_ok("<thought><answer></thought></answer>")


def test_released_rouge_is_rouge_score_unchanged():
    from rouge_score import rouge_scorer

    from verl_ext.reward.released import rouge_mean_f1

    stock = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    pairs = [("the cats are running quickly", "a cat runs quick"), ("generalization", "generalize generally"),
             ("", "x"), ("Running, jumped; happily!", "runs jumping happy")]
    for ref, hyp in pairs:
        s = stock.score(ref, hyp)
        want = (s["rouge1"].fmeasure + s["rouge2"].fmeasure + s["rougeL"].fmeasure) / 3
        assert rouge_mean_f1(ref, hyp) == want


# ---------------------------------------------------------------- the CPU quickstart's arguments


@pytest.mark.parametrize("env, argv, words", [
    ({}, ["bogus"], "'bogus' is neither a method nor key=value"),
    ({}, ["rlsd", "bogus"], "'bogus' is neither a method nor key=value"),
    ({"STEPS": "abc"}, [], "STEPS must be a positive integer, got 'abc'"),
    ({"STEPS": "0"}, ["grpo"], "STEPS must be a positive integer, got '0'"),
])
def test_quickstart_usage_errors_stop_before_any_work(env, argv, words):
    proc = subprocess.run(["bash", "examples/quickstart_cpu.sh", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "warm start" not in proc.stdout and "build" not in proc.stdout


# ---------------------------------------------------------------- build_parquet's command line


@pytest.mark.parametrize("where", ["file", "under_a_file", "unwritable"])
def test_build_parquet_unusable_out_dir_is_a_message(tmp_path, where):
    (tmp_path / "f").write_text("x")
    out = {"file": tmp_path / "f", "under_a_file": tmp_path / "f" / "sub", "unwritable": Path("/proc/self/nope")}[where]
    proc = subprocess.run([sys.executable, "data_prep/build_parquet.py", "synthetic", "--out-dir", str(out), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and f"--out-dir {out}: cannot write there" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_build_parquet_write_failure_midway_is_a_message(tmp_path):
    """A write that fails midway (a full disk; here the file-size limit of the process, which makes
    the kernel refuse the write the same way) ends with a message naming the output folder, exit 1,
    no traceback, and no finished or temporary file left."""
    import resource
    import signal

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    proc = subprocess.run([sys.executable, "data_prep/build_parquet.py", "synthetic", "--out-dir", str(tmp_path / "o"),
                           "--quiet", "--row-group-rows", "8"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)
    assert proc.returncode == 1 and f"error: cannot write under --out-dir {tmp_path / 'o'}" in proc.stderr, \
        proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not [p for p in (tmp_path / "o").rglob("*") if p.is_file()]


# ---------------------------------------------------------------- silent conversions become errors or counts


@pytest.mark.parametrize("change, field, words", [
    ({"answer": {"value": 3}}, "answer", "answer is a dict"),
    ({"answer": [3, 4]}, "answer", "answer is a list"),
    ({"answer": True}, "answer", "answer is a bool"),
    ({"answer": float("nan")}, "answer", "answer is nan"),
    ({"problem_type": "multiple choice", "options": {"A": "x", "B": "y"}}, "options", "options are a dict"),
    ({"problem_type": "multiple choice", "options": "'xyz'"}, "options", "options are a str"),
    ({"problem_type": "multiple choice", "options": [["x"], ["y"]]}, "options", "option 0 is a list"),
    ({"problem_type": ["math"]}, "problem_type", "problem type is a list"),
])
def test_odd_value_types_are_row_errors_not_repr_text(tmp_path, change, field, words):
    from fixtures import data_layouts as L

    L.save_png(tmp_path / "src", "imgs/ok.png", 1)
    row = {**_paper_row(1, ["imgs/ok.png"]), **change}
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    # json.dumps writes NaN as the bare token NaN, which JSON readers turn into a float
    (src / "train.jsonl").write_text(json.dumps(_paper_row(0, ["imgs/ok.png"])) + "\n" + json.dumps(row) + "\n")
    from data_prep.common import BadRow

    with pytest.raises(BadRow) as ei:
        _build(tmp_path / "out", "train", "--source", str(src))
    assert ei.value.row_id == "r1" and ei.value.field == field and words in str(ei.value), str(ei.value)


def test_duplicate_id_with_a_different_answer_is_a_row_error(tmp_path):
    from fixtures import data_layouts as L

    L.save_png(tmp_path / "src", "imgs/ok.png", 1)
    a, same, other = (_paper_row(0, ["imgs/ok.png"]) for _ in range(3))
    other["answer"] = "99"
    err = _bad_row(tmp_path, [a, same, other])
    assert err.field == "id" and err.row_id == "r0" and "already written (row 0 of train) with a different answer" in str(err)
    _jsonl(tmp_path / "src", [a, same])  # a repeat with the same answer is kept
    assert _build(tmp_path / "out", "train", "--source", str(tmp_path / "src"))[0]["written"] == 2
    # --skip-bad keeps the first and rejects the conflicting one
    _jsonl(tmp_path / "src", [a, other])
    s = _build(tmp_path / "out", "train", "--source", str(tmp_path / "src"), "--skip-bad")
    assert (s[0]["written"], s[0]["rejected"]) == (1, 1)


def test_asked_split_missing_from_a_folder_of_other_splits_is_an_error(tmp_path):
    """MathVision testmini asked, only test.jsonl there: an error, never test rows written as testmini."""
    from data_prep.sources import SourceError
    from fixtures import data_layouts as L

    L.write_mathvision(tmp_path / "src")
    with pytest.raises(SourceError, match=r"no file for split 'testmini' \(the files are named for test\)"):
        _build(tmp_path / "out", "mathvision", "--source", str(tmp_path / "src"), "--mathvision-split", "testmini")
    assert not (tmp_path / "out" / "mathvision" / "testmini.parquet").exists()


def test_text_only_benchmark_rows_are_counted(tmp_path):
    from fixtures import data_layouts as L

    rows = [L.mmmu_row("m1", "<image 1> Which?", "['a', 'b']", "A", "multiple-choice", {1: L.png(1)}),
            L.mmmu_row("m2", "What is 2+2?", "[]", "4", "open", {})]
    L.write_parquet(tmp_path / "src" / "Art" / "validation-00000-of-00001.parquet", rows, L.MMMU_SCHEMA)
    summary = _build(tmp_path / "out", "mmmu", "--source", str(tmp_path / "src"))
    assert summary[0]["written"] == 2 and summary[0]["counts"] == {"text-only row (no image)": 1}
    from data_prep.build_parquet import format_summary

    assert "1 row(s): text-only row (no image)" in format_summary(summary)


# ---------------------------------------------------------------- pre-flight: configs that would fail minutes in


@pytest.mark.parametrize("template, words", [
    ("MISSING", "no file"),
    ("{{ hint }}", "exactly once"),
    ("{{ question }}{{ question }} {{ hint }}", "exactly once"),
    ("{% if hint %}{{ question }}{% endif %}", "also when the hint is empty"),
    ("{{ cycler.__init__.__globals__.os }} {{ question }}", "sandbox"),
])
def test_preflight_rejects_a_bad_teacher_template(tmp_path, template, words):
    from test_teacher_trainer import _config

    from verl_ext.preflight import ConfigError, check_teacher

    path = tmp_path / "t.jinja"
    if template != "MISSING":
        path.write_text(template)
    with pytest.raises(ConfigError, match=f"algorithm.teacher.template: .*{words}"):
        check_teacher(_config("algorithm.adv_estimator=rlsd", f"algorithm.teacher.template={path}"))


def test_preflight_rejects_train_data_without_extra_info_under_context_question(tmp_path):
    import pandas as pd
    from test_teacher_trainer import _config

    from verl_ext.preflight import ConfigError, check_teacher

    bare = tmp_path / "bare.parquet"
    pd.DataFrame({"prompt": ["q"]}).to_parquet(bare)
    with pytest.raises(ConfigError, match="has no extra_info, which algorithm.teacher.context=question"):
        check_teacher(_config("algorithm.adv_estimator=rlsd", f"data.train_files={bare}"))


def _plain_config(model_dir, **data):
    from omegaconf import OmegaConf

    return OmegaConf.create({
        "algorithm": {"adv_estimator": "sdpo", "distill": {"loss": "jsd_topk", "topk": 100}},
        "trainer": {"v1": {"trainer_mode": "self_distill"}, "n_gpus_per_node": 2, "nnodes": 1},
        "actor_rollout_ref": {"actor": {"ppo_mini_batch_size": 4, "ppo_micro_batch_size_per_gpu": 2},
                              "model": {"path": str(model_dir)}, "ref": {}, "rollout": {"n": 2}},
        "data": data,
    })


def test_preflight_rejects_topk_above_the_vocabulary(tmp_path, tiny_model):
    from verl_ext.preflight import ConfigError, check_topk

    vocab = json.loads((tiny_model / "config.json").read_text())["text_config"]["vocab_size"]
    cfg = _plain_config(tiny_model)
    check_topk(cfg)
    cfg.algorithm.distill.topk = vocab + 1
    with pytest.raises(ConfigError, match=rf"topk={vocab + 1} is above the model's vocabulary size \({vocab}\)"):
        check_topk(cfg)
    cfg.algorithm.distill.topk = vocab
    check_topk(cfg)


def test_preflight_rejects_a_micro_batch_above_the_mini_batch(tmp_path):
    from verl_ext.preflight import ConfigError, check_batches

    cfg = _plain_config(tmp_path)
    # 4 prompts x 2 responses over 2 ranks = 4 per rank
    cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu = 4
    check_batches(cfg)
    cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu = 5
    with pytest.raises(ConfigError, match=r"ppo_micro_batch_size_per_gpu=5 is larger than the mini batch per rank .* = 4"):
        check_batches(cfg)


def test_preflight_rejects_a_max_prompt_length_below_every_prompt(tmp_path, tiny_model):
    """The two prompts' token counts come from the tokenizer's chat template computed here; the limit
    between them passes, one below the shorter fails."""
    import pandas as pd
    from transformers import AutoTokenizer

    from verl_ext.preflight import ConfigError, check_prompt_length

    prompts = [[{"role": "user", "content": "<image>What is two plus two?"}],
               [{"role": "user", "content": "<image>" + "Describe the picture in detail. " * 20}]]
    f = tmp_path / "train.parquet"
    pd.DataFrame({"prompt": prompts}).to_parquet(f)
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    short = len(tok.apply_chat_template([{"role": "user", "content": "What is two plus two?"}],
                                        add_generation_prompt=True, tokenize=True)["input_ids"])
    check_prompt_length(_plain_config(tiny_model, train_files=str(f), max_prompt_length=short))
    with pytest.raises(ConfigError, match=rf"max_prompt_length={short - 1} is below every prompt .* has {short} tokens"):
        check_prompt_length(_plain_config(tiny_model, train_files=str(f), max_prompt_length=short - 1))
