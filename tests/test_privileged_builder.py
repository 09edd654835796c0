"""Privileged-prompt builder on a tiny random Qwen3-VL with the real Qwen3 tokenizer and processor.

References are built independently: the teacher text is written out by hand in the chat format,
tokenised and pixel-processed by the processor from the raw images, and scored by a plain
single-row transformers forward whose M-RoPE ids the model computes itself.
"""

from __future__ import annotations

import re
import types

import pytest
import torch
from PIL import Image

from verl_ext.privileged import PrivilegedPromptBuilder, StudentSample, TeacherConfig, load_template, pick_siblings
from verl_ext.privileged.forward import response_log_probs

VISION = "<|vision_start|>{pads}<|vision_end|>"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from transformers import AutoModelForImageTextToText
    from verl.utils import hf_processor, hf_tokenizer

    from verl_ext.tiny_model import build_tiny_qwen3vl

    path = str(build_tiny_qwen3vl(tmp_path_factory.getbasetemp() / "tiny_qwen3vl"))
    tok, proc = hf_tokenizer(path), hf_processor(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    return types.SimpleNamespace(tok=tok, proc=proc, model=model)


def _image(w, h, color):
    return Image.new("RGB", (w, h), color)


# The released teacher templates, word for word (teacher_hint_self_distill.jinja and sdpo_teacher.jinja
# of the paper's code, examples/visual_rl/format_prompt/): written here so that the test shows the
# builder loads them unchanged and that our built-in templates render the same text.
RELEASED_TEACHER = """{#- Self-distill teacher template: present the GT answer as a reference solution, not as a hint. -#}
{{ question | trim }}

Here is a reference solution:
{{ hint | trim }}

After understanding the reference solution, please try to solve this problem using your own approach below. \
You FIRST think about the reasoning process as an internal monologue enclosed within <thought> </thought> tags. \
The final answer MUST be enclosed within <answer> </answer> tags.
"""
RELEASED_SDPO = """Problem:
{{ question | trim }}

Correct solution:
{% if correct_solution %}
{{ correct_solution | trim }}
{% endif %}

The following is feedback from your unsuccessful earlier attempt:
{% if incorrect_solution %}
{{ incorrect_solution | trim }}
{% endif %}

Correctly solve the original question.
"""
FORMAT = ("You FIRST think about the reasoning process as an internal monologue enclosed within <thought> </thought> "
          "tags. The final answer MUST be enclosed within <answer> </answer> tags.")
TASK = "[TASKS]\nGoal: answer.\nFormat: " + FORMAT + "\n\nQuestion:\n"


def _student(parts, question, images, response_text, ground_truth="42", uid="g0", score=1.0, options=(), extra=None):
    """A student row the way verl builds it from our parquet: the student template's text around the
    data's question, ``<image>`` placeholders turned into image items; processor -> prompt ids + pixels."""
    body = TASK + question + ("\n\nOptions:\n" + "\n".join(f"{'ABCD'[k]}. {o}" for k, o in enumerate(options))
                              if options else "")
    pieces = body.split("<image>")
    content = [{"type": "text", "text": pieces[0]}]
    for img, piece in zip(images, pieces[1:]):
        content += [{"type": "image", "image": img}] + ([{"type": "text", "text": piece}] if piece else [])
    messages = [{"role": "user", "content": content}]
    text = parts.proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = parts.proc(text=[text], images=images or None, return_tensors="pt")
    mm = {k: enc[k] for k in ("pixel_values", "image_grid_thw") if k in enc}
    response = parts.tok.encode(response_text, add_special_tokens=False) + [parts.tok.eos_token_id]
    info = {"question": question, "options": list(options), "id": uid, "answer": ground_truth, **(extra or {})}
    return StudentSample(
        messages=messages,
        prompt_ids=enc["input_ids"][0].tolist(),
        response_ids=response,
        multi_modal_inputs=mm,
        ground_truth=ground_truth,
        extra_info=info,
        uid=uid,
        score=score,
    )


@pytest.fixture(scope="module")
def rows(parts):
    red, blue = _image(64, 64, (220, 20, 20)), _image(96, 64, (20, 20, 220))
    return [
        _student(parts, "<image>What colour is the square?", [red],
                 "<thought>It looks red.</thought><answer>red</answer>", ground_truth="red"),
        _student(parts, "Compute 6 * 7. Give only the number.", [],
                 "<thought>6 times 7 is 42, a short product.</thought> <answer>42</answer>", ground_truth="42"),
        _student(parts, "Which is wider?<image>", [blue], "<answer>A</answer>", ground_truth="A",
                 options=["yes", "no"]),
    ]


VISION = VISION.format(pads="<|image_pad|>")
# What the teacher sees of each row's question (context=question): the data's question, lettered options.
QUESTION = {
    0: f"{VISION}What colour is the square?",
    1: "Compute 6 * 7. Give only the number.",
    2: f"Which is wider?{VISION}\n\nOptions:\nA. yes\nB. no",
}


def _chat(user):
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def _hand_prompt(parts, row_index, hint):
    """The released teacher prompt written out by hand (teacher_hint_self_distill.jinja's wording)."""
    return _chat(f"{QUESTION[row_index]}\n\nHere is a reference solution:\n{hint}\n\nAfter understanding the "
                 f"reference solution, please try to solve this problem using your own approach below. {FORMAT}"), None


def _hand_log_probs(parts, prompt_text, images, response_ids):
    """Single-row forward: the processor tokenises and pixel-processes, the model computes M-RoPE."""
    enc = parts.proc(text=[prompt_text], images=images or None, return_tensors="pt")
    resp = torch.tensor([response_ids])
    ids = torch.cat([enc["input_ids"], resp], dim=1)
    kwargs = {k: enc[k] for k in ("pixel_values", "image_grid_thw") if k in enc}
    kwargs["mm_token_type_ids"] = torch.cat([enc["mm_token_type_ids"], torch.zeros_like(resp)], dim=1)
    with torch.no_grad():
        logits = parts.model(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs).logits.float()
    logp = torch.log_softmax(logits[0], -1)
    n, r = ids.shape[1], resp.shape[1]
    return logp[n - r - 1 : n - 1].gather(-1, resp[0].unsqueeze(-1)).squeeze(-1), ids[0]


def _images_of(row):
    return [it["image"] for it in row.messages[0]["content"] if isinstance(it, dict) and it.get("type") == "image"] \
        if not isinstance(row.messages[0]["content"], str) else []


def _text(parts, t):
    """The teacher prompt's text, each image's pad tokens (4 or 6 here) shown as one."""
    return re.sub(r"(<\|image_pad\|>)+", "<|image_pad|>", parts.tok.decode(t.prompt_ids))


def test_teacher_log_probs_equal_hand_assembled_forward(parts, rows):
    builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer"))
    teacher, hints, metrics = builder.build(rows)
    assert hints.hints == ["red", "42", "A"] and hints.valid.all()
    assert metrics["teacher/hint_truncated"] == 0 and metrics["teacher/context_fallback"] == 0
    lengths = [len(r.response_ids) for r in rows]
    assert len(set(lengths)) == 3 and len({t.input_ids.numel() for t in teacher}) == 3  # mixed lengths, padding
    got = response_log_probs(parts.model, [t.input_ids for t in teacher], [t.position_ids for t in teacher],
                             [t.multi_modal_inputs for t in teacher], lengths, pad_token_id=parts.tok.pad_token_id)
    for i, row in enumerate(rows):
        text, _ = _hand_prompt(parts, i, row.ground_truth)
        want, hand_ids = _hand_log_probs(parts, text, _images_of(row), list(row.response_ids))
        assert teacher[i].input_ids.tolist() == hand_ids.tolist()
        assert teacher[i].input_ids[-lengths[i]:].tolist() == list(row.response_ids)
        torch.testing.assert_close(got[i, : lengths[i]], want, atol=1e-5, rtol=0)
        assert torch.all(got[i, lengths[i]:] == 0)


def test_rendered_prompt_per_hint_source(parts, rows):
    """answer / reference: teacher_hint_self_distill.jinja's wording; sibling: sdpo_teacher.jinja's."""
    answer = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer"))
    t, _, _ = answer.build(rows[:1])
    assert _text(parts, t[0]) == _chat(
        f"{VISION}What colour is the square?\n\nHere is a reference solution:\nred\n\nAfter understanding the "
        f"reference solution, please try to solve this problem using your own approach below. {FORMAT}")

    trace = "<thought>Wider means larger width: 96 > 64.</thought><answer>A</answer>"
    with_trace = [StudentSample(**{**rows[2].__dict__, "extra_info": {**rows[2].extra_info, "trace": trace}})]
    reference = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="reference", reference_field="trace"))
    t, _, _ = reference.build(with_trace)
    assert _text(parts, t[0]) == _chat(
        f"Which is wider?{VISION}\n\nOptions:\nA. yes\nB. no\n\nHere is a reference solution:\n{trace}\n\n"
        f"After understanding the reference solution, please try to solve this problem using your own approach "
        f"below. {FORMAT}")

    # sibling (sdpo): the shortest successful and the shortest failed other response of the group
    group = [StudentSample(**{**rows[0].__dict__, "response_ids": parts.tok.encode(r, add_special_tokens=False),
                              "score": s})
             for r, s in [("<answer>red</answer>", 1.0), ("It is red. <answer>red</answer>", 1.0),
                          ("<answer>blue</answer>", 0.0), ("Surely green. <answer>green</answer>", 0.0)]]
    sibling = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="sibling"))
    t, hints, metrics = sibling.build(group)
    assert hints.sibling_index == [1, 0, 0, 0] and hints.failed_index == [2, 2, 3, 2]
    assert hints.valid.all() and metrics["teacher/no_sibling"] == 0
    assert _text(parts, t[3]) == _chat(
        f"Problem:\n{VISION}What colour is the square?\n\nCorrect solution:\n\n<answer>red</answer>\n\n\n"
        "The following is feedback from your unsuccessful earlier attempt:\n\n<answer>blue</answer>\n\n\n"
        "Correctly solve the original question.")
    # a group without any failure: the feedback section stays empty, as released
    assert _text(parts, t[0]).endswith(
        "Correct solution:\n\nIt is red. <answer>red</answer>\n\n\nThe following is feedback from your "
        "unsuccessful earlier attempt:\n\n<answer>blue</answer>\n\n\nCorrectly solve the original question."
        "<|im_end|>\n<|im_start|>assistant\n")


