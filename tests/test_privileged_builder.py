"""Privileged-prompt builder on a tiny random Qwen3-VL with the real Qwen3 tokenizer and processor.

References are built independently: the teacher text is written out by hand in the chat format,
tokenised and pixel-processed by the processor from the raw images, and scored by a plain
single-row transformers forward whose M-RoPE ids the model computes itself.
"""

from __future__ import annotations

import types

import pytest
import torch
from PIL import Image

from verl_ext.privileged import PrivilegedPromptBuilder, StudentSample, TeacherConfig, load_template, pick_siblings
from verl_ext.privileged.config import DEFAULT_FORMAT_INSTRUCTION
from verl_ext.privileged.forward import response_log_probs

FMT = DEFAULT_FORMAT_INSTRUCTION
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


def _student(parts, content, images, response_text, ground_truth="42", uid="g0", score=1.0, extra=None):
    """A student row the way verl builds it: processor(chat template, images) -> prompt ids + pixels."""
    messages = [{"role": "user", "content": content}]
    text = parts.proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = parts.proc(text=[text], images=images or None, return_tensors="pt")
    mm = {k: enc[k] for k in ("pixel_values", "image_grid_thw") if k in enc}
    response = parts.tok.encode(response_text, add_special_tokens=False) + [parts.tok.eos_token_id]
    return StudentSample(
        messages=messages,
        prompt_ids=enc["input_ids"][0].tolist(),
        response_ids=response,
        multi_modal_inputs=mm,
        ground_truth=ground_truth,
        extra_info=extra or {},
        uid=uid,
        score=score,
    )


@pytest.fixture(scope="module")
def rows(parts):
    red, blue = _image(64, 64, (220, 20, 20)), _image(96, 64, (20, 20, 220))
    return [
        _student(parts, [{"type": "image", "image": red}, {"type": "text", "text": "What colour is the square?"}],
                 [red], "<thought>It looks red.</thought><answer>red</answer>", ground_truth="red"),
        _student(parts, "Compute 6 * 7. Give only the number.", [],
                 "<thought>6 times 7 is 42, a short product.</thought> <answer>42</answer>", ground_truth="42"),
        _student(parts, [{"type": "text", "text": "Which is wider?"}, {"type": "image", "image": blue},
                         {"type": "text", "text": "Options:\nA. yes\nB. no"}],
                 [blue], "<answer>A</answer>", ground_truth="A"),
    ]


def _hand_prompt(parts, row_index, hint):
    """The teacher prompt written out by hand: question (images in place) + method.md's hint block."""
    grids = {0: [1, 4, 4], 2: [1, 4, 6]}
    tail = (f"\n\nHere is a reference solution:\n{hint}\n\nAfter understanding the reference solution, please try "
            f"to solve this problem using your own approach below.\n{FMT}")
    vision = VISION.format(pads="<|image_pad|>")
    question = {
        0: f"{vision}What colour is the square?",
        1: "Compute 6 * 7. Give only the number.",
        2: f"Which is wider?{vision}Options:\nA. yes\nB. no",
    }[row_index]
    text = f"<|im_start|>user\n{question}{tail}<|im_end|>\n<|im_start|>assistant\n"
    return text, grids.get(row_index)


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


def test_teacher_log_probs_equal_hand_assembled_forward(parts, rows):
    builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer"))
    teacher, hints, metrics = builder.build(rows)
    assert hints.hints == ["red", "42", "A"] and hints.valid.all()
    assert metrics["teacher/hint_truncated"] == 0
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


def test_pixel_values_reused_not_recomputed(parts, rows):
    builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer"))
    teacher, _, _ = builder.build(rows)
    image_id = parts.tok.convert_tokens_to_ids("<|image_pad|>")
    for row, t in zip(rows, teacher):
        assert t.multi_modal_inputs is row.multi_modal_inputs
        n_student = sum(1 for x in row.prompt_ids if x == image_id)
        assert int((t.input_ids == image_id).sum()) == n_student
    assert int((teacher[2].input_ids == image_id).sum()) == 6  # 96x64 image: 1*4*6 patches / 2**2


def test_truncation_cuts_the_hint_and_keeps_every_response_token(parts, rows):
    hint = " ".join(f"step{i} adds {i} to the running total" for i in range(60))
    rows2 = [StudentSample(**{**r.__dict__, "extra_info": {"trace": hint}}) for r in rows]
    untruncated = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="reference", reference_field="trace"))
    full, _, _ = untruncated.build(rows2)
    budget = max(t.input_ids.numel() for t in full) - 200
    builder = PrivilegedPromptBuilder(
        parts.tok, parts.proc, TeacherConfig(hint="reference", reference_field="trace", max_length=budget)
    )
    teacher, _, metrics = builder.build(rows2)
    n_cut = sum(f.input_ids.numel() > budget for f in full)
    assert n_cut >= 2 and metrics["teacher/hint_truncated"] == n_cut
    for row, t, f in zip(rows2, teacher, full):
        r = len(row.response_ids)
        assert t.input_ids.numel() <= budget
        assert t.input_ids[-r:].tolist() == list(row.response_ids)
        text = parts.tok.decode(t.prompt_ids)
        assert "step0 adds 0 to the running total step1" in text  # the start of the hint is kept
        if f.input_ids.numel() > budget:
            assert "... [truncated]" in text and "step59" not in text
            assert text.endswith(f"{FMT}<|im_end|>\n<|im_start|>assistant\n")  # the template's tail survives
        else:
            assert t.input_ids.tolist() == f.input_ids.tolist()


