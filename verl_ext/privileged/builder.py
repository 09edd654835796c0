"""Privileged-prompt builder: the teacher's input for every sampled response.

For a student row ``(messages x, response y)`` the teacher sequence is

    chat_template(x~) + y,    x~ = template(prompt=<the last user turn of x>, hint=r, format_instruction=...)

where the Jinja template wraps the student's last user turn (text and images, unchanged and in place)
with the privileged text. The response token ids ``y`` are appended unchanged, so
``teacher_input_ids[-len(y):] == y`` always.

Images: the teacher sees the student's images. Their pixel values are reused as they are (the
student's ``multi_modal_inputs`` dict is passed through, never recomputed); each image placeholder
of the rendered prompt is expanded to ``prod(image_grid_thw[i]) / merge_size**2`` pad tokens, which
is what the processor itself does. Qwen-VL position ids (verl's layout: ``[4, L]`` = one text row
``0..L-1`` over the model's 3-row M-RoPE ids) are recomputed for the teacher sequence with the
processor's bound ``get_rope_index`` (the model's own function), never copied from the student.

Length budget: when ``len(teacher prompt) + len(y) > max_length`` the hint is cut (its start kept,
``truncation_marker`` appended) until the sequence fits; the response is never cut.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import torch

from verl_ext.privileged.config import TeacherConfig

TEMPLATES_DIR = Path(__file__).parent / "templates"
_PROMPT_SENTINEL = "\x00PROMPT\x00"


@dataclasses.dataclass
class StudentSample:
    """One sampled response with what the teacher prompt needs (one verl trajectory)."""

    messages: list[dict]
    prompt_ids: Sequence[int]
    response_ids: Sequence[int]
    multi_modal_inputs: dict[str, Any] | None = None
    ground_truth: Any = None
    extra_info: dict[str, Any] | None = None
    uid: str | None = None
    score: float | None = None
    is_padding: bool = False


@dataclasses.dataclass
class TeacherSample:
    """Teacher inputs of one row, verl's per-trajectory layout (no padding)."""

    prompt_ids: torch.Tensor  # [P_t]
    input_ids: torch.Tensor  # [P_t + R], ends with the student's response
    position_ids: torch.Tensor  # [4, P_t + R] for Qwen-VL, else [P_t + R]
    multi_modal_inputs: dict[str, Any]  # the student's dict, same object
    hint_truncated: bool = False


@dataclasses.dataclass
class HintResult:
    hints: list[str | None]
    valid: torch.Tensor  # [B] bool: False = no teacher signal (sdpo: no successful sibling; padding rows)
    sibling_index: list[int | None]  # sibling source row per row (sibling hints only)
    no_sibling: int = 0


def load_template(name_or_path: str):
    """A Jinja template: a built-in name (``teacher``, ``sibling``) or a file path.

    The template gets ``prompt``, ``hint`` and ``format_instruction``; it must use ``prompt`` exactly
    once (a template without ``hint`` is allowed: it gives the student's own context, an alignment check).
    """
    import jinja2

    path = Path(name_or_path)
    if not path.suffix and (TEMPLATES_DIR / f"{name_or_path}.jinja").is_file():
        path = TEMPLATES_DIR / f"{name_or_path}.jinja"
    if not path.is_file():
        builtin = ", ".join(sorted(p.stem for p in TEMPLATES_DIR.glob("*.jinja")))
        raise FileNotFoundError(
            f"algorithm.teacher.template: no file {str(path)!r} (built-in templates: {builtin})"
        )
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
    template = env.from_string(path.read_text(encoding="utf-8"))
    probe = template.render(prompt=_PROMPT_SENTINEL, hint="\x00HINT\x00", format_instruction="")
    if probe.count(_PROMPT_SENTINEL) != 1:
        raise ValueError(f"teacher template {str(path)!r} must contain {{{{ prompt }}}} exactly once")
    return template


def _resolve_hint_text(sample: StudentSample, row: int, config: TeacherConfig) -> str:
    if config.hint == "answer":
        value, where = sample.ground_truth, "reward_model.ground_truth"
    else:
        value = (sample.extra_info or {}).get(config.reference_field)
        where = f"extra_info.{config.reference_field}"
    if value is None or (isinstance(value, str) and not value.strip()):
        state = "missing" if value is None else "empty"
        raise ValueError(
            f"row {row}{f' (uid {sample.uid})' if sample.uid else ''}: hint source {config.hint!r} needs "
            f"{where}, which is {state}"
            + (" (set algorithm.teacher.reference_field to the trace's key)" if config.hint == "reference" else "")
        )
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    return str(value)