def test_released_template_files_load_unchanged(parts, rows, tmp_path):
    (tmp_path / "teacher.jinja").write_text(RELEASED_TEACHER)
    (tmp_path / "sdpo.jinja").write_text(RELEASED_SDPO)
    for hint, name in (("answer", "teacher"), ("sibling", "sdpo")):
        group = [StudentSample(**{**r.__dict__, "uid": "g", "score": s}) for r, s in zip(rows, [1.0, 0.0, 1.0])]
        ours, _, _ = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint=hint)).build(group)
        released, _, _ = PrivilegedPromptBuilder(
            parts.tok, parts.proc, TeacherConfig(hint=hint, template=str(tmp_path / f"{name}.jinja"))).build(group)
        for a, b in zip(ours, released):
            assert a.input_ids.tolist() == b.input_ids.tolist()


def test_student_prompt_context_keeps_the_whole_student_turn(parts, rows):
    builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer", context="student_prompt"))
    t, _, _ = builder.build(rows[2:])
    assert _text(parts, t[0]) == _chat(
        f"{TASK}Which is wider?{VISION}\n\nOptions:\nA. yes\nB. no\n\nHere is a reference solution:\nA\n\n"
        f"After understanding the reference solution, please try to solve this problem using your own approach "
        f"below. {FORMAT}")
    # context=question on a row without extra_info.question: the student's turn, counted
    bare = [StudentSample(**{**rows[2].__dict__, "extra_info": {}})]
    q = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer"))
    t2, _, metrics = q.build(bare)
    assert metrics["teacher/context_fallback"] == 1 and t2[0].input_ids.tolist() == t[0].input_ids.tolist()


