"""The teacher pass of a tokenizer-only model: a tiny random text Qwen3 with the real Qwen3 tokenizer and its own
chat template (``enable_thinking=False`` as a text recipe may set it).

References are built independently: the teacher text is written out by hand in Qwen3's chat format, tokenised
by the tokenizer, and scored by a plain single-row transformers forward (the model makes its own positions).
"""

from __future__ import annotations

import types

import pytest
import torch

from verl_ext.privileged import PrivilegedPromptBuilder, StudentSample, TeacherConfig
from verl_ext.privileged.forward import response_log_probs

BOXED = "Please reason step by step, and put your final answer within \\boxed{}."
KWARGS = {"enable_thinking": False}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from transformers import AutoModelForCausalLM
    from verl.utils import hf_processor, hf_tokenizer

    from verl_ext.tiny_text_model import build_tiny_qwen3

    path = str(build_tiny_qwen3(tmp_path_factory.getbasetemp() / "tiny_qwen3"))
    tok = hf_tokenizer(path)
    assert hf_processor(path) is None  # verl's tokenizer-only path
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return types.SimpleNamespace(tok=tok, model=model)


def _student(parts, question, response_text, answer, uid, score=1.0, trace=None):
    """A row as verl builds it from a text parquet: one user turn (question + the boxed instruction)."""
    messages = [{"role": "user", "content": f"{question}\n\n{BOXED}"}]
    prompt = parts.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **KWARGS)
    prompt = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
    response = parts.tok.encode(response_text, add_special_tokens=False) + [parts.tok.eos_token_id]
    info = {"question": question, "options": [], "answer": answer, "raw_answer": answer}
    if trace is not None:
        info["reference"] = trace
    return StudentSample(messages=messages, prompt_ids=list(prompt), response_ids=response, multi_modal_inputs=None,
                         ground_truth=answer, extra_info=info, uid=uid, score=score)


@pytest.fixture(scope="module")
def rows(parts):
    return [
        _student(parts, "What is 12 + 30?", "12 + 30 = 42, so the answer is \\boxed{42}.", "42", "a"),
        _student(parts, "Compute $6 \\times 7$.", "\\boxed{40}", "42", "b", score=0.0),
        _student(parts, "Simplify $\\frac{2}{4}$.", "Divide both by 2: \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "b",
                 trace="2/4 = 1/2, answer \\boxed{\\frac{1}{2}}"),
    ]


def _hand_prompt(question, hint):
    """teacher.jinja's wording in Qwen3's chat format, written out (no thinking: the empty think block)."""
    user = (f"{question}\n\nHere is a reference solution:\n{hint}\n\nAfter understanding the reference solution, "
            f"please try to solve this problem using your own approach below. {BOXED}")
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def _hand_log_probs(parts, prompt_text, response_ids):
    ids = torch.tensor([parts.tok.encode(prompt_text, add_special_tokens=False) + list(response_ids)])
    with torch.no_grad():
        logits = parts.model(input_ids=ids).logits.float()
    logp = torch.log_softmax(logits[0], -1)
    n, r = ids.shape[1], len(response_ids)
    return logp[n - r - 1 : n - 1].gather(-1, ids[0, n - r :].unsqueeze(-1)).squeeze(-1), ids[0]


def test_teacher_log_probs_equal_an_independent_forward(parts, rows):
    builder = PrivilegedPromptBuilder(parts.tok, None, TeacherConfig(hint="answer", format_instruction=BOXED),
                                      chat_template_kwargs=KWARGS)
    teacher, hints, metrics = builder.build(rows)
    assert hints.hints == ["42", "42", "\\frac{1}{2}"] and hints.valid.all()
    assert metrics["teacher/context_fallback"] == 0 and metrics["teacher/hint_truncated"] == 0
    lengths = [len(r.response_ids) for r in rows]
    assert len(set(lengths)) == 3  # padded batch of mixed lengths
    for t in teacher:
        assert t.position_ids.dim() == 1 and torch.equal(t.position_ids, torch.arange(t.input_ids.numel()))
        assert t.multi_modal_inputs == {}
    got = response_log_probs(parts.model, [t.input_ids for t in teacher], [t.position_ids for t in teacher],
                             [t.multi_modal_inputs for t in teacher], lengths, pad_token_id=parts.tok.pad_token_id)
    for i, row in enumerate(rows):
        want, hand_ids = _hand_log_probs(parts, _hand_prompt(row.extra_info["question"], row.ground_truth), row.response_ids)
        assert teacher[i].input_ids.tolist() == hand_ids.tolist()
        assert teacher[i].input_ids[-lengths[i]:].tolist() == list(row.response_ids)
        # fp32 logits of one 2-layer model, batched with right padding vs one row: summation order only
        torch.testing.assert_close(got[i, : lengths[i]], want, atol=1e-5, rtol=0)
        assert torch.all(got[i, lengths[i]:] == 0)


def test_student_prompt_context_reproduces_student_log_probs(parts, rows, tmp_path):
    """context=student_prompt with a template adding nothing: the teacher sequence is the student's own, token
    for token, so its log-probs are the student's (the live-teacher identity)."""
    template = tmp_path / "bare.jinja"
    template.write_text("{{ question }}")
    builder = PrivilegedPromptBuilder(parts.tok, None, TeacherConfig(hint="answer", context="student_prompt",
                                                                     template=str(template)), chat_template_kwargs=KWARGS)
    teacher, _, _ = builder.build(rows)
    for t, row in zip(teacher, rows):
        assert t.prompt_ids.tolist() == list(row.prompt_ids)


def test_reference_hint_falls_back_to_the_answer(parts, rows):
    """A text set without traces: OPSD's reference hint is the answer, counted in teacher/hint_fallback."""
    builder = PrivilegedPromptBuilder(parts.tok, None, TeacherConfig(hint="reference", reference_field="reference",
                                                                     format_instruction=BOXED), chat_template_kwargs=KWARGS)
    teacher, hints, metrics = builder.build(rows)
    assert hints.hints == ["42", "42", rows[2].extra_info["reference"]]
    assert metrics["teacher/hint_fallback"] == 2
    assert parts.tok.decode(teacher[0].prompt_ids) == _hand_prompt("What is 12 + 30?", "42")


def test_sibling_hint_is_the_other_responses_text(parts, rows):
    """SDPO on text: rows 1 and 2 share a group; row 1's successful sibling is row 2's response."""
    builder = PrivilegedPromptBuilder(parts.tok, None, TeacherConfig(hint="sibling"), chat_template_kwargs=KWARGS)
    teacher, hints, _ = builder.build(rows)
    assert not hints.valid[0]  # alone in its group
    assert hints.hints[1] == "Divide both by 2: \\boxed{\\frac{1}{2}}"
    assert "Divide both by 2" in parts.tok.decode(teacher[1].prompt_ids)
    assert teacher[0].prompt_ids.tolist() == list(rows[0].prompt_ids)  # no signal: the student's prompt
