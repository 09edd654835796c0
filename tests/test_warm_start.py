"""The warm start's training examples: the reference traces, the chance task's fair draws, the blurred task's
weighted targets, the weighted loss, the teacher-layout rows (whose prompt must be token for token the prompt the
trainer's teacher pass builds), and the true-answer probability the probe reports."""

from __future__ import annotations

import collections
import random
import re

import pyarrow.parquet as pq
import pytest
import torch

from verl_ext.warm_start import CHANCE_THOUGHT, PROBE_BAR, TEACHER_HINTS, WarmData, lr_at, passes


@pytest.fixture(scope="module")
def data(tiny_model_dir, synthetic_data_dir):
    from transformers import AutoProcessor

    rows = pq.read_table(str(synthetic_data_dir / "synthetic" / "train.parquet")).slice(0, 8).to_pylist()
    return WarmData(rows, AutoProcessor.from_pretrained(str(tiny_model_dir)), blur_task="colour", chance_task="more")


def _tasks(data):
    return {t: [i for i, r in enumerate(data.rows) if data.task(r) == t] for t in ("colour", "more")}


def test_taught_task_targets_are_the_reference_traces_without_soft_targets(data):
    rng = random.Random(0)
    assert data.blur_acc is None
    for i in _tasks(data)["colour"]:
        trace = data.rows[i]["extra_info"]["qwen3vl_235b_thinking_response"]
        assert data.student_targets(i, rng) == [(trace, 1.0)]
        assert trace.startswith("<thought>a ") and trace.endswith(f"<answer> {data.truth(data.rows[i])}</answer>")


def test_chance_task_answers_are_fair_draws_independent_of_the_image(data):
    """Each use of a chance-task row draws yes or no afresh: over 2,000 draws per row both answers appear, each
    within 5 binomial standard deviations of 1/2 (sd = sqrt(2000 / 4) = 22.4), and the thought never names a count."""
    rng = random.Random(1)
    assert data.answers["more"] == ["no", "yes"]
    for i in _tasks(data)["more"]:
        counts = collections.Counter(t for _ in range(2000) for t, w in data.student_targets(i, rng))
        assert set(counts) == {f"<thought>{CHANCE_THOUGHT}</thought><answer> {a}</answer>" for a in ("yes", "no")}
        assert all(abs(c - 1000) <= 5 * 22.4 for c in counts.values())
        # the teacher-layout target of the same row is its true answer
        assert data.true_trace(i) == f"<thought>{CHANCE_THOUGHT}</thought><answer> {data.truth(data.rows[i])}</answer>"


def test_blurred_task_targets_every_answer_with_the_set_weights(data):
    """With soft targets at q = 0.4, a colour row's student targets are the four colours' traces (thought and answer
    naming the same colour), the true one weighted 0.4 and each other 0.2; the chance task is unchanged."""
    data.blur_acc = 0.4
    try:
        assert data.answers["colour"] == ["blue", "green", "red", "yellow"]
        for i in _tasks(data)["colour"]:
            truth = data.truth(data.rows[i])
            shape = data.rows[i]["extra_info"]["qwen3vl_235b_thinking_response"].split("</thought>")[0].split()[-1]
            got = dict(data.student_targets(i, random.Random(0)))
            want = {f"<thought>a {c} {shape}</thought><answer> {c}</answer>": (0.4 if c == truth else 0.2)
                    for c in data.answers["colour"]}
            assert set(got) == set(want) and all(got[t] == pytest.approx(w, abs=1e-12) for t, w in want.items())
            assert got[data.reference(i)] == 0.4
        for i in _tasks(data)["more"]:
            assert len(data.student_targets(i, random.Random(0))) == 1
    finally:
        data.blur_acc = None


def _own_loss(model, ex: dict) -> tuple[float, int]:
    """Transformers' own mean loss over an example's target tokens (one plain forward with ``labels``), and their count."""
    ids = ex["input_ids"][None]
    labels = ids.clone()
    labels[:, :ex["n_prompt"]] = -100
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=ex["pixel_values"], image_grid_thw=ex["image_grid_thw"],
                    mm_token_type_ids=(ids == model.config.image_token_id).long(), labels=labels)
    return out.loss.item(), len(ex["input_ids"]) - ex["n_prompt"]