def test_placeholder_text_in_a_hint_stays_text(parts, rows, tmp_path):
    batch = [StudentSample(**{**rows[0].__dict__, "ground_truth": "as <image> shows: red"})]
    t, _, _ = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer")).build(batch)
    assert "reference solution:\nas <image> shows: red\n\n" in _text(parts, t[0])
    assert _text(parts, t[0]).count("<|image_pad|>") == 1
    # the template sees the real question text, so it may branch on it
    branch = tmp_path / "branch.jinja"
    branch.write_text("{% if 'colour' in question %}COLOUR {% endif %}{{ question }} {{ hint }}")
    t, _, _ = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer", template=str(branch))).build(rows[:2])
    assert _text(parts, t[0]) == _chat(f"COLOUR {VISION}What colour is the square? red")
    assert _text(parts, t[1]) == _chat("Compute 6 * 7. Give only the number. 42")


def test_plain_processor_gives_the_same_positions(parts, rows, tmp_path):
    """A plain AutoProcessor (no get_rope_index bound) computes M-RoPE ids with Qwen3-VL's own function."""
    from transformers import AutoProcessor

    from verl_ext.tiny_model import build_tiny_qwen3vl

    path = build_tiny_qwen3vl(tmp_path / "tiny")
    plain = AutoProcessor.from_pretrained(str(path))
    assert not hasattr(plain, "get_rope_index")
    verl_side, _, _ = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer")).build(rows)
    plain_side, _, _ = PrivilegedPromptBuilder(parts.tok, plain, TeacherConfig(hint="answer")).build(rows)
    lengths = [len(r.response_ids) for r in rows]
    lp = [response_log_probs(parts.model, [t.input_ids for t in side], [t.position_ids for t in side],
                             [t.multi_modal_inputs for t in side], lengths, pad_token_id=parts.tok.pad_token_id)
          for side in (verl_side, plain_side)]
    for a, b in zip(verl_side, plain_side):
        assert torch.equal(a.position_ids, b.position_ids)
    torch.testing.assert_close(lp[0], lp[1], atol=1e-5, rtol=0)
    # a vision processor with no rope function of a known family: an error, never 1-D positions
    other = types.SimpleNamespace(image_processor=types.SimpleNamespace(merge_size=2), image_token="<|image_pad|>")
    with pytest.raises(ValueError, match="get_rope_index"):
        PrivilegedPromptBuilder(parts.tok, other, TeacherConfig(hint="answer"))


