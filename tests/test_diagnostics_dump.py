"""Token-credit dumps: real Qwen3 tokenizer, the real registered RLSD/OPSD estimators, files round-trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from verl.trainer.ppo import core_algos

from verl_ext.diagnostics import (
    DiagnosticsConfig,
    TokenCreditDumper,
    TrainerDiagnostics,
    build_records,
    read_records,
    select_rows,
    token_pieces,
    write_records,
)
from verl_ext.tiny_model import load_tokenizer

RESPONSES = [
    "<thought>3 + 4 = 7, so the area is 7.</thought>\n<answer>7</answer><|im_end|>",
    "<thought>I think it is 5.</thought>\n<answer>5</answer><|im_end|>",
    "<thought>The angle is 30°, 角度 is half of 60°.</thought>\n<answer>30</answer><|im_end|>",
    "<thought>Guess.</thought>\n<answer>45</answer><|im_end|>",
]
TRUTHS = ["7", "7", "30", "30"]
REWARDS = [1.0, 0.0, 1.0, 0.0]
UIDS = np.array(["g0", "g0", "g1", "g1"], dtype=object)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


class Sample:
    def __init__(self, response_ids, ground_truth):
        self.response_ids, self.ground_truth, self.extra_info = response_ids, ground_truth, {}


def make_batch(tokenizer, pad: int = 3):
    """Right-padded [B, T] batch of the RESPONSES, seeded log-probs, rewards on the last token."""
    ids = [tokenizer.encode(r) for r in RESPONSES]
    width = max(map(len, ids)) + pad
    b = len(ids)
    mask = torch.zeros(b, width)
    padded = torch.full((b, width), tokenizer.pad_token_id or 0, dtype=torch.long)
    for i, row in enumerate(ids):
        mask[i, : len(row)] = 1
        padded[i, : len(row)] = torch.tensor(row)
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(b, width, generator=g) * 3 * mask
    teacher = -torch.rand(b, width, generator=g) * 3 * mask
    rewards = torch.zeros(b, width)
    for i, row in enumerate(ids):
        rewards[i, len(row) - 1] = REWARDS[i]
    return ids, padded, mask, old, teacher, rewards


def test_token_pieces_cover_the_text_including_split_characters(tokenizer):
    # "龘" and "\u0BF5" are each split over byte-level tokens that decode to U+FFFD on their own.
    text = "x 龘 y \u0BF5\u0D79 z<|im_end|>"
    ids = tokenizer.encode(text)
    singles = tokenizer.batch_decode([[i] for i in ids])
    assert any("\ufffd" in s for s in singles)  # the case under test is really present
    pieces = token_pieces(tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_select_rows_alternates_signs_and_is_deterministic():
    adv = [0.5, -0.5, 0.0, 0.7, -0.7, 0.5, -0.5]
    rows = select_rows(adv, 4, step=3, seed=1)
    assert rows == select_rows(adv, 4, step=3, seed=1)
    assert [adv[r] > 0 for r in rows] == [True, False, True, False]
    assert len(set(rows)) == 4
    # every negative row invalid: the 3 positives, then the zero row, then an invalid row
    valid = [True, False, True, True, False, True, False]
    rows = select_rows(adv, 5, step=3, seed=1, valid=valid)
    assert set(rows[:3]) == {0, 3, 5} and rows[3] == 2 and rows[4] in {1, 4, 6}
    assert select_rows(adv, 0, step=1) == []


def test_rlsd_dump_round_trips_and_matches_the_formula(tokenizer, tmp_path):
    ids, padded, mask, old, teacher, rewards = make_batch(tokenizer)
    cfg = {"rlsd": {"lambda_init": 0.5, "clip_eps": 0.2}}
    metrics: dict = {}
    adv, _ = core_algos.get_adv_estimator_fn("rlsd")(
        token_level_rewards=rewards, response_mask=mask, index=UIDS, config=cfg,
        teacher_log_probs=teacher, old_log_probs=old, global_step=1, metrics=metrics,
    )  # fmt: skip
    diag = TrainerDiagnostics({**cfg, "diagnostics": {"dump_every": 2, "num_responses": 4, "dir": str(tmp_path)}}, tokenizer, "rlsd")
    out = diag.step(
        step=1, samples=[Sample(r, t) for r, t in zip(ids, TRUTHS)], response_mask=mask, old_log_probs=old,
        teacher_log_probs=teacher, advantages=adv, token_level_rewards=rewards, uids=UIDS, lam=metrics["rlsd/lambda"],
    )  # fmt: skip
    assert out["diag/dumped_responses"] == 4.0
    assert not diag.step(
        step=2, samples=[Sample(r, t) for r, t in zip(ids, TRUTHS)], response_mask=mask, old_log_probs=old,
        teacher_log_probs=teacher, advantages=adv, token_level_rewards=rewards, uids=UIDS,
    ).get("diag/dumped_responses")  # step 2 is not a dump step with dump_every=2
    path = tmp_path / "step_000001.jsonl"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000001.jsonl"]
    records = read_records(path)
    assert sorted(r.row for r in records) == [0, 1, 2, 3]
    a_hand = 0.5 / math.sqrt(0.5)  # GRPO on a {1, 0} group: (1 - 0.5) / std([1, 0]) (unbiased std = sqrt(0.5))
    for rec in records:
        i = rec.row
        n = len(ids[i])
        assert rec.tokens["id"] == ids[i]
        assert rec.text == RESPONSES[i] == "".join(rec.tokens["text"])
        assert rec.uid == UIDS[i] and rec.ground_truth == TRUTHS[i] and rec.reward == REWARDS[i]
        sign = 1 if REWARDS[i] == 1.0 else -1
        assert rec.advantage_sign == sign
        assert rec.seq_advantage == pytest.approx(sign * a_hand, rel=1e-5)
        assert rec.lam == 0.5 and rec.clip_eps == 0.2 and len(rec) == n
        s = old[i, :n].double().numpy()
        t = teacher[i, :n].double().numpy()
        w = np.exp(sign * (t - s))
        np.testing.assert_allclose(rec.tokens["student_logp"], s, rtol=1e-6)
        np.testing.assert_allclose(rec.tokens["delta"], t - s, atol=1e-6)
        np.testing.assert_allclose(rec.tokens["w"], w, rtol=1e-5)
        np.testing.assert_allclose(rec.tokens["w_clipped"], np.clip(w, 0.8, 1.2), rtol=1e-5)
        hand = sign * a_hand * (0.5 + 0.5 * np.clip(w, 0.8, 1.2))
        np.testing.assert_allclose(rec.tokens["advantage"], hand, rtol=1e-4)
    # round trip: writing what was read gives the same lines
    again = write_records(tmp_path / "again.jsonl", records)
    assert again.read_text() == path.read_text()


def test_opsd_dump_has_no_weights(tokenizer, tmp_path):
    ids, padded, mask, old, teacher, rewards = make_batch(tokenizer)
    adv, _ = core_algos.get_adv_estimator_fn("opsd")(
        token_level_rewards=rewards, response_mask=mask, index=UIDS, config={},
        teacher_log_probs=teacher, old_log_probs=old, global_step=1,
    )  # fmt: skip
    dumper = TokenCreditDumper(DiagnosticsConfig(dump_every=1, num_responses=2, dir=str(tmp_path)), tokenizer)
    seq = torch.tensor([0.7, -0.7, 0.7, -0.7])
    path = dumper.dump(
        5, estimator="opsd", response_ids=padded.tolist(), response_mask=mask, old_log_probs=old,
        teacher_log_probs=teacher, advantages=adv, seq_advantages=seq, rewards=rewards.sum(-1), uids=list(UIDS),
    )  # fmt: skip
    recs = read_records(path)
    assert len(recs) == 2 and {r.advantage_sign for r in recs} == {1, -1}
    for rec in recs:
        assert rec.tokens["w"] is None and rec.tokens["w_clipped"] is None and rec.clip_eps is None
        np.testing.assert_allclose(rec.tokens["advantage"], rec.tokens["delta"], atol=1e-6)  # OPSD: A_t = delta_t


def test_reader_names_file_line_and_field(tmp_path, tokenizer):
    ids, padded, mask, old, teacher, rewards = make_batch(tokenizer)
    recs = build_records(
        step=1, estimator="opsd", rows=[0], response_ids=ids, response_mask=mask, old_log_probs=old,
        teacher_log_probs=teacher, advantages=teacher - old, seq_advantages=torch.zeros(4), rewards=torch.zeros(4),
        uids=list(UIDS), tokenizer=tokenizer,
    )  # fmt: skip
    good = json.dumps(recs[0].to_json())
    d = json.loads(good)
    d["tokens"]["delta"] = d["tokens"]["delta"][:-1]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good + "\n" + json.dumps(d) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: field 'tokens\.delta': length"):
        read_records(bad)
    d = json.loads(good)
    del d["uid"]
    bad.write_text(json.dumps(d) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: missing field 'uid'"):
        read_records(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: not JSON"):
        read_records(bad)
    recs[0].tokens["teacher_logp"][0] = float("nan")
    with pytest.raises(ValueError, match="row 0 .*teacher_logp"):
        write_records(tmp_path / "nan.jsonl", recs)


def test_config_checks():
    assert DiagnosticsConfig.from_config(None).dump_every == 0
    assert not TokenCreditDumper(DiagnosticsConfig(), None).should_dump(1)
    d = TokenCreditDumper(DiagnosticsConfig.from_config({"dump_every": 3}), None)
    assert [s for s in range(1, 10) if d.should_dump(s)] == [1, 4, 7]
    with pytest.raises(ValueError, match="algorithm.diagnostics.dump_evry"):
        DiagnosticsConfig.from_config({"dump_evry": 1})
    with pytest.raises(ValueError, match="num_responses must be >= 0"):
        DiagnosticsConfig.from_config({"num_responses": -1})


def test_rows_without_teacher_signal_stay_out_of_the_metrics(tokenizer, tmp_path):
    ids, padded, mask, old, teacher, rewards = make_batch(tokenizer)
    valid = torch.tensor([True, True, False, False])
    teacher = (old + 0.5) * mask  # delta = +0.5 on every valid token of the valid rows
    teacher[2:] = 0.0  # placeholder log-probs of rows without a teacher signal (what the trainer passes)
    adv, _ = core_algos.get_adv_estimator_fn("sdpo")(
        token_level_rewards=rewards, response_mask=mask, index=UIDS, config={},
        teacher_log_probs=teacher, old_log_probs=old, global_step=1, teacher_valid=valid,
    )  # fmt: skip
    diag = TrainerDiagnostics({"diagnostics": {"dump_every": 1, "num_responses": 4, "dir": str(tmp_path)}}, tokenizer, "sdpo")
    m = diag.step(
        step=1, samples=[Sample(r, t) for r, t in zip(ids, TRUTHS)], response_mask=mask, old_log_probs=old,
        teacher_log_probs=teacher, advantages=adv, token_level_rewards=rewards, uids=UIDS, teacher_valid=valid,
    )  # fmt: skip
    n0, n1 = len(ids[0]), len(ids[1])
    # valid rows: row 0 (reward 1, A > 0) keeps the sign of +0.5, row 1 (reward 0, A < 0) is flipped
    assert m["diag/token_adv_sign_flip_frac"] == pytest.approx(n1 / (n0 + n1))
    assert m["diag/delta_abs_p99"] == pytest.approx(0.5, abs=1e-6)
    assert m["diag/answer_token_teacher_excess"] == pytest.approx(0.5, abs=1e-6)
    assert m["diag/answer_block_frac"] == pytest.approx(1.0)  # of the 2 valid rows
    recs = read_records(tmp_path / "step_000001.jsonl")
    assert [r.teacher_valid for r in recs] == [True, True, False, False]  # invalid rows dumped last