def test_truncation_impossible_names_the_row(parts, rows):
    builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer", max_length=30))
    with pytest.raises(ValueError, match=r"row 0 \(uid g0\).*max_length=30"):
        builder.build(rows)


def test_missing_or_empty_hint_raises_with_row_index(parts, rows):
    builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer"))
    bad = list(rows)
    bad[2] = StudentSample(**{**rows[2].__dict__, "ground_truth": None})
    with pytest.raises(ValueError, match=r"row 2 .*reward_model.ground_truth, which is missing"):
        builder.build(bad)
    ref = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="reference"))
    bad = [StudentSample(**{**r.__dict__, "extra_info": {"qwen3vl_235b_thinking_response": "a trace"}}) for r in rows]
    bad[1].extra_info = {"qwen3vl_235b_thinking_response": "   "}
    with pytest.raises(ValueError, match=r"row 1 .*extra_info.qwen3vl_235b_thinking_response, which is empty"):
        ref.build(bad)


def _group(scores_by_uid):
    rows = []
    for uid, scores in scores_by_uid.items():
        for k, s in enumerate(scores):
            rows.append(StudentSample(messages=[], prompt_ids=[1], response_ids=[7] * (k + 1), uid=uid, score=s))
    return rows


def test_sibling_choice_never_self_and_seeded():
    rows = _group({"a": [1.0, 0.0, 1.0, 0.0, 1.0], "b": [0.0, 0.0], "c": [1.0, 0.5]})
    seen = set()
    for seed in range(40):
        cfg = TeacherConfig(hint="sibling", seed=seed)
        choice, missing = pick_siblings(rows, cfg, step=3)
        assert choice == pick_siblings(rows, cfg, step=3)[0]  # deterministic given the seed
        assert missing == 3  # both rows of b, and c's successful row (its sibling scored 0.5)
        for i, j in enumerate(choice):
            assert j != i
            if j is not None:
                assert rows[j].uid == rows[i].uid and rows[j].score >= 1.0
        assert choice[5] is None and choice[6] is None and choice[7] is None
        assert choice[8] == 7  # c's failed row: the only successful sibling
        seen.add(tuple(choice[:5]))
    assert len(seen) > 1  # the seed matters
    shortest, _ = pick_siblings(rows, TeacherConfig(hint="sibling", sibling_pick="shortest"))
    assert shortest[:5] == [2, 0, 0, 0, 0]


def test_sibling_hint_is_the_siblings_response_and_no_sibling_is_invalid(parts, rows):
    group = [StudentSample(**{**r.__dict__, "uid": "g", "score": s}) for r, s in zip(rows, [1.0, 0.0, 0.0])]
    builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="sibling"))
    teacher, hints, metrics = builder.build(group)
    assert hints.sibling_index == [None, 0, 0] and hints.valid.tolist() == [False, True, True]
    assert metrics["teacher/no_sibling"] == 1
    assert hints.hints[1] == "<thought>It looks red.</thought><answer>red</answer>"
    assert teacher[0].input_ids.tolist() == list(group[0].prompt_ids) + list(group[0].response_ids)


def test_live_template_adding_nothing_reproduces_student_log_probs(parts, rows, tmp_path):
    plain = tmp_path / "plain.jinja"
    plain.write_text("{{ prompt }}")
    builder = PrivilegedPromptBuilder(parts.tok, parts.proc, TeacherConfig(hint="answer", template=str(plain)))
    teacher, _, _ = builder.build(rows)
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
    assert "Here is a reference solution:" in load_template("teacher").render(prompt="Q", hint="H", format_instruction="F")
    bad = tmp_path / "bad.jinja"
    bad.write_text("no question here {{ hint }}")
    with pytest.raises(ValueError, match="prompt"):
        load_template(str(bad))
    with pytest.raises(FileNotFoundError, match="built-in templates: sibling, teacher"):
        load_template("nonexistent")
    with pytest.raises(ValueError, match="hint must be one of"):
        TeacherConfig(hint="oracle")
    with pytest.raises(ValueError, match="unknown option.*algorithm.teacher.modes"):
        TeacherConfig.resolve({"modes": "live"}, "rlsd")
    assert TeacherConfig.resolve({"mode": None}, "sdpo").mode == "ema"