def pick_siblings(
    samples: Sequence[StudentSample], config: TeacherConfig, step: int = 0
) -> tuple[list[int | None], int]:
    """For each row, the index of a successful other member of its uid group, or None.

    Successful: ``score >= config.success_threshold``. Never the row itself, never a padding row.
    ``random``: a seeded choice, a function of ``(seed, step, uid, row)`` only; ``shortest``: the
    shortest successful response (lowest index on ties). Returns ``(choices, rows_without_sibling)``.
    """
    groups: dict[Any, list[int]] = {}
    for i, s in enumerate(samples):
        if not s.is_padding:
            if s.uid is None:
                raise ValueError(f"row {i}: hint source 'sibling' needs the row's uid (group id)")
            if s.score is None:
                raise ValueError(f"row {i} (uid {s.uid}): hint source 'sibling' needs the row's reward score")
            groups.setdefault(s.uid, []).append(i)
    choices: list[int | None] = []
    missing = 0
    for i, s in enumerate(samples):
        if s.is_padding:
            choices.append(None)
            continue
        candidates = [j for j in groups[s.uid] if j != i and float(samples[j].score) >= config.success_threshold]
        if not candidates:
            choices.append(None)
            missing += 1
        elif config.sibling_pick == "shortest":
            choices.append(min(candidates, key=lambda j: (len(samples[j].response_ids), j)))
        else:
            rng = random.Random(f"{config.seed}:{step}:{s.uid}:{groups[s.uid].index(i)}")
            choices.append(rng.choice(candidates))
    return choices, missing