def test_teacher_position_ids_equal_model_rope_index(parts, rows):
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer"))
    teacher, _, _ = builder.build(rows)
    image_id = parts.tok.convert_tokens_to_ids("<|image_pad|>")
    for t in teacher:
        ids = t.input_ids.unsqueeze(0)
        grid = t.multi_modal_inputs.get("image_grid_thw")
        mm_types = (ids == image_id).long()
        want, _ = parts.model.model.get_rope_index(ids, mm_types, image_grid_thw=grid, attention_mask=torch.ones_like(ids))
        assert t.position_ids.shape == (4, ids.shape[1])
        assert torch.equal(t.position_ids[1:], want[:, 0])
        assert torch.equal(t.position_ids[0], torch.arange(ids.shape[1]))
        # the same layout verl's agent loop stores for the student
        mm = dict(t.multi_modal_inputs, mm_token_type_ids=mm_types)
        verl_pos = AgentLoopWorker._compute_position_ids(
            types.SimpleNamespace(processor=parts.proc), ids, torch.ones_like(ids), mm
        )
        assert torch.equal(t.position_ids, verl_pos[0])
    # with an image the vision rows are not the text row: really recomputed, not a plain arange
    assert not torch.equal(teacher[0].position_ids[1], teacher[0].position_ids[0])


def test_group_rows_share_one_prompt_and_keep_exact_positions(parts, rows):
    """The rows of a group are built from one rendered prompt; every row's ids and M-RoPE positions still equal
    the model's own rope index over that row."""
    image_id = parts.tok.convert_tokens_to_ids("<|image_pad|>")
    answers = ["<answer>red</answer>", "<thought>maybe blue, maybe red, hard to say</thought><answer>blue</answer>", ""]
    group = [StudentSample(**{**rows[0].__dict__, "response_ids": parts.tok.encode(a, add_special_tokens=False)})
             for a in answers]
    group.append(rows[2])  # another prompt in the same batch
    builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer"))
    teacher, _, _ = builder.build(group)
    assert all(torch.equal(t.prompt_ids, teacher[0].prompt_ids) for t in teacher[:3])
    for t, s in zip(teacher, group):
        ids = t.input_ids.unsqueeze(0)
        assert t.input_ids[t.prompt_ids.numel():].tolist() == list(s.response_ids)
        mm_types = (ids == image_id).long()
        grid = t.multi_modal_inputs.get("image_grid_thw")
        want, _ = parts.model.model.get_rope_index(ids, mm_types, image_grid_thw=grid, attention_mask=torch.ones_like(ids))
        assert torch.equal(t.position_ids[1:], want[:, 0])
        assert torch.equal(t.position_ids[0], torch.arange(ids.shape[1]))