def test_weighted_sft_loss_is_the_weighted_token_mean(data, tiny_model_dir):
    """``sft_loss`` with weights against transformers' own loss: weights (1, 1) give the plain token mean of the
    two examples; weights (w, 1) give (w * L_a * n_a + L_b * n_b) / (w * n_a + n_b) from each example's own
    mean loss L and target count n (one plain forward each, ``labels``)."""
    from transformers import Qwen3VLForConditionalGeneration

    from verl_ext.warm_start import sft_loss

    model = Qwen3VLForConditionalGeneration.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    i = _tasks(data)["colour"][0]
    a = data.example(i, data.rows[i]["prompt"][0]["content"], data.reference(i))
    b = data.example(i, data.rows[i]["prompt"][0]["content"], data.with_answer(i, "blue" if data.truth(data.rows[i]) != "blue" else "red"))
    (la, na), (lb, nb) = _own_loss(model, a), _own_loss(model, b)
    with torch.no_grad():
        plain = sft_loss(model, [a, b], data.tok.pad_token_id).item()
        weighted = sft_loss(model, [{**a, "weight": 0.25}, b], data.tok.pad_token_id).item()
    # float32 sums of ~15 token losses: agreement to rounding (~1e-6 relative)
    assert plain == pytest.approx((la * na + lb * nb) / (na + nb), rel=1e-5)
    assert weighted == pytest.approx((0.25 * la * na + lb * nb) / (0.25 * na + nb), rel=1e-5)


def test_true_answer_probability_matches_a_plain_forward(data, tiny_model_dir):
    """``true_answer_prob`` against an independent computation: for each colour row and each colour, the summed
    log-probability of the trace naming that colour from one plain forward of the whole sequence with
    ``labels`` (transformers' own shifted loss times the number of target tokens), normalised over the colours."""
    from transformers import Qwen3VLForConditionalGeneration

    from verl_ext.warm_start import true_answer_prob

    model = Qwen3VLForConditionalGeneration.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    data.blur_acc = None
    rows = _tasks(data)["colour"]
    got = true_answer_prob(model, data, list(range(len(data.rows))), batch_size=3)
    probs, top = [], []
    for i in rows:
        lps = []
        for c in data.answers["colour"]:
            loss, n = _own_loss(model, data.example(i, data.rows[i]["prompt"][0]["content"], data.with_answer(i, c)))
            lps.append(-loss * n)
        p = torch.softmax(torch.tensor(lps, dtype=torch.float64), 0)
        t = data.answers["colour"].index(data.truth(data.rows[i]))
        probs.append(float(p[t]))
        top.append(int(p.argmax()) == t)
    # float32 log-probs of ~15 tokens each: the two sums differ by rounding only (~1e-6 relative)
    assert got["blur_true_prob"] == pytest.approx(sum(probs) / len(probs), abs=1e-4)
    assert got["blur_true_top"] == sum(top) / len(top)


@pytest.mark.parametrize("hint", ["answer", "reference"])
def test_teacher_layout_prompt_is_the_trainers_teacher_prompt(data, hint):
    """The warm start's teacher-layout prompt (processor on the rendered text) equals, token for token, the prompt
    the trainer's teacher pass builds for the same row (PrivilegedPromptBuilder.build on the student's inputs)."""
    from verl_ext.privileged import PrivilegedPromptBuilder, StudentSample, TeacherConfig

    builder = PrivilegedPromptBuilder(data.tok, data.processor, TeacherConfig.resolve({"hint": hint}, "rlsd"))
    for i, row in enumerate(data.rows):
        student = data.prompt(i, row["prompt"][0]["content"])
        mm = {"pixel_values": student["pixel_values"], "image_grid_thw": student["image_grid_thw"]}
        sample = StudentSample(messages=[{"role": "user", "content": row["prompt"][0]["content"]}],
                               prompt_ids=student["input_ids"].tolist(), response_ids=[1, 2], multi_modal_inputs=mm,
                               ground_truth=row["reward_model"]["ground_truth"], extra_info=row["extra_info"])
        built = builder.build([sample])[0][0]
        content = data.teacher_content(i, hint, random.Random(0))
        assert data.prompt(i, content)["input_ids"].tolist() == built.prompt_ids.tolist()
        text = data.tok.decode(built.prompt_ids.tolist())
        expected = data.truth(row) if hint == "answer" else row["extra_info"]["qwen3vl_235b_thinking_response"]
        assert f"Here is a reference solution:\n{expected}\n" in text