class PrivilegedPromptBuilder:
    """Builds teacher inputs from student rows. ``tokenizer``/``processor`` are verl's (HF) ones.

    ``processor`` may be None for a text-only model; with a Qwen-VL processor loaded through verl's
    ``hf_processor`` it carries the model's ``get_rope_index``. ``chat_template_kwargs``: verl's
    ``data.apply_chat_template_kwargs``, so the teacher's chat rendering matches the student's.
    """

    def __init__(self, tokenizer, processor, config: TeacherConfig, chat_template_kwargs: dict | None = None):
        self.tokenizer = tokenizer
        self.processor = processor
        self.config = config
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.template = load_template(config.template)
        self._chat = processor if processor is not None and hasattr(processor, "apply_chat_template") else tokenizer
        self.image_token = getattr(processor, "image_token", None) if processor is not None else None
        self.video_token = getattr(processor, "video_token", None) if processor is not None else None
        ids = tokenizer.convert_tokens_to_ids
        self.image_token_id = ids(self.image_token) if self.image_token else None
        self.video_token_id = ids(self.video_token) if self.video_token else None
        image_processor = getattr(processor, "image_processor", None)
        self.merge_size = int(getattr(image_processor, "merge_size", 1) or 1)
        self.marker_ids = tokenizer.encode(config.truncation_marker, add_special_tokens=False)

    # ---------------------------------------------------------------- hints
    def hints(self, samples: Sequence[StudentSample], step: int = 0) -> HintResult:
        """The hint text per row and whether the row gets a teacher signal."""
        valid = torch.ones(len(samples), dtype=torch.bool)
        if self.config.hint == "sibling":
            choices, missing = pick_siblings(samples, self.config, step)
            hints: list[str | None] = []
            for i, j in enumerate(choices):
                if j is None:
                    valid[i] = False
                    hints.append(None)
                else:
                    hints.append(self.tokenizer.decode(list(samples[j].response_ids), skip_special_tokens=True))
            return HintResult(hints, valid, choices, missing)
        hints = []
        for i, s in enumerate(samples):
            if s.is_padding:
                valid[i] = False
                hints.append(None)
            else:
                hints.append(_resolve_hint_text(s, i, self.config))
        return HintResult(hints, valid, [None] * len(samples), 0)

    # ---------------------------------------------------------------- prompt
    def teacher_messages(self, messages: list[dict], hint: str) -> list[dict]:
        """``messages`` with the last user turn wrapped by the template (images stay in place)."""
        text = self.template.render(
            prompt=_PROMPT_SENTINEL, hint=hint, format_instruction=self.config.format_instruction
        )
        before, after = text.split(_PROMPT_SENTINEL)
        out = copy.copy(list(messages))
        for k in range(len(out) - 1, -1, -1):
            if out[k].get("role") == "user":
                break
        else:
            raise ValueError("the student prompt has no user message to attach the hint to")
        msg = dict(out[k])
        content = msg.get("content")
        if isinstance(content, str):
            msg["content"] = before + content + after
        else:
            items = list(content or [])
            msg["content"] = (
                ([{"type": "text", "text": before}] if before else [])
                + items
                + ([{"type": "text", "text": after}] if after else [])
            )
        out[k] = msg
        return out

    def render_prompt_ids(self, messages: list[dict], multi_modal_inputs: dict | None) -> list[int]:
        """Chat template + placeholder expansion (one pad token per merged patch) + tokenization."""
        text = self._chat.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, **self.chat_template_kwargs
        )
        text = self._expand(text, self.image_token, (multi_modal_inputs or {}).get("image_grid_thw"), "image")
        text = self._expand(text, self.video_token, (multi_modal_inputs or {}).get("video_grid_thw"), "video")
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _expand(self, text: str, token: str | None, grid_thw, kind: str) -> str:
        if not token:
            return text
        parts = text.split(token)
        n = len(parts) - 1
        grid = [] if grid_thw is None else [int(torch.as_tensor(g).prod()) for g in grid_thw]
        if n != len(grid):
            raise ValueError(f"the teacher prompt has {n} {kind} placeholder(s) but the student's inputs hold {len(grid)} {kind}(s)")
        out = [parts[0]]
        for g, part in zip(grid, parts[1:]):
            out.append(token * (g // self.merge_size**2))
            out.append(part)
        return "".join(out)

    # ---------------------------------------------------------------- positions
    def position_ids(self, input_ids: torch.Tensor, multi_modal_inputs: dict | None) -> torch.Tensor:
        """verl's layout: ``[4, L]`` (text row + 3 M-RoPE rows) with a rope-index processor, else ``[L]``."""
        length = input_ids.shape[-1]
        text = torch.arange(length, dtype=torch.long)
        if self.processor is None or not hasattr(self.processor, "get_rope_index"):
            return text
        mm = multi_modal_inputs or {}
        mm_token_type_ids = torch.zeros_like(input_ids)
        if self.image_token_id is not None:
            mm_token_type_ids[input_ids == self.image_token_id] = 1
        if self.video_token_id is not None:
            mm_token_type_ids[input_ids == self.video_token_id] = 2
        kwargs = {
            "image_grid_thw": mm.get("image_grid_thw"),
            "video_grid_thw": mm.get("video_grid_thw"),
            "mm_token_type_ids": mm_token_type_ids.unsqueeze(0),
        }
        extra = getattr(self.processor, "get_rope_index_kwargs", None)
        if extra is not None:
            kwargs.update(extra(mm))
        vision, _ = self.processor.get_rope_index(
            input_ids=input_ids.unsqueeze(0), attention_mask=torch.ones_like(input_ids).unsqueeze(0), **kwargs
        )
        return torch.cat([text.unsqueeze(0), vision[:, 0].to(torch.long)], dim=0)

    # ---------------------------------------------------------------- build
    def build_one(self, sample: StudentSample, hint: str | None, row: int = 0) -> TeacherSample:
        """Teacher inputs of one row; ``hint=None`` (or a padding row) reuses the student prompt."""
        response = torch.as_tensor(list(sample.response_ids), dtype=torch.long)
        mm = sample.multi_modal_inputs if sample.multi_modal_inputs is not None else {}
        truncated = False
        if hint is None or sample.is_padding:
            prompt = list(sample.prompt_ids)
        else:
            prompt = self.render_prompt_ids(self.teacher_messages(sample.messages, hint), mm)
            budget = None if self.config.max_length is None else int(self.config.max_length) - len(response)
            if budget is not None and len(prompt) > budget:
                prompt = self._truncate_hint(sample, hint, budget, row, mm)
                truncated = True
        prompt_t = torch.as_tensor(prompt, dtype=torch.long)
        input_ids = torch.cat([prompt_t, response])
        return TeacherSample(
            prompt_ids=prompt_t,
            input_ids=input_ids,
            position_ids=self.position_ids(input_ids, mm),
            multi_modal_inputs=mm,
            hint_truncated=truncated,
        )

    def _truncate_hint(self, sample: StudentSample, hint: str, budget: int, row: int, mm: dict) -> list[int]:
        hint_ids = self.tokenizer.encode(hint, add_special_tokens=False)
        full = len(self.render_prompt_ids(self.teacher_messages(sample.messages, hint), mm))
        keep = len(hint_ids) - (full - budget) - len(self.marker_ids)
        while True:
            keep = max(keep, 0)
            cut = self.tokenizer.decode(hint_ids[:keep]) + self.config.truncation_marker
            prompt = self.render_prompt_ids(self.teacher_messages(sample.messages, cut), mm)
            if len(prompt) <= budget:
                return prompt
            if keep == 0:
                raise ValueError(
                    f"row {row}{f' (uid {sample.uid})' if sample.uid else ''}: the teacher prompt without its hint "
                    f"({len(prompt)} tokens) plus the response ({len(sample.response_ids)} tokens) exceeds "
                    f"algorithm.teacher.max_length={self.config.max_length}; raise it"
                )
            keep -= len(prompt) - budget

    def build(self, samples: Sequence[StudentSample], step: int = 0) -> tuple[list[TeacherSample], HintResult, dict]:
        """Teacher inputs for a batch, the hints used and metrics (``teacher/hint_truncated`` ...)."""
        hint_result = self.hints(samples, step)
        out = [self.build_one(s, h, i) for i, (s, h) in enumerate(zip(samples, hint_result.hints))]
        metrics = {
            "teacher/hint_truncated": float(sum(t.hint_truncated for t in out)),
            "teacher/no_sibling": float(hint_result.no_sibling),
            "teacher/valid_frac": float(hint_result.valid.float().mean()) if len(samples) else 0.0,
            "teacher/prompt_length_mean": float(sum(len(t.prompt_ids) for t in out) / max(len(out), 1)),
        }
        return out, hint_result, metrics


@lru_cache(maxsize=None)
def builtin_templates() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in TEMPLATES_DIR.glob("*.jinja")))