def test_pixel_values_reused_not_recomputed(parts, rows):
    builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer"))
    teacher, _, _ = builder.build(rows)
    image_id = parts.tok.convert_tokens_to_ids("<|image_pad|>")
    for row, t in zip(rows, teacher):
        assert t.multi_modal_inputs is row.multi_modal_inputs
        n_student = sum(1 for x in row.prompt_ids if x == image_id)
        assert int((t.input_ids == image_id).sum()) == n_student
    assert int((teacher[2].input_ids == image_id).sum()) == 6  # 96x64 image: 1*4*6 patches / 2**2


def test_hint_cut_to_its_budget_keeps_every_response_token(parts, rows):
    hint = " ".join(f"step{i} adds {i} to the running total" for i in range(60))
    n_hint = len(parts.tok.encode(hint, add_special_tokens=False))
    rows2 = [StudentSample(**{**r.__dict__, "extra_info": {**r.extra_info, "trace": hint}}) for r in rows]
    cfg = dict(hint="reference", reference_field="trace")
    full, _, _ = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(**cfg)).build(rows2)
    # max_hint_length: the hint's first 50 tokens, the marker, nothing else changes
    cut, _, metrics = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(**cfg, max_hint_length=50)).build(rows2)
    kept = parts.tok.decode(parts.tok.encode(hint, add_special_tokens=False)[:50])
    assert metrics["teacher/hint_truncated"] == 3 and metrics["teacher/rows_over_budget"] == 0
    for row, t, f in zip(rows2, cut, full):
        r = len(row.response_ids)
        assert t.input_ids[-r:].tolist() == list(row.response_ids)
        text = parts.tok.decode(t.prompt_ids)
        assert f"reference solution:\n{kept.strip()} ... [truncated]\n\nAfter understanding" in text
        assert f.input_ids.numel() - t.input_ids.numel() >= n_hint - 50 - 5
    # max_length: the hint is cut further until prompt + response fit
    budget = max(t.input_ids.numel() for t in full) - 200
    fit, _, metrics = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(**cfg, max_length=budget)).build(rows2)
    n_cut = sum(f.input_ids.numel() > budget for f in full)
    assert n_cut >= 2 and metrics["teacher/hint_truncated"] == n_cut and metrics["teacher/rows_over_budget"] == 0
    for row, t, f in zip(rows2, fit, full):
        assert t.input_ids.numel() <= budget
        assert t.input_ids[-len(row.response_ids):].tolist() == list(row.response_ids)
        text = parts.tok.decode(t.prompt_ids)
        assert "step0 adds 0 to the running total step1" in text  # the start of the hint is kept
        if f.input_ids.numel() > budget:
            assert "... [truncated]" in text and "step59" not in text
            assert text.endswith(f"{FORMAT}<|im_end|>\n<|im_start|>assistant\n")  # the template's tail survives
        else:
            assert t.input_ids.tolist() == f.input_ids.tolist()


