"""Each upstream layout, written as a tiny local copy, converted offline and checked row by row."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from data_prep.build_parquet import build, parse_args
from data_prep.sources import SourceError
from fixtures import data_layouts as L

FORMAT = ("Format: You FIRST think about the reasoning process as an internal monologue enclosed within "
          "<thought> </thought> tags. The final answer MUST be enclosed within <answer> </answer> tags.")


def run(out, *argv):
    """build_parquet on a fixture; tiny fixture images stay as they are (byte-exact checks) unless
    the call names a pixel clamp (the default clamp has its own test)."""
    clamp = [] if any(a in argv for a in ("--min-pixels", "--max-pixels")) else ["--no-pixel-clamp"]
    return build(parse_args([*argv, *clamp, "--out-dir", str(out), "--quiet"]))


def read(path):
    return pq.read_table(path).to_pylist()


def check_rows(rows, expected, data_source, split):
    assert len(rows) == len(expected)
    for i, (row, exp) in enumerate(zip(rows, expected)):
        where = f"row {i} ({exp['id']})"
        assert row["data_source"] == data_source, where
        assert len(row["prompt"]) == 1 and row["prompt"][0]["role"] == "user", where
        content = row["prompt"][0]["content"]
        assert FORMAT in content, where
        assert f"Question:\n{exp['question']}" in content, where
        if exp["options"]:
            listed = "\n".join(f"{chr(65 + k)}. {o}" for k, o in enumerate(exp["options"]))
            assert content.endswith("Options:\n" + listed), where
        else:
            assert "Options:" not in content, where
        assert content.count("<image>") == len(exp["images"]), where
        assert [im["bytes"] for im in row["images"]] == exp["images"], where
        assert row["reward_model"] == {"style": "rule", "ground_truth": exp["gt"]}, where
        info = row["extra_info"]
        assert info["index"] == i and info["split"] == split and info["id"] == exp["id"], where
        assert info["problem_type"] == exp["ptype"] and info["options"] == exp["options"], where
        assert info["question"] == exp["question"] and info["answer"] == exp["gt"], where
        for k, v in exp["extra"].items():
            assert info[k] == v, f"{where}: extra_info[{k!r}]"


def test_mmmu_parquet_subjects(tmp_path):
    exp = L.write_mmmu(tmp_path / "src")
    summary = run(tmp_path / "out", "mmmu", "--source", str(tmp_path / "src"))
    assert [(s["split"], s["written"], s["rejected"]) for s in summary] == [("validation", 3, 0)]
    rows = read(tmp_path / "out/mmmu/validation.parquet")
    check_rows(rows, exp, "mmmu", "validation")
    assert rows[0]["ability"] == "multidisciplinary"
    # the whole student prompt of a multiple-choice row, written out by hand
    assert rows[0]["prompt"][0]["content"] == (
        "You are a helpful assistant capable of answering multiple-choice questions about images.\n\n"
        "[MULTIPLE CHOICE Tasks]\nGoal: Choose the single correct option.\n" + FORMAT + "\n"
        "Constraint: The content of <answer> </answer> MUST be exactly the letter of the chosen option (e.g. A).\n\n"
        "Question:\nWhich shape is in <image>?\n\nOptions:\nA. a circle\nB. a square\nC. <image>")


def test_mathvista_saved_dataset_dict(tmp_path):
    exp = L.write_mathvista(tmp_path / "src")
    run(tmp_path / "out", "mathvista", "--source", str(tmp_path / "src"))
    rows = read(tmp_path / "out/mathvista/testmini.parquet")
    check_rows(rows, exp, "mathvista", "testmini")
    assert "Constraint: The content of <answer> </answer> MUST be only the number" in rows[1]["prompt"][0]["content"]
    assert "[OPEN-ENDED Tasks]" in rows[3]["prompt"][0]["content"]


@pytest.mark.parametrize("split", ["test", "testmini"])
def test_mathvision_jsonl_with_image_files(tmp_path, split):
    exp = L.write_mathvision(tmp_path / "src")
    if split == "testmini":  # a file named for the split is picked over the others
        (tmp_path / "src" / "testmini.jsonl").write_text((tmp_path / "src" / "test.jsonl").read_text().splitlines()[1] + "\n")
        exp = exp[1:]
    run(tmp_path / "out", "mathvision", "--source", str(tmp_path / "src"), "--mathvision-split", split)
    rows = read(tmp_path / f"out/mathvision/{split}.parquet")
    check_rows(rows, exp, "mathvision", split)
    content = rows[-1]["prompt"][0]["content"]
    assert content.startswith("You are a helpful assistant capable of solving mathematical problems.\n\n"
                              "[MATHEMATICS Tasks]\nGoal: Solve the problem and state its final answer.\n" + FORMAT
                              + "\n\nQuestion:\n<image>\nFind the area of the shaded region.")


@pytest.mark.parametrize("variant,split", [("subquestions", "zerobench_subquestions"), ("main", "zerobench")])
def test_zerobench_variants(tmp_path, variant, split):
    exp = L.write_zerobench(tmp_path / "src")[variant]
    run(tmp_path / "out", "zerobench", "--source", str(tmp_path / "src"), "--zerobench-variant", variant)
    check_rows(read(tmp_path / f"out/zerobench/{split}.parquet"), exp, "zerobench", split)


def test_wemath_json_options_string(tmp_path):
    exp = L.write_wemath(tmp_path / "src")
    run(tmp_path / "out", "wemath", "--source", str(tmp_path / "src"))
    check_rows(read(tmp_path / "out/wemath/testmini.parquet"), exp, "wemath", "testmini")


def test_train_paper_layout_jsonl(tmp_path):
    exp = L.write_train_paper(tmp_path / "src")
    run(tmp_path / "out", "train", "--source", str(tmp_path / "src"))
    rows = read(tmp_path / "out/train/train.parquet")
    check_rows(rows, exp, "mmfinereason", "train")
    assert all(r["extra_info"]["qwen3vl_235b_thinking_response"] == L.TRACE for r in rows)


def test_train_upstream_layout_parquet_with_val_slice(tmp_path):
    exp = L.write_train_upstream(tmp_path / "src", n=10)
    summary = run(tmp_path / "out", "train", "--source", str(tmp_path / "src"), "--val-size", "3", "--seed", "7")
    assert {s["split"]: s["written"] for s in summary} == {"train": 7, "val": 3}
    train = read(tmp_path / "out/train/train.parquet")
    val = read(tmp_path / "out/train/val.parquet")
    ids = sorted(r["extra_info"]["id"] for r in train + val)
    assert ids == sorted(e["id"] for e in exp)  # every row exactly once
    by_id = {e["id"]: e for e in exp}
    check_rows(train, [by_id[r["extra_info"]["id"]] for r in train], "mmfinereason", "train")
    check_rows(val, [by_id[r["extra_info"]["id"]] for r in val], "mmfinereason", "val")
    again = run(tmp_path / "out2", "train", "--source", str(tmp_path / "src"), "--val-size", "3", "--seed", "7")
    assert [(s["split"], s["written"]) for s in again] == [(s["split"], s["written"]) for s in summary]
    assert [r["extra_info"]["id"] for r in read(tmp_path / "out2/train/val.parquet")] == [r["extra_info"]["id"] for r in val]
    other = run(tmp_path / "out3", "train", "--source", str(tmp_path / "src"), "--val-size", "3", "--seed", "8")
    assert other[1]["written"] == 3


def test_limit_and_shards(tmp_path):
    L.write_train_upstream(tmp_path / "src", n=10)
    run(tmp_path / "out", "train", "--source", str(tmp_path / "src"), "--limit", "7", "--shard-size", "3")
    names = sorted(p.name for p in (tmp_path / "out/train").iterdir())
    assert names == ["train-00000.parquet", "train-00001.parquet", "train-00002.parquet"]
    counts = [pq.ParquetFile(tmp_path / "out/train" / n).metadata.num_rows for n in names]
    assert counts == [3, 3, 1]
    # a later run that fits one file replaces the shards (no stale shard left behind)
    run(tmp_path / "out", "train", "--source", str(tmp_path / "src"), "--limit", "2", "--shard-size", "3")
    assert sorted(p.name for p in (tmp_path / "out/train").iterdir()) == ["train.parquet"]


def test_pixel_bounds_resize_with_smart_resize(tmp_path):
    """--resize-images: images resized at conversion (sides multiples of 32), entries carry no clamp."""
    L.write_train_upstream(tmp_path / "src", n=1)  # an 8x6 image
    run(tmp_path / "out", "train", "--source", str(tmp_path / "src"), "--min-pixels", str(64 * 64), "--resize-images")
    import io

    from PIL import Image

    path = tmp_path / "out/train/train.parquet"
    entry = read(path)[0]["images"][0]
    img = Image.open(io.BytesIO(entry["bytes"]))
    w, h = img.size
    assert w % 32 == 0 and h % 32 == 0 and w * h >= 64 * 64 and abs(w / h - 8 / 6) < 0.5
    assert (entry["min_pixels"], entry["max_pixels"]) == (None, None)
    meta = json.loads(pq.read_schema(path).metadata[b"rlsd_verl.images"])
    assert meta == {"min_pixels": 64 * 64, "max_pixels": None, "image_clamp": "at_conversion"}
    run(tmp_path / "out2", "synthetic", "--synthetic-train-size", "5", "--synthetic-test-size", "0",
        "--max-pixels", str(32 * 32), "--resize-images")
    for r in read(tmp_path / "out2/synthetic/train.parquet"):
        for im in r["images"]:
            assert Image.open(io.BytesIO(im["bytes"])).size == (32, 32)


def test_custom_prompt_template(tmp_path):
    L.write_wemath(tmp_path / "src")
    tpl = tmp_path / "t.jinja"
    tpl.write_text("[{{ problem_type }}] {{ question }}{% for o in options %} ({{ letters[loop.index0] }}) {{ o }}{% endfor %}")
    run(tmp_path / "out", "wemath", "--source", str(tmp_path / "src"), "--prompt-template", str(tpl))
    rows = read(tmp_path / "out/wemath/testmini.parquet")
    assert rows[1]["prompt"][0]["content"] == "[multiple choice] <image>\nWhich side is longest? (A) AB (B) BC"


def test_verl_reads_the_rows(tmp_path):
    """verl's own image helper accepts our image dicts (the geo3k format)."""
    from verl.utils.dataset.vision_utils import process_image

    L.write_mathvision(tmp_path / "src")
    run(tmp_path / "out", "mathvision", "--source", str(tmp_path / "src"))
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out/mathvision/test.parquet"), split="train")
    img = process_image(dict(ds[0]["images"][0]))
    assert img.size[0] > 0 and ds[0]["reward_model"]["ground_truth"] == "D"


