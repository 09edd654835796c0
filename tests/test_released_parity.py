"""Settings where the released code decides: each checked against values worked out by hand or
against the released behaviour written out in the test (the released code itself is not imported)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from data_prep.build_parquet import build, parse_args
from test_recipes import composed, run_script


@pytest.fixture(scope="module")
def recipe_data_dir(tmp_path_factory):
    import pandas as pd

    d = tmp_path_factory.mktemp("data")
    (d / "train").mkdir()
    row = {"prompt": [[{"role": "user", "content": "1 + 1?"}]], "extra_info": [{"question": "1 + 1?", "answer": "2"}]}
    for split in ("train", "val"):
        pd.DataFrame(row).to_parquet(d / "train" / f"{split}.parquet")
    return d


@pytest.fixture(scope="module")
def rlsd_cfg(recipe_data_dir):
    return composed(run_script("rlsd", recipe_data_dir))


# ------------------------------------------------------------------ 1. data order
def test_training_reads_the_file_in_order(tmp_path, rlsd_cfg):
    """The converter keeps the source's row order (70 rows: three chunks over two worker processes),
    and verl's sampler under the recipe's data config reads the parquet in that order."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.utils import create_rl_sampler
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from verl_ext.tiny_model import load_tokenizer

    src = tmp_path / "src"
    src.mkdir()
    ids = [f"r{(37 * k) % 70:02d}" for k in range(70)]  # not sorted, so a sort would show
    rows = [{"id": i, "problem": f"Question {i}?", "answer": "1", "images": [], "problem_type": "math"} for i in ids]
    (src / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build(parse_args(["train", "--source", str(src), "--out-dir", str(tmp_path / "out"), "--quiet", "--workers", "2"]))
    path = tmp_path / "out/train/train.parquet"
    assert [r["extra_info"]["id"] for r in pq.read_table(path).to_pylist()] == ids

    data = rlsd_cfg["data"]
    assert data["shuffle"] is False
    tok = load_tokenizer()
    config = OmegaConf.create({**data, "filter_overlong_prompts": False, "cache_dir": str(tmp_path / "cache")})
    ds = RLHFDataset(data_files=[str(path)], tokenizer=tok, config=config, processor=None)
    order = list(create_rl_sampler(OmegaConf.create(data), ds))
    assert order == list(range(70))
    assert [ds[i]["extra_info"]["id"] for i in order[:5]] == ids[:5]
    # the former behaviour stays one override away: a seeded shuffle
    shuffled = list(create_rl_sampler(OmegaConf.create({**data, "shuffle": True}), ds))
    assert sorted(shuffled) == list(range(70)) and shuffled != order


# ------------------------------------------------------------------ 7. lambda schedule
# by hand. Ours (the paper): lambda = 0.5 (1 - (s - 1) / 50) at verl's step s, 0 from step 51.
# Released: 0.5 max(1 - s / 60, 0) with s from 1.
PAPER_LAMBDA = {1: 0.5, 2: 0.49, 26: 0.25, 50: 0.01, 51: 0.0, 200: 0.0}
RELEASED_LAMBDA = {1: 0.5 * 59 / 60, 2: 0.5 * 58 / 60, 30: 0.25, 59: 0.5 / 60, 60: 0.0, 200: 0.0}


@pytest.mark.parametrize("form", ["paper", "released"])
def test_lambda_schedule_values(form, recipe_data_dir, rlsd_cfg):
    from test_estimators import call

    if form == "paper":
        alg, expected = rlsd_cfg["algorithm"], PAPER_LAMBDA
    else:  # the released values, reached by override on the recipe
        cfg = composed(run_script("rlsd", recipe_data_dir, "algorithm.rlsd.schedule_step=global",
                                  "algorithm.rlsd.decay_steps=60"))
        alg, expected = cfg["algorithm"], RELEASED_LAMBDA
    for step, lam in expected.items():
        _, metrics = call("rlsd", alg, global_step=step)
        assert metrics["rlsd/lambda"] == pytest.approx(lam, abs=1e-12), (form, step)


def test_lambda_schedule_step_is_checked(recipe_data_dir):
    out = run_script("rlsd", recipe_data_dir, "algorithm.rlsd.schedule_step=released")
    assert out.returncode == 2 and "algorithm.rlsd.schedule_step must be one of ('update', 'global')" in out.stderr


# ------------------------------------------------------------------ 6. validation and checkpoints
def test_validation_and_checkpoint_frequencies(rlsd_cfg, tmp_path):
    t = rlsd_cfg["trainer"]
    assert (t["test_freq"], t["val_before_train"], t["save_freq"], t["max_actor_ckpt_to_keep"]) == (5, True, 10, 5)
    # a teacher copy goes with its actor checkpoint: verl removed the actor of steps 10 and 20
    from verl_ext.trainer.self_distill import prune_teacher_copies

    for step in (10, 20, 30):
        (tmp_path / f"global_step_{step}" / "teacher").mkdir(parents=True)
        (tmp_path / f"global_step_{step}" / "teacher" / "w.pt").write_bytes(b"x")
    (tmp_path / "global_step_30" / "actor").mkdir()
    removed = prune_teacher_copies(str(tmp_path))
    assert removed == [str(tmp_path / f"global_step_{s}" / "teacher") for s in (10, 20)]
    assert (tmp_path / "global_step_30" / "teacher" / "w.pt").exists()
    assert not (tmp_path / "global_step_10" / "teacher").exists()


# ------------------------------------------------------------------ 4. the teacher's hint: the raw answer
def test_teacher_hint_is_the_answer_as_written(tmp_path):
    """The reward grades the cleaned ground truth; the teacher reads the answer as the data writes it
    (the released hint is ``str(answer)``): ``$\\frac{1}{2}$`` keeps its dollars, ``(b)`` stays ``(b)``,
    a number stays as JSON wrote it."""
    from fixtures import data_layouts as L

    from verl_ext.privileged import PrivilegedPromptBuilder, StudentSample, TeacherConfig
    from verl_ext.tiny_model import build_processor

    src = tmp_path / "src"
    L.save_png(src, "i/0.png", 1)
    rows = [
        {"id": "frac", "problem": "<image>Find x.", "answer": "$\\frac{1}{2}$", "images": ["i/0.png"], "problem_type": "math"},
        {"id": "mc", "problem": "<image>Pick one.", "options": ["red", "blue"], "answer": "(b)", "images": ["i/0.png"],
         "problem_type": "multiple choice"},
        {"id": "num", "problem": "2.5 + 1?", "answer": 3.5, "images": [], "problem_type": "numerical"},
    ]
    (src / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build(parse_args(["train", "--source", str(src), "--out-dir", str(tmp_path / "out"), "--quiet", "--no-pixel-clamp"]))
    out = pq.read_table(tmp_path / "out/train/train.parquet").to_pylist()
    assert [r["reward_model"]["ground_truth"] for r in out] == ["\\frac{1}{2}", "B", "3.5"]
    assert [r["extra_info"]["raw_answer"] for r in out] == ["$\\frac{1}{2}$", "(b)", "3.5"]

    proc = build_processor()
    samples = [StudentSample(messages=r["prompt"], prompt_ids=[1], response_ids=[2],
                             ground_truth=r["reward_model"]["ground_truth"], extra_info=r["extra_info"]) for r in out]
    for hint in ("answer", "reference"):  # reference: no trace in these rows, so the answer stands in
        cfg = TeacherConfig(hint=hint, reference_field="qwen3vl_235b_thinking_response")
        got = PrivilegedPromptBuilder(proc.tokenizer, proc, cfg).hints(samples).hints
        assert got == ["$\\frac{1}{2}$", "(b)", "3.5"], hint
    # a row converted before raw_answer existed: the ground truth, as before
    old = StudentSample(messages=[], prompt_ids=[1], response_ids=[2], ground_truth="B", extra_info={"answer": "B"})
    assert PrivilegedPromptBuilder(proc.tokenizer, proc, TeacherConfig(hint="answer")).hints([old]).hints == ["B"]