def test_row_over_budget_gets_the_fallback_advantage_and_is_counted(parts, rows):
    """One row cannot fit even without its hint: no error, its tokens keep A_i (rlsd) or get 0 (opsd)."""
    import numpy as np
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    from verl_ext.trainer.self_distill import without_invalid_rows

    long_row = StudentSample(**{**rows[1].__dict__, "response_ids": [parts.tok.encode(" seven")[0]] * 120})
    batch = [rows[0], long_row, rows[2]]
    full, _, _ = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer")).build(batch)
    budget = max(full[0].input_ids.numel(), full[2].input_ids.numel())
    assert full[1].input_ids.numel() > budget + 40  # even an empty hint cannot bring it under
    builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer", max_length=budget))
    teacher, hints, metrics = builder.build(batch)
    assert metrics["teacher/rows_over_budget"] == 1 and hints.valid.tolist() == [True, False, True]
    assert teacher[1].input_ids.tolist() == list(long_row.prompt_ids) + list(long_row.response_ids)
    assert teacher[0].input_ids.tolist() == full[0].input_ids.tolist()

    width = 120
    mask = torch.zeros(3, width)
    for i, r in enumerate(batch):
        mask[i, : len(r.response_ids)] = 1
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(3, width, generator=g) * mask
    tea = without_invalid_rows(-torch.rand(3, width, generator=g) * mask, old, hints.valid)
    rewards = torch.zeros(3, width)
    rewards[0, 0] = 1.0  # one group of three: scores 1, 0, 0
    index = np.array(["g", "g", "g"], dtype=object)
    a_hi, a_lo = (1 - 1 / 3) / (1 / 3) ** 0.5, (0 - 1 / 3) / (1 / 3) ** 0.5  # (r - mean) / std, std unbiased
    cfg = {"rlsd": {"lambda_init": 0.5}}
    adv, _ = get_adv_estimator_fn("rlsd")(token_level_rewards=rewards, response_mask=mask, index=index, config=cfg,
                                          teacher_log_probs=tea, old_log_probs=old, global_step=1)
    torch.testing.assert_close(adv[1], torch.full((width,), a_lo) * mask[1], atol=1e-5, rtol=0)
    assert not torch.allclose(adv[0, :5], torch.full((5,), a_hi))  # the valid rows are reweighted
    adv, _ = get_adv_estimator_fn("opsd")(token_level_rewards=rewards, response_mask=mask, index=index, config={},
                                          teacher_log_probs=tea, old_log_probs=old, global_step=1,
                                          teacher_valid=hints.valid)
    assert torch.all(adv[1] == 0) and torch.allclose(adv[0], (tea[0] - old[0]) * mask[0])


def test_missing_hints_fall_back_and_are_counted(parts, rows):
    # reference: a missing or empty trace falls back to the ground-truth answer
    ref = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="reference", reference_field="trace"))
    batch = [StudentSample(**{**r.__dict__, "extra_info": {**r.extra_info, "trace": t}})
             for r, t in zip(rows, ["a trace", "   ", None])]
    teacher, hints, metrics = ref.build(batch)
    assert hints.hints == ["a trace", "42", "A"] and hints.valid.all()
    assert metrics["teacher/hint_fallback"] == 2 and metrics["teacher/hint_missing"] == 0
    assert "reference solution:\n42\n\n" in parts.tok.decode(teacher[1].prompt_ids)
    # no trace and no answer, or answer hint without answer: no teacher signal, counted, never raised
    batch[2] = StudentSample(**{**batch[2].__dict__, "ground_truth": None})
    _, hints, metrics = ref.build(batch)
    assert hints.valid.tolist() == [True, True, False] and metrics["teacher/hint_missing"] == 1
    ans = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer"))
    teacher, hints, metrics = ans.build(batch)
    assert hints.valid.tolist() == [True, True, False] and metrics["teacher/hint_missing"] == 1
    assert teacher[2].input_ids.tolist() == list(batch[2].prompt_ids) + list(batch[2].response_ids)


def _group(scores_by_uid):
    rows = []
    for uid, scores in scores_by_uid.items():
        for k, s in enumerate(scores):
            rows.append(StudentSample(messages=[], prompt_ids=[1], response_ids=[7] * (k + 1), uid=uid, score=s))
    return rows


