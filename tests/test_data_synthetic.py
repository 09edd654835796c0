"""The generated set: answers re-derived from the rendered pixels (colours, connected components,
fill ratio of the shape), independent of the generator's own bookkeeping; traces; determinism in the seed."""

from __future__ import annotations

import io
import re
from collections import deque

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_prep.build_parquet import build, parse_args
from data_prep.converters.synthetic import COLOURS, TEST_SIZE, TRAIN_SIZE
from verl_ext.reward import compute_score


def components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, each as a boolean mask."""
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        comp = np.zeros_like(mask, dtype=bool)
        q = deque([(y0, x0)])
        seen[y0, x0] = True
        while q:
            y, x = q.popleft()
            comp[y, x] = True
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    q.append((ny, nx))
        out.append(comp)
    return out


def shape_of(comp: np.ndarray) -> str:
    """Square fills its bounding box, a disc about pi/4 of it, a triangle about half."""
    ys, xs = np.nonzero(comp)
    fill = comp.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    return "square" if fill > 0.95 else "circle" if fill > 0.68 else "triangle"


def pixels(im) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(im["bytes"])).convert("RGB"))


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    summary = build(parse_args(["synthetic", "--out-dir", str(out), "--quiet"]))
    assert [(s["split"], s["written"]) for s in summary] == [("train", TRAIN_SIZE), ("test", TEST_SIZE)] == [("train", 4000), ("test", 90)]
    return {s: pq.read_table(out / f"synthetic/{s}.parquet").to_pylist() for s in ("train", "test")}


def test_answers_follow_from_the_pixels(rows):
    checked = {"colour": 0, "more": 0}
    for row in rows["train"] + rows["test"]:
        info = row["extra_info"]
        q, gt = info["question"], row["reward_model"]["ground_truth"]
        for im in row["images"]:
            assert Image.open(io.BytesIO(im["bytes"])).size == (64, 64)
        if q.endswith("What colour is the shape?"):
            arr = pixels(row["images"][0])
            found = [(name, comps) for name, rgb in COLOURS.items() if (comps := components(np.all(arr == rgb, axis=-1)))]
            assert len(found) == 1 and len(found[0][1]) == 1, info["id"]  # one shape of one colour
            colour, (comp,) = found[0]
            assert gt == colour, (info["id"], gt)
            # the reference trace names what is drawn
            assert info["qwen3vl_235b_thinking_response"].startswith(f"<thought>a {colour} {shape_of(comp)}</thought>"), info["id"]
            checked[info["task"]] += 1
        else:
            assert q.endswith("Does the first image have more dots than the second?")
            counts = [len(components(np.all(pixels(im) == 0, axis=-1))) for im in row["images"]]
            assert gt == ("yes" if counts[0] > counts[1] else "no") and abs(counts[0] - counts[1]) >= 3, (info["id"], counts)
            assert gt not in q.lower().split()  # the answer words are not in the question
            checked[info["task"]] += 1
    assert checked == {"colour": 2045, "more": 2045}, checked  # (4000 + 90) / 2: the tasks alternate


def test_task_mix_and_reference_traces(rows):
    train = rows["train"]
    assert {r["extra_info"]["problem_type"] for r in train} == {"open"}
    assert all(len(r["images"]) == (2 if r["extra_info"]["task"] == "more" else 1) for r in train)
    ids = [r["extra_info"]["id"] for r in train + rows["test"]]
    assert len(set(ids)) == len(ids)
    answers = {t: {r["reward_model"]["ground_truth"] for r in train if r["extra_info"]["task"] == t} for t in ("colour", "more")}
    assert answers == {"colour": set(COLOURS), "more": {"yes", "no"}}
    for r in train:
        trace = r["extra_info"]["qwen3vl_235b_thinking_response"]
        # the reference trace is a full-marks response under the reward function, and short
        out = compute_score("synthetic", trace, r["reward_model"]["ground_truth"], r["extra_info"])
        assert out["score"] == 1.0 and out["format"] == 1.0, trace
        assert len(trace) <= 64, trace


def test_train_and_test_differ_and_seed_changes_rows(tmp_path, rows):
    # a whole row (question and every image): a single 1-dot image has only 16 forms, so 4,000 train rows hold most
    key = lambda r: (r["extra_info"]["question"], *(im["bytes"] for im in r["images"]))  # noqa: E731
    train_q = {key(r) for r in rows["train"]}
    overlap = sum(key(r) in train_q for r in rows["test"])
    assert overlap < len(rows["test"]) // 4
    build(parse_args(["synthetic", "--out-dir", str(tmp_path), "--quiet", "--seed", "3",
                      "--synthetic-train-size", "20", "--synthetic-test-size", "0"]))
    other = pq.read_table(tmp_path / "synthetic/train.parquet").to_pylist()
    assert [r["images"] for r in other] != [r["images"] for r in rows["train"][:20]]
    assert pq.ParquetFile(tmp_path / "synthetic/test.parquet").metadata.num_rows == 0