def test_sibling_layout_and_draw_mix(data):
    """Sibling rows use SDPO's template with the true trace as the correct solution; draw() mixes the layouts in
    the given proportion and always trains the teacher layout towards the true trace."""
    rng = random.Random(2)
    i = _tasks(data)["more"][0]
    content = data.teacher_content(i, "sibling", rng)
    assert content.startswith("Problem:\n")
    assert re.search(r"Correct solution:\s*" + re.escape(data.true_trace(i)) + r"\s*The following is feedback", content)
    student_len = len(data.prompt(i, data.rows[i]["prompt"][0]["content"])["input_ids"])
    kinds = collections.Counter()
    for _ in range(400):
        (ex,) = data.draw(i, rng, teacher_frac=0.5)  # a "more" row: one example per use
        teacher = ex["n_prompt"] != student_len
        kinds[teacher] += 1
        target = data.tok.decode(ex["input_ids"][ex["n_prompt"]:].tolist())
        if teacher:
            assert target == data.true_trace(i) + data.tok.eos_token
    assert abs(kinds[True] - 200) <= 5 * 10  # binomial sd sqrt(400 / 4) = 10
    assert TEACHER_HINTS == ("answer", "reference", "sibling")


def test_lr_schedule():
    assert [lr_at(s, 3e-3, 200, 100) for s in (1, 200)] == [3e-3, 3e-3]
    assert lr_at(300, 3e-3, 200, 100) == pytest.approx(1.5e-3) and lr_at(400, 3e-3, 200, 100) == pytest.approx(7.5e-4)
    assert lr_at(250, 3e-3, 200, 100) == pytest.approx(3e-3 / 2**0.5)


def test_probe_bar_reads_what_the_probe_measures(data, tiny_model_dir):
    """The bar's keys are keys of the probe (``measure``: the random tiny model on two rows); each bar fails just
    below its value; without gap-task rows the ranking bar is not asked for."""
    from transformers import Qwen3VLForConditionalGeneration

    from verl_ext.warm_start import measure, true_answer_prob

    model = Qwen3VLForConditionalGeneration.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    colour, more = _tasks(data)["colour"][0], _tasks(data)["more"][0]
    probe = measure(model, data, [colour, more])
    assert set(PROBE_BAR) <= set(probe)
    assert not passes(probe)  # a random model is in no format
    ok = dict(PROBE_BAR)
    assert passes(ok)
    for key in PROBE_BAR:
        assert not passes({**ok, key: PROBE_BAR[key] - 0.01})
    assert true_answer_prob(model, data, [more]) == {}
    assert passes({k: v for k, v in ok.items() if k != "blur_true_top"})


def test_tiny_model_seed_changes_the_weights_and_is_cached(tmp_path):
    from safetensors.torch import load_file

    from verl_ext.tiny_model import build_tiny_qwen3vl

    a, b = build_tiny_qwen3vl(tmp_path / "a", seed=0), build_tiny_qwen3vl(tmp_path / "b", seed=1)
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    key = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(wa[key], wb[key])
    before = (a / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_qwen3vl(tmp_path / "a", seed=0) == a and (a / "model.safetensors").stat().st_mtime_ns == before
    build_tiny_qwen3vl(tmp_path / "a", seed=1)  # another seed in the same place: rebuilt
    assert torch.equal(load_file(str(a / "model.safetensors"))[key], wb[key])