def test_sibling_choice_never_self_and_seeded():
    rows = _group({"a": [1.0, 0.0, 1.0, 0.0, 1.0], "b": [0.0, 0.0], "c": [1.0, 0.5]})
    # shortest_pair (released): shortest success and shortest failure among the others; success is score > 0
    good, missing, bad = pick_siblings(rows, TeacherConfig(hint="sibling"))
    assert good == [2, 0, 0, 0, 0, None, None, 8, 7] and bad == [1, 3, 1, 1, 1, 6, 5, None, None]
    assert missing == 0
    # a stricter success rule: c's 0.5 is now a failure
    good, _, bad = pick_siblings(rows, TeacherConfig(hint="sibling", success_threshold=0.5))
    assert good[7:] == [None, 7] and bad[7:] == [8, None]
    seen = set()
    for seed in range(40):
        cfg = TeacherConfig(hint="sibling", sibling_pick="random", success_threshold=0.9, seed=seed)
        choice, missing, failed = pick_siblings(rows, cfg, step=3)
        assert choice == pick_siblings(rows, cfg, step=3)[0]  # deterministic given the seed
        assert missing == 3 and failed == [None] * 9  # both rows of b, and c's successful row
        for i, j in enumerate(choice):
            assert j != i
            if j is not None:
                assert rows[j].uid == rows[i].uid and rows[j].score >= 1.0
        assert choice[5] is None and choice[6] is None and choice[7] is None
        assert choice[8] == 7  # c's failed row: the only successful sibling
        seen.add(tuple(choice[:5]))
    assert len(seen) > 1  # the seed matters
    shortest, _, _ = pick_siblings(rows, TeacherConfig(hint="sibling", sibling_pick="shortest"))
    assert shortest[:5] == [2, 0, 0, 0, 0]


def test_sibling_hint_is_the_siblings_response_and_no_sibling_is_invalid(parts, rows):
    group = [StudentSample(**{**r.__dict__, "uid": "g", "score": s}) for r, s in zip(rows, [1.0, 0.0, 0.0])]
    builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="sibling", sibling_pick="shortest"))
    teacher, hints, metrics = builder.build(group)
    assert hints.sibling_index == [None, 0, 0] and hints.valid.tolist() == [False, True, True]
    assert metrics["teacher/no_sibling"] == 1
    assert hints.hints[1] == "<thought>It looks red.</thought><answer>red</answer>"
    assert teacher[0].input_ids.tolist() == list(group[0].prompt_ids) + list(group[0].response_ids)


def test_live_template_adding_nothing_reproduces_student_log_probs(parts, rows, tmp_path):
    plain = tmp_path / "plain.jinja"
    plain.write_text("{{ prompt }}")
    cfg = TeacherConfig(hint="answer", template=str(plain), context="student_prompt")
    teacher, _, _ = PrivilegedPromptBuilder(parts.tok, parts.proc, cfg).build(rows)
    lengths = [len(r.response_ids) for r in rows]
    for row, t in zip(rows, teacher):
        assert t.prompt_ids.tolist() == list(row.prompt_ids)
    got = response_log_probs(parts.model, [t.input_ids for t in teacher], [t.position_ids for t in teacher],
                             [t.multi_modal_inputs for t in teacher], lengths, pad_token_id=parts.tok.pad_token_id)
    for i, row in enumerate(rows):
        text = parts.proc.apply_chat_template(row.messages, add_generation_prompt=True, tokenize=False)
        student, _ = _hand_log_probs(parts, text, _images_of(row), list(row.response_ids))
        torch.testing.assert_close(got[i, : lengths[i]], student, atol=1e-5, rtol=0)


def test_template_files(tmp_path):
    assert "Here is a reference solution:" in load_template("teacher").render(question="Q", hint="H", format_instruction="F")
    bad = tmp_path / "bad.jinja"
    bad.write_text("no question here {{ hint }}")
    with pytest.raises(ValueError, match="question"):
        load_template(str(bad))
    with pytest.raises(FileNotFoundError, match="built-in templates: sdpo, sdpo_inline, teacher"):
        load_template("nonexistent")
    with pytest.raises(ValueError, match="hint must be one of"):
        TeacherConfig(hint="oracle")
    with pytest.raises(ValueError, match="context must be one of"):
        TeacherConfig(context="prompt")
    with pytest.raises(ValueError, match="unknown option.*algorithm.teacher.modes"):
        TeacherConfig.resolve({"modes": "live"}, "rlsd")
    assert TeacherConfig.resolve({"mode": None}, "sdpo").mode == "ema"
    assert TeacherConfig.resolve({}, "sdpo").template == "sdpo" and TeacherConfig.resolve({}, "opsd").template == "teacher"
    # the default budget: student prompt + hint + template room + response
    assert TeacherConfig.resolve({}, "rlsd", max_prompt_length=100, max_response_length=50).max_length == 100 + 4096 + 512 + 50