def test_hub_source_fails_clearly_offline(tmp_path, monkeypatch, capsys):
    """No hub here: offline mode (read by datasets at import, so set on its config) makes the
    hub path fail at once instead of after network retries."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    from data_prep.build_parquet import main

    assert main(["wemath", "--out-dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'We-Math/We-Math'" in err and "local path" in err
    assert not list(tmp_path.rglob("*.parquet"))


def test_hub_code_path_streams_without_decoding(tmp_path):
    """The hub reader (``datasets.load_dataset(..., streaming=True)``) run on a local parquet repo,
    the closest to a hub this machine has: same streaming and image handling, no network."""
    from data_prep.sources import open_hub

    exp = L.write_train_upstream(tmp_path / "repo", n=3)
    stream = open_hub(str(tmp_path / "repo"), "train")
    rows = [r for _, r in stream.rows()]
    assert [r["id"] for r in rows] == [e["id"] for e in exp]
    assert rows[0]["image"]["bytes"] == exp[0]["images"][0]  # undecoded bytes, not a PIL image


def test_problem_types_agree_with_the_reward():
    """data_prep keeps its own copy (so it never imports verl); both must name the same types."""
    from data_prep import common
    from verl_ext.reward import PROBLEM_TYPES, normalize_problem_type

    assert common.PROBLEM_TYPES == PROBLEM_TYPES
    for spelling, canonical in common._TYPE_SPELLINGS.items():
        assert normalize_problem_type(spelling) == canonical


# ---------------------------------------------------------------- the release's own layout
def test_release_folder_gives_train_and_val_from_their_own_files(tmp_path):
    exp_train, exp_val = L.write_train_release(tmp_path / "src")
    summary = run(tmp_path / "out", "train", "--source", str(tmp_path / "src"))
    assert {s["split"]: s["written"] for s in summary} == {"train": 6, "val": 2}
    train = read(tmp_path / "out/train/train.parquet")
    val = read(tmp_path / "out/train/val.parquet")
    check_rows(train, exp_train, "mmfinereason", "train")
    check_rows(val, exp_val, "mmfinereason", "val")  # images read from val_data_image.zip
    # the embedded options are printed once, by the question itself
    mc = train[1]["prompt"][0]["content"]
    assert mc.count("A. red") == 1 and mc.count("C. green") == 1
    assert train[0]["extra_info"]["qwen3vl_235b_thinking_response"] == L.TRACE
    # the folder has its own validation file: holding out training rows too would be a surprise
    with pytest.raises(SourceError, match="has its own validation file"):
        run(tmp_path / "out", "train", "--source", str(tmp_path / "src"), "--val-size", "2")


def test_train_and_val_jsonl_layout(tmp_path):
    """The released scripts' data/train.jsonl + data/val.jsonl."""
    exp_train, exp_val = L.write_train_release(tmp_path / "src")
    src = tmp_path / "src"
    for name, out in ((L.RELEASE_TRAIN_FILE, "train.jsonl"), (L.RELEASE_VAL_FILE, "val.jsonl")):
        rows = json.loads((src / name).read_text())
        (src / name).unlink()
        (src / out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = run(tmp_path / "out", "train", "--source", str(src))
    assert {s["split"]: s["written"] for s in summary} == {"train": 6, "val": 2}
    check_rows(read(tmp_path / "out/train/val.parquet"), exp_val, "mmfinereason", "val")


def test_val_size_on_a_json_list_counts_by_streaming(tmp_path):
    exp_train, _ = L.write_train_release(tmp_path / "src")
    src = tmp_path / "src"
    (src / L.RELEASE_VAL_FILE).unlink()
    summary = run(tmp_path / "out", "train", "--source", str(src), "--val-size", "2", "--seed", "3")
    assert {s["split"]: s["written"] for s in summary} == {"train": 4, "val": 2}
    ids = [r["extra_info"]["id"] for r in read(tmp_path / "out/train/train.parquet")]
    ids += [r["extra_info"]["id"] for r in read(tmp_path / "out/train/val.parquet")]
    assert sorted(ids) == sorted(e["id"] for e in exp_train)  # every row exactly once
    # the same on the file itself
    summary = run(tmp_path / "out2", "train", "--source", str(src / L.RELEASE_TRAIN_FILE), "--val-size", "2",
                  "--seed", "3")
    assert {s["split"]: s["written"] for s in summary} == {"train": 4, "val": 2}


def test_folder_with_undistinguishable_files_is_an_error_listing_them(tmp_path):
    L.write_train_release(tmp_path / "src")
    src = tmp_path / "src"
    (src / "extra_rows.json").write_text((src / L.RELEASE_TRAIN_FILE).read_text())
    with pytest.raises(SourceError) as ei:
        run(tmp_path / "out", "train", "--source", str(src))
    assert L.RELEASE_TRAIN_FILE in str(ei.value) and "extra_rows.json" in str(ei.value)
    (src / "extra_rows.json").unlink()
    (src / "dev_rows.json").write_text("[]")
    with pytest.raises(SourceError, match="several validation files"):
        run(tmp_path / "out", "train", "--source", str(src))


def test_options_are_printed_once(tmp_path):
    src = tmp_path / "src"
    L.save_png(src, "i/0.png", 1)
    rows = [
        {"id": "prefixed", "problem": "<image>Pick one.", "options": ["A. red", "B. blue"], "answer": "B",
         "images": ["i/0.png"], "problem_type": "multiple choice"},
        {"id": "both", "problem": "<image>Pick one.\n(A) red\n(B) blue", "options": ["red", "blue"], "answer": "blue",
         "images": ["i/0.png"], "problem_type": "multiple choice"},
    ]
    (src / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(tmp_path / "out", "train", "--source", str(src))
    out = read(tmp_path / "out/train/train.parquet")
    c0, c1 = (r["prompt"][0]["content"] for r in out)
    assert "A. red\nB. blue" in c0 and "A. A." not in c0 and out[0]["extra_info"]["options"] == ["red", "blue"]
    assert c1.count("red") == 1 and out[1]["extra_info"]["options"] == [] and out[1]["reward_model"]["ground_truth"] == "B"


def test_released_template_variables(tmp_path):
    """A template written as the released unified.jinja reads its variables: problem / content for
    the question, problem_type in the released spelling, options."""
    exp_train, _ = L.write_train_release(tmp_path / "src")
    tpl = tmp_path / "released_like.jinja"
    tpl.write_text(
        "{%- if problem is defined -%}{%- set question = problem -%}{%- else -%}{{ 1 / 0 }}{%- endif -%}"
        "{%- set ptype = problem_type | lower | trim -%}"
        "{%- set opts = options if options is defined and options | length > 0 else [] -%}"
        "[{{ ptype }}|{{ content == problem }}] {{ question | trim }}{% for o in opts %} / {{ o }}{% endfor %}")
    run(tmp_path / "out", "train", "--source", str(tmp_path / "src"), "--prompt-template", str(tpl))
    rows = read(tmp_path / "out/train/train.parquet")
    assert rows[0]["prompt"][0]["content"] == "[math|True] <image>Find the angle x."
    assert rows[3]["prompt"][0]["content"] == "[ocr|True] <image>What is written on the sign?"
    assert rows[4]["prompt"][0]["content"].startswith("[open-ended|True] <image><image>Describe")


def _tokens_on_load(parquet, tmp_path):
    """Visual tokens per image as verl's loader gives them: ``RLHFDataset`` builds the messages from
    the row, qwen-vl-utils loads and resizes each image, a Qwen3-VL processor (Qwen3-VL-8B's image
    settings: patch 16, merge 2, 65,536..16,777,216 pixels) makes the grid."""
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from verl_ext.tiny_model import build_processor

    processor = build_processor(min_pixels=65536, max_pixels=16777216)
    config = OmegaConf.create({"filter_overlong_prompts": False, "max_prompt_length": 100_000,
                               "cache_dir": str(tmp_path / "cache")})
    ds = RLHFDataset(data_files=[str(parquet)], tokenizer=processor.tokenizer, config=config, processor=processor)
    out = {}
    for i in range(len(ds)):
        item = ds[i]
        messages = item["raw_prompt"]
        images, _, _ = RLHFDataset._process_multi_modal_info(messages, ds.image_patch_size, config)
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        grid = processor(text=[text], images=images, return_tensors="pt")["image_grid_thw"]
        out[item["extra_info"]["id"]] = [int(g.prod()) // 4 for g in grid]
    return out


def test_paper_pixel_clamp_is_the_default(tmp_path):
    """Images are stored as they are, each entry carrying the released code's 262144..1048576 pixel
    clamp; verl's loader then resizes them into it, so Qwen3-VL gives each 256..1024 visual tokens
    (32x32 pixels each). The conversion's prompt-length estimate counts the same tokens from the
    image header, and --resize-images (the clamp at conversion) gives the same counts."""
    import io

    from PIL import Image

    from data_prep.common import image_tokens

    src = tmp_path / "src"
    sizes = {"big": (2400, 1800), "small": (120, 90), "mid": (640, 480)}
    # by hand (smart_resize): big: beta = sqrt(4320000 / 1048576) = 2.0297, floor(1800 / beta / 32) = 27,
    # floor(2400 / beta / 32) = 36; small: beta = sqrt(262144 / 10800) = 4.9267, ceil(90 beta / 32) = 14,
    # ceil(120 beta / 32) = 19; mid: 480 / 32 = 15, 640 / 32 = 20, inside the range
    tokens = {"big": 27 * 36, "small": 14 * 19, "mid": 15 * 20}
    for name, size in sizes.items():
        (src / "i").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (10, 200, 30)).save(src / "i" / f"{name}.png")
    rows = [{"id": n, "problem": "<image>Q", "answer": "1", "images": [f"i/{n}.png"], "problem_type": "math"}
            for n in sizes]
    (src / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = build(parse_args(["train", "--source", str(src), "--out-dir", str(tmp_path / "out"), "--quiet"]))
    rec = summary[0]
    assert (rec["min_pixels"], rec["max_pixels"], rec["image_clamp"]) == (262144, 1048576, "on_load")
    path = tmp_path / "out/train/train.parquet"
    meta = json.loads(pq.read_schema(path).metadata[b"rlsd_verl.images"])
    assert meta == {"min_pixels": 262144, "max_pixels": 1048576, "image_clamp": "on_load"}
    for row in read(path):
        name = row["extra_info"]["id"]
        entry = row["images"][0]
        assert entry["bytes"] == (src / "i" / f"{name}.png").read_bytes()  # the source file, unchanged
        assert (entry["min_pixels"], entry["max_pixels"]) == (262144, 1048576)
        assert image_tokens(*sizes[name], 262144, 1048576) == tokens[name] + 2  # + vision start/end
    assert _tokens_on_load(path, tmp_path) == {n: [t] for n, t in tokens.items()}
    assert all(256 <= t <= 1024 for t in tokens.values())
    # the warm start loads them the same way (sides: the token grid above, times 32)
    from verl_ext.tiny_model import build_processor, row_images

    processor = build_processor()
    loaded = {r["extra_info"]["id"]: [im.size for im in row_images(r, processor)] for r in read(path)}
    assert loaded == {"big": [(36 * 32, 27 * 32)], "small": [(19 * 32, 14 * 32)], "mid": [(640, 480)]}

    build(parse_args(["train", "--source", str(src), "--out-dir", str(tmp_path / "resized"), "--quiet",
                      "--resize-images"]))
    resized = tmp_path / "resized/train/train.parquet"
    for row in read(resized):
        w, h = Image.open(io.BytesIO(row["images"][0]["bytes"])).size
        assert 262144 <= w * h <= 1048576 and w % 32 == 0 and h % 32 == 0, (row["extra_info"]["id"], w, h)
    assert Image.open(io.BytesIO(read(resized)[2]["images"][0]["bytes"])).size == (640, 480)  # kept as it is
    assert _tokens_on_load(resized, tmp_path) == {n: [t] for n, t in tokens.items()}

    build(parse_args(["train", "--source", str(src), "--out-dir", str(tmp_path / "raw"), "--quiet",
                      "--no-pixel-clamp"]))
    raw = read(tmp_path / "raw/train/train.parquet")
    assert [Image.open(io.BytesIO(r["images"][0]["bytes"])).size for r in raw] == list(sizes.values())
    assert all((r["images"][0]["min_pixels"], r["images"][0]["max_pixels"]) == (None, None) for r in raw)
    # --max-prompt-tokens counts the clamped image: same text, so the estimates differ by the image
    # tokens alone (unclamped, by hand: big 56 x 75, small 3 x 4, mid 15 x 20)
    from data_prep.common import PromptBudget

    budget = PromptBudget(4096)
    diff = {r["extra_info"]["id"]: budget.tokens(r) - budget.tokens(q) for r, q in zip(read(path), raw)}
    assert diff == {"big": 27 * 36 - 56 * 75, "small": 14 * 19 - 3 * 4, "mid": 0}


def test_row_count_mismatch_is_warned(tmp_path, capsys):
    from data_prep.build_parquet import main

    L.write_mmmu(tmp_path / "src")
    assert main(["mmmu", "--source", str(tmp_path / "src"), "--out-dir", str(tmp_path / "out"), "--quiet",
                 "--no-pixel-clamp"]) == 0
    out, err = capsys.readouterr()
    assert "WARNING: read 3 rows, the published validation split has 900" in out
    assert "mmmu/validation: 3 rows read, 900 expected" in err
    summary = run(tmp_path / "out", "mmmu", "--source", str(tmp_path / "src"), "--limit", "2")
    assert summary[0]["expected_rows"] == 900 and not summary[0]["count_mismatch"]  # --limit: a partial run


def test_image_token_counts():
    """Qwen3-VL: one token per 32x32 pixels after qwen-vl-utils' resize, plus vision start/end;
    without a clamp its defaults (4..16384 tokens) apply; an aspect ratio over 200 is refused."""
    from data_prep.common import BadRow, image_tokens

    assert image_tokens(512, 512) == 16 * 16 + 2
    assert image_tokens(1024, 1024) == 32 * 32 + 2
    assert image_tokens(100, 60) == 3 * 2 + 2  # sides rounded to the nearest multiple of 32
    assert image_tokens(100, 60, 262144, 1048576) == 21 * 13 + 2  # beta = sqrt(262144 / 6000) = 6.61
    assert image_tokens(20, 20) == 2 * 2 + 2  # raised to qwen-vl-utils' minimum of 4 tokens
    with pytest.raises(BadRow, match="aspect ratio"):
        image_tokens(201 * 5, 5)
    # the cheap bound (no qwen-vl-utils import) used to skip exact counting is never below it
    for clamp in [(None, None), (262144, 1048576), (4096, 16384), (1024, 1024 * 1024)]:
        for w, h in [(1, 1), (15, 15), (33, 33), (47, 3000), (64, 64), (100, 60), (2048, 1536), (4000, 3999),
                     (1023, 1025), (1010, 1030), (511, 513), (5000, 40), (120, 90), (6000, 100)]:
            assert image_tokens(w, h, *clamp, exact=False) >= image_tokens(w, h, *clamp), (w, h, clamp)
    assert image_tokens(4000, 3000, 262144, 1048576, exact=False) == 1024 + 2  # at most max_pixels
    assert image_tokens(64, 64, exact=False) == image_tokens(64, 64) == 2 * 2 + 2