def _typed(uid, ptype, answer, k=0):
    return StudentSample(messages=[], prompt_ids=[1], response_ids=[7] * (k + 1), uid=uid, ground_truth=answer,
                         extra_info={"problem_type": ptype, "qwen3vl_235b_thinking_response": f"trace of {uid}"})


def test_shuffled_hint_is_another_prompts_of_the_same_type_never_its_own(parts):
    # 3 open prompts (2 responses each), 2 multiple-choice prompts, 1 math prompt alone in its type, 1 padding row
    batch = [_typed(u, t, a, k) for u, t, a in (("o1", "open", "red"), ("o2", "open", "blue"), ("o3", "open", "green"))
             for k in range(2)]
    batch += [_typed("m1", "multiple choice", "A"), _typed("m2", "multiple choice", "A"), _typed("x", "math", "7")]
    batch.append(StudentSample(messages=[], prompt_ids=[1], response_ids=[7], is_padding=True))
    own = {"o1": "red", "o2": "blue", "o3": "green", "m1": "A", "m2": "A"}
    seen = set()
    for seed in range(30):
        builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="shuffled", seed=seed))
        result = builder.hints(batch, step=5)
        assert result.hints == builder.hints(batch, step=5).hints  # seeded
        for i, s in enumerate(batch[:8]):
            j = result.shuffled_from[i]
            src = batch[j]
            assert src.uid != s.uid and src.extra_info["problem_type"] == s.extra_info["problem_type"]
            assert result.hints[i] == src.ground_truth
        # both responses of a prompt get the same borrowed hint, as with their own hint
        for a in (0, 2, 4):
            assert result.hints[a] == result.hints[a + 1]
        assert result.hints[8] is None and result.hints[9] is None  # alone in its type, padding
        assert result.valid.tolist() == [True] * 8 + [False, False]
        assert result.no_partner == 1 and result.hint_missing == 1
        # m1 and m2 both read "A": the borrowed text equals their own, and that is counted, never hidden
        same = sum(result.hints[i] == own[batch[i].uid] for i in range(8))
        assert result.shuffled_same_text == same >= 2
        seen.add(tuple(result.hints[:6]))
    assert len(seen) > 1  # the draw depends on the seed
    ref = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="shuffled", shuffle_source="reference"))
    result = ref.hints(batch, step=1)
    assert all(result.hints[i] == f"trace of {batch[result.shuffled_from[i]].uid}" for i in range(8))


def test_shuffled_hint_metrics_and_prompt(parts, rows):
    # the rows fixture: three prompts of one (missing) problem type; the teacher prompt carries the borrowed hint
    group = [StudentSample(**{**r.__dict__, "uid": f"u{i}"}) for i, r in enumerate(rows)]
    builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="shuffled"))
    teacher, hints, metrics = builder.build(group)
    assert metrics["teacher/hint_shuffled"] == 3 and metrics["teacher/shuffle_no_partner"] == 0
    for i, t in enumerate(teacher):
        borrowed = str(group[hints.shuffled_from[i]].ground_truth)
        text = parts.tok.decode(t.prompt_ids.tolist())
        assert f"Here is a reference solution:\n{borrowed}\n" in text
    with pytest.raises(ValueError, match="shuffle_source"):
        TeacherConfig(hint="shuffled", shuffle_source="sibling")


def test_shuffled_hint_grouped_by_another_field(parts):
    """shuffle_group=task: two tasks of one problem type never lend each other their hints."""
    batch = []
    for uid, task, answer in (("c1", "colour", "red"), ("c2", "colour", "blue"), ("m1", "more", "yes"), ("m2", "more", "no")):
        row = _typed(uid, "open", answer)
        row.extra_info["task"] = task
        batch.append(row)
    for seed in range(10):
        cfg = TeacherConfig(hint="shuffled", shuffle_group="task", seed=seed)
        result = PrivilegedPromptBuilder(parts.tok, parts.proc, cfg).hints(batch, step=0)
        assert result.hints == ["blue", "red", "no", "yes"]  # one partner each: the other row of its task
    mixed = set()
    for seed in range(30):  # by problem type (all open) a colour row may borrow a yes/no answer
        result = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="shuffled", seed=seed)).hints(batch)
        mixed.add(result.hints[0])
    assert mixed == {"blue", "yes", "no"}
