"""Privileged-prompt builder: the teacher's input for every sampled response.

For a student row ``(messages x, response y)`` the teacher sequence is

    chat_template([user: template(question=c, hint=r, ...)]) + y

where the context ``c`` is, with ``algorithm.teacher.context``:

- ``question`` (default, as released): the data's question text (``extra_info.question``, with an
  ``<image>`` placeholder where each image goes), then ``Options:`` and one lettered line per option
  when ``extra_info.options`` is non-empty; the teacher turn is this one user message;
- ``student_prompt``: the student's whole last user turn (earlier turns kept as they are).

Images stay at their placeholders; the response token ids ``y`` are appended unchanged, so
``teacher_input_ids[-len(y):] == y`` always. Pixel values are reused as they are (the student's
``multi_modal_inputs`` dict is passed through, never recomputed); each image placeholder is expanded
to ``prod(image_grid_thw[i]) / merge_size**2`` pad tokens, as the processor does. Qwen-VL position
ids (verl's layout: ``[4, L]`` = one text row ``0..L-1`` over the model's 3-row M-RoPE ids) are
recomputed for the teacher sequence with the model family's ``get_rope_index``.

Length: every hint text is cut to ``max_hint_length`` tokens (start kept, ``truncation_marker``
appended). When prompt + response still exceed ``max_length``, the hint texts are cut further; a row
that does not fit even with empty hints gets no teacher signal (``valid`` false, counted in
``teacher/rows_over_budget``); nothing here raises on a row's data.

Hints: ``answer`` (the answer as the data writes it, ``extra_info.raw_answer``, else the ground
truth; missing: no teacher signal, ``teacher/hint_missing``),
``reference`` (the trace in ``extra_info``; missing or empty: the ground truth instead,
``teacher/hint_fallback``), ``sibling`` (other responses of the same group, see :func:`pick_siblings`),
``shuffled`` (the control: another prompt's answer or reference of the same problem type, see
:func:`shuffle_hints`; counted in ``teacher/hint_shuffled``, ``teacher/shuffle_no_partner``).
"""

from __future__ import annotations

import copy
import dataclasses
import random
import re
import string
import types
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import torch

from verl_ext.privileged.config import TeacherConfig
from verl_ext.templating import compile_template, render

TEMPLATES_DIR = Path(__file__).parent / "templates"
_CONTEXT_SENTINEL = "\x00CONTEXT\x00"
_ESCAPE = "\x00"  # keeps a placeholder-like string inside a hint from becoming an image
_PLACEHOLDER = re.compile(r"(<image>|<video>)")
_LETTERS = string.ascii_uppercase


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
    over_budget: bool = False  # no fit even with empty hints: the student's own prompt, no signal
    context_fallback: bool = False  # context=question without a usable question: the student's turn


@dataclasses.dataclass
class HintResult:
    hints: list[str | None]  # the hint (sibling: the successful sibling's response; "" when none)
    valid: torch.Tensor  # [B] bool: False = no teacher signal
    sibling_index: list[int | None]  # sibling source row per row (sibling hints only)
    no_sibling: int = 0
    failed: list[str] | None = None  # shortest_pair: the failed sibling's response ("" when none)
    failed_index: list[int | None] | None = None
    hint_fallback: int = 0  # reference: missing/empty trace, the ground truth used instead
    hint_missing: int = 0  # neither hint nor fallback: no teacher signal
    shuffled_from: list[int | None] | None = None  # shuffled: the row whose hint each row got
    no_partner: int = 0  # shuffled: rows with no other prompt of their problem type in the batch
    shuffled_same_text: int = 0  # shuffled: rows whose borrowed hint reads the same as their own


def load_template(name_or_path: str):
    """A Jinja template: a built-in name (``teacher``, ``sdpo``) or a file path.

    Variables: ``question`` (alias ``prompt``; the context, see the module docstring), ``hint``,
    ``correct_solution`` (= ``hint``), ``incorrect_solution`` (shortest_pair siblings, else ""),
    ``format_instruction``. The context must appear exactly once; the released teacher templates
    (which render ``question`` and ``hint``) load unchanged.
    """
    path = Path(name_or_path)
    if not path.suffix and (TEMPLATES_DIR / f"{name_or_path}.jinja").is_file():
        path = TEMPLATES_DIR / f"{name_or_path}.jinja"
    if not path.is_file():
        raise FileNotFoundError(
            f"algorithm.teacher.template: no file {str(path)!r} (built-in templates: {', '.join(builtin_templates())})"
        )
    # as released: the file's text stripped, then rendered (in the sandbox: the file is untrusted)
    template = compile_template(path.read_text(encoding="utf-8").strip(), repr(str(path)))
    template.source_name = repr(str(path))
    # probed with hints and with empty ones (a row without a sibling renders the latter)
    for hint, failed in (("\x00HINT\x00", "\x00FAILED\x00"), ("", "")):
        if _render(template, _CONTEXT_SENTINEL, hint, failed, "").count(_CONTEXT_SENTINEL) != 1:
            raise ValueError(f"teacher template {str(path)!r} must render {{{{ question }}}} (or {{{{ prompt }}}}) "
                             f"exactly once{' also when the hint is empty' if not hint else ''}")
    return template


def _render(template, context: str, hint: str, failed: str, format_instruction: str) -> str:
    return render(
        template, getattr(template, "source_name", "teacher template"),
        question=context, prompt=context, hint=hint, correct_solution=hint, incorrect_solution=failed,
        format_instruction=format_instruction,
    )  # fmt: skip


def question_context(extra_info: dict | None) -> str | None:
    """``extra_info.question`` + lettered ``extra_info.options`` (the student template's layout), or None."""
    info = extra_info or {}
    question = info.get("question")
    if question is None or not str(question).strip():
        return None
    text = str(question).strip()
    opts = info.get("options")
    opts = [] if opts is None else [str(o) for o in list(opts)]
    if opts:
        text += "\n\nOptions:\n" + "\n".join(f"{_LETTERS[k]}. {o}" for k, o in enumerate(opts))
    return text


def _escape(text: str) -> str:
    return _PLACEHOLDER.sub(lambda m: "<" + _ESCAPE + m.group(0)[1:], text or "")


def _flatten_turn(content: Any) -> str:
    """A user turn's content as text with ``<image>``/``<video>`` placeholders."""
    if isinstance(content, str):
        return content
    parts = []
    for item in content or []:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind in ("image", "image_url"):
            parts.append("<image>")
        elif kind == "video":
            parts.append("<video>")
        elif kind == "text":
            parts.append(item.get("text", ""))
    return "".join(parts)


def _content_items(text: str) -> list[dict]:
    items = []
    for piece in _PLACEHOLDER.split(text):
        if piece in ("<image>", "<video>"):
            items.append({"type": piece[1:-1]})
        elif piece:
            items.append({"type": "text", "text": piece})
    return items


def _success(sample: StudentSample, threshold: float) -> bool:
    return float(sample.score) > threshold


def pick_siblings(
    samples: Sequence[StudentSample], config: TeacherConfig, step: int = 0
) -> tuple[list[int | None], int, list[int | None]]:
    """Sibling sources per row from the other members of its uid group (never itself, never padding).

    A success is ``score > config.success_threshold`` (released: reward score > 0). ``shortest_pair``
    (released SDPO): the shortest successful and the shortest failed sibling (lowest index on ties);
    the row has a teacher when either exists. ``shortest``/``random`` (seeded by ``(seed, step, uid,
    row)``): one successful sibling; no failed one. Returns ``(success, rows_without_any, failed)``.
    """
    groups: dict[Any, list[int]] = {}
    for i, s in enumerate(samples):
        if not s.is_padding:
            if s.uid is None:
                raise ValueError(f"row {i}: hint source 'sibling' needs the row's uid (group id)")
            if s.score is None:
                raise ValueError(f"row {i} (uid {s.uid}): hint source 'sibling' needs the row's reward score")
            groups.setdefault(s.uid, []).append(i)
    shortest = lambda idx: min(idx, key=lambda j: (len(samples[j].response_ids), j)) if idx else None  # noqa: E731
    good: list[int | None] = []
    bad: list[int | None] = []
    missing = 0
    for i, s in enumerate(samples):
        if s.is_padding:
            good.append(None)
            bad.append(None)
            continue
        others = [j for j in groups[s.uid] if j != i]
        wins = [j for j in others if _success(samples[j], config.success_threshold)]
        g = b = None
        if config.sibling_pick == "shortest_pair":
            g, b = shortest(wins), shortest([j for j in others if j not in wins])
        elif config.sibling_pick == "shortest":
            g = shortest(wins)
        elif wins:
            g = random.Random(f"{config.seed}:{step}:{s.uid}:{groups[s.uid].index(i)}").choice(wins)
        good.append(g)
        bad.append(b)
        missing += g is None and b is None
    return good, missing, bad


def shuffle_hints(
    samples: Sequence[StudentSample], hints: Sequence[str | None], seed: int, step: int, group: str = "problem_type"
) -> tuple[list[str | None], list[int | None], int, int]:
    """The control of ``hint=shuffled``: every prompt (uid) borrows the hint of one other prompt of the same
    ``extra_info[group]`` (default: problem type) in the batch, drawn uniformly (seeded by ``(seed, step, uid)``), so all responses of a group
    share one teacher, as with their own hint. Never the prompt's own; a prompt alone in its type gets none.

    Returns ``(hints, source row per row, rows without a partner, rows whose borrowed text equals their own)``.
    """
    def kind(sample: StudentSample) -> str:
        return str((sample.extra_info or {}).get(group) or "").strip().lower()

    first: dict[str, int] = {}  # uid -> a row of that prompt with a hint
    by_type: dict[str, list[str]] = {}
    for i, s in enumerate(samples):
        if s.is_padding or hints[i] is None:
            continue
        uid = s.uid if s.uid is not None else f"row{i}"
        if uid not in first:
            first[uid] = i
            by_type.setdefault(kind(s), []).append(uid)
    out: list[str | None] = []
    source: list[int | None] = []
    no_partner = same = 0
    for i, s in enumerate(samples):
        uid = s.uid if s.uid is not None else f"row{i}"
        if s.is_padding or uid not in first:
            out.append(None)
            source.append(None)
            continue
        others = sorted(u for u in by_type[kind(s)] if u != uid)
        if not others:
            no_partner += 1
            out.append(None)
            source.append(None)
            continue
        j = first[random.Random(f"{seed}:{step}:{uid}").choice(others)]
        out.append(hints[j])
        source.append(j)
        same += hints[j] == hints[i]
    return out, source, no_partner, same


def _bind_rope_index(processor):
    """The processor itself when it carries ``get_rope_index`` (verl's ``hf_processor`` binds the
    model's), a copy bound to the model family's function for a plain Qwen3-VL processor, else None
    for a processor without M-RoPE. Any other vision processor raises: never guess positions."""
    if processor is None or hasattr(processor, "get_rope_index"):
        return processor
    name = type(processor).__name__
    if name == "Qwen3VLProcessor":
        from transformers.models.qwen3_vl import Qwen3VLModel

        # Qwen3VLModel.get_rope_index reads only vision_config.spatial_merge_size from the config
        bound = copy.copy(processor)
        merge = int(processor.image_processor.merge_size)
        bound.config = types.SimpleNamespace(vision_config=types.SimpleNamespace(spatial_merge_size=merge))
        bound.get_rope_index = types.MethodType(Qwen3VLModel.get_rope_index, bound)
        bound.get_vision_position_ids = types.MethodType(Qwen3VLModel.get_vision_position_ids, bound)
        return bound
    if getattr(getattr(processor, "image_processor", None), "merge_size", None) is not None:
        raise ValueError(
            f"{name} has no get_rope_index: the teacher's M-RoPE position ids cannot be computed; load the "
            "processor with verl.utils.hf_processor (it binds the model's get_rope_index)"
        )
    return processor


class PrivilegedPromptBuilder:
    """Builds teacher inputs from student rows. ``tokenizer``/``processor`` are verl's (HF) ones.

    ``processor`` may be None for a text-only model. ``chat_template_kwargs``: verl's
    ``data.apply_chat_template_kwargs``, so the teacher's chat rendering matches the student's.
    """

    def __init__(self, tokenizer, processor, config: TeacherConfig, chat_template_kwargs: dict | None = None):
        self.tokenizer = tokenizer
        self.processor = _bind_rope_index(processor)
        self.config = config
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.template = load_template(config.template)
        processor = self.processor
        self._chat = processor if processor is not None and hasattr(processor, "apply_chat_template") else tokenizer
        self.image_token = getattr(processor, "image_token", None) if processor is not None else None
        self.video_token = getattr(processor, "video_token", None) if processor is not None else None
        ids = tokenizer.convert_tokens_to_ids
        self.image_token_id = ids(self.image_token) if self.image_token else None
        self.video_token_id = ids(self.video_token) if self.video_token else None
        image_processor = getattr(processor, "image_processor", None)
        self.merge_size = int(getattr(image_processor, "merge_size", 1) or 1)

    # ---------------------------------------------------------------- hints
    def _resolve_hint(self, sample: StudentSample, source: str | None = None) -> tuple[str | None, bool]:
        """``(hint text or None, fell back to the answer)`` of ``source`` (default: ``config.hint``)."""

        def text(value):
            if isinstance(value, (list, tuple)):
                value = ", ".join(str(v) for v in value)
            return None if value is None or not str(value).strip() else str(value)

        # the answer as written in the data (released: str(answer)); the reward's cleaned ground truth
        # only for rows converted without it
        raw = (sample.extra_info or {}).get("raw_answer")
        answer = text(raw) if text(raw) is not None else text(sample.ground_truth)
        if (source or self.config.hint) == "answer":
            return answer, False
        trace = text((sample.extra_info or {}).get(self.config.reference_field))
        return (trace, False) if trace is not None else (answer, answer is not None)

    def hints(self, samples: Sequence[StudentSample], step: int = 0) -> HintResult:
        """The hint text per row and whether the row gets a teacher signal."""
        valid = torch.ones(len(samples), dtype=torch.bool)
        if self.config.hint == "sibling":
            good, missing, bad = pick_siblings(samples, self.config, step)
            decode = lambda j: "" if j is None else self.tokenizer.decode(  # noqa: E731
                list(samples[j].response_ids), skip_special_tokens=True).strip()
            hints, failed = [], []
            for i, (g, b) in enumerate(zip(good, bad)):
                valid[i] = not samples[i].is_padding and (g is not None or b is not None)
                hints.append(decode(g) if valid[i] else None)
                failed.append(decode(b))
            return HintResult(hints, valid, good, missing, failed=failed, failed_index=bad)
        source = self.config.shuffle_source if self.config.hint == "shuffled" else None
        hints, fallback, missing = [], 0, 0
        for i, s in enumerate(samples):
            hint, fell_back = (None, False) if s.is_padding else self._resolve_hint(s, source)
            fallback += fell_back
            hints.append(hint)
        result = HintResult(hints, valid, [None] * len(samples), 0, hint_fallback=fallback)
        if self.config.hint == "shuffled":
            result.hints, result.shuffled_from, result.no_partner, result.shuffled_same_text = shuffle_hints(
                samples, hints, self.config.seed, step, self.config.shuffle_group)
        for i, s in enumerate(samples):
            if result.hints[i] is None:
                valid[i] = False
                result.hint_missing += not s.is_padding
        return result

    def _cut(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """``text`` cut to ``max_tokens`` tokens (start kept, marker appended); whether it was cut."""
        if not text:
            return text, False
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= max_tokens:
            return text, False
        if max_tokens <= 0:
            return "", True
        cut = self.tokenizer.decode(ids[:max_tokens], skip_special_tokens=True).strip()
        return cut + self.config.truncation_marker, True

    # ---------------------------------------------------------------- prompt
    def context(self, sample: StudentSample) -> tuple[str | None, list[dict]]:
        """``(context text with placeholders, messages before the teacher turn)``; None: not available."""
        if self.config.context == "question":
            return question_context(sample.extra_info), []
        return _student_context(sample)

    def teacher_messages(self, context: str, hint: str, failed: str = "", history: Sequence[dict] = ()) -> list[dict]:
        """``history`` + one user turn: the template rendered with the real context text (so a template
        may branch on it); only the context's ``<image>``/``<video>`` placeholders become image items."""
        text = _render(self.template, context, _escape(hint), _escape(failed), _escape(self.config.format_instruction))
        items = [
            {"type": it["type"], "text": it["text"].replace(_ESCAPE, "")} if it["type"] == "text" else it
            for it in _content_items(text)
        ]
        if all(it["type"] == "text" for it in items):
            items = "".join(it["text"] for it in items)
        return [*history, {"role": "user", "content": items}]

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

    @staticmethod
    def _placeholders_match(context: str, mm: dict) -> bool:
        def count(key):
            grid = mm.get(key)
            return 0 if grid is None else len(grid)

        return context.count("<image>") == count("image_grid_thw") and context.count("<video>") == count("video_grid_thw")

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

    def _row_position_ids(self, input_ids: torch.Tensor, prompt_len: int, mm: dict) -> torch.Tensor:
        """:meth:`position_ids`, computed once per distinct prompt in a batch. The first row of a prompt
        runs the model family's function; when its response positions are a plain text run
        (``start + 0..R-1`` on every M-RoPE row), later rows of that prompt reuse the prompt's ids and
        continue the run (responses holding image/video token ids always take the full path)."""
        memo = getattr(self, "_position_memo", None)
        if memo is None or self.processor is None or not hasattr(self.processor, "get_rope_index"):
            return self.position_ids(input_ids, mm)
        response = input_ids[prompt_len:]
        plain = self._plain_text(response)
        key = (tuple(input_ids[:prompt_len].tolist()), _grids(mm))
        if plain and key in memo:
            prompt_pos, start = memo[key]
            run = start.unsqueeze(1) + torch.arange(response.numel(), dtype=torch.long)
            vision = torch.cat([prompt_pos, run], dim=1)
            return torch.cat([torch.arange(input_ids.numel(), dtype=torch.long).unsqueeze(0), vision], dim=0)
        full = self.position_ids(input_ids, mm)
        if plain and response.numel() > 0:
            vision = full[1:]
            start = vision[:, prompt_len]
            run = start.unsqueeze(1) + torch.arange(response.numel(), dtype=torch.long)
            if torch.equal(vision[:, prompt_len:], run):
                memo[key] = (vision[:, :prompt_len].clone(), start.clone())
        return full

    def _plain_text(self, ids: torch.Tensor) -> bool:
        special = [t for t in (self.image_token_id, self.video_token_id) if t is not None]
        return not special or not bool(torch.isin(ids, torch.tensor(special)).any())

    # ---------------------------------------------------------------- build
    def _fit(self, context: str, history: list, hint: str, failed: str, budget: int | None, mm: dict):
        """Prompt ids with hints cut to ``max_hint_length`` and, if needed, further to fit ``budget``.

        Returns ``(prompt ids or None when even empty hints do not fit, hint cut?)``.
        """

        def attempt(limit):
            (h, cut_h), (f, cut_f) = self._cut(hint, limit), self._cut(failed, limit)
            return self.render_prompt_ids(self.teacher_messages(context, h, f, history), mm), cut_h or cut_f

        # the rows of a group share context and hint: render and tokenize once per batch
        key = (context, repr(history), hint, failed, _grids(mm))
        memo = getattr(self, "_prompt_memo", None)
        if memo is not None and key in memo:
            prompt, cut = memo[key]
        else:
            prompt, cut = attempt(int(self.config.max_hint_length))
            if memo is not None:
                memo[key] = (prompt, cut)
        if budget is None or len(prompt) <= budget:
            return prompt, cut
        if len(attempt(0)[0]) > budget:
            return None, True
        # the largest per-text token cap that fits (binary search; a handful of renders, rare rows only)
        lo, hi = 0, int(self.config.max_hint_length) - 1
        best = None
        while lo <= hi:
            mid = (lo + hi) // 2
            p, _ = attempt(mid)
            if len(p) <= budget:
                best, lo = p, mid + 1
            else:
                hi = mid - 1
        return best, True

    def build_one(self, sample: StudentSample, hint: str | None, row: int = 0, failed: str = "") -> TeacherSample:
        """Teacher inputs of one row; ``hint=None`` (or a padding row) reuses the student prompt."""
        response = torch.as_tensor(list(sample.response_ids), dtype=torch.long)
        mm = sample.multi_modal_inputs if sample.multi_modal_inputs is not None else {}
        truncated = over = fallback = False
        prompt = None
        if hint is not None and not sample.is_padding:
            context, history = self.context(sample)
            if context is None or not self._placeholders_match(context, mm):
                # e.g. data without extra_info.question: the student's own last turn as the context
                fallback = True
                context, history = _student_context(sample)
            budget = None if self.config.max_length is None else int(self.config.max_length) - len(response)
            prompt, truncated = self._fit(context, history, hint, failed or "", budget, mm)
            over = prompt is None
        if prompt is None:
            prompt = list(sample.prompt_ids)
        prompt_t = torch.as_tensor(prompt, dtype=torch.long)
        input_ids = torch.cat([prompt_t, response])
        return TeacherSample(
            prompt_ids=prompt_t,
            input_ids=input_ids,
            position_ids=self._row_position_ids(input_ids, prompt_t.numel(), mm),
            multi_modal_inputs=mm,
            hint_truncated=truncated and not over,
            over_budget=over,
            context_fallback=fallback,
        )

    def build(self, samples: Sequence[StudentSample], step: int = 0) -> tuple[list[TeacherSample], HintResult, dict]:
        """Teacher inputs for a batch, the hints used (``valid`` includes the over-budget rows) and metrics."""
        hint_result = self.hints(samples, step)
        failed = hint_result.failed or [""] * len(samples)
        self._prompt_memo, self._position_memo = {}, {}
        try:
            out = [self.build_one(s, h, i, f) for i, (s, h, f) in enumerate(zip(samples, hint_result.hints, failed))]
        finally:
            self._prompt_memo = self._position_memo = None
        for i, t in enumerate(out):
            if t.over_budget:
                hint_result.valid[i] = False
        metrics = {
            "teacher/hint_truncated": float(sum(t.hint_truncated for t in out)),
            "teacher/rows_over_budget": float(sum(t.over_budget for t in out)),
            "teacher/context_fallback": float(sum(t.context_fallback for t in out)),
            "teacher/hint_fallback": float(hint_result.hint_fallback),
            "teacher/hint_missing": float(hint_result.hint_missing),
            "teacher/no_sibling": float(hint_result.no_sibling),
            "teacher/hint_shuffled": float(sum(j is not None for j in hint_result.shuffled_from or [])),
            "teacher/shuffle_no_partner": float(hint_result.no_partner),
            "teacher/shuffle_same_text": float(hint_result.shuffled_same_text),
            "teacher/valid_frac": float(hint_result.valid.float().mean()) if len(samples) else 0.0,
            "teacher/prompt_length_mean": float(sum(len(t.prompt_ids) for t in out) / max(len(out), 1)),
        }
        return out, hint_result, metrics


def _grids(mm: dict | None) -> tuple:
    """The image/video grids of a row as a hashable key (rows with the same images share them)."""
    mm = mm or {}
    return tuple(
        None if mm.get(k) is None else tuple(map(tuple, torch.as_tensor(mm[k]).tolist()))
        for k in ("image_grid_thw", "video_grid_thw")
    )


def _student_context(sample: StudentSample) -> tuple[str, list[dict]]:
    """The student's last user turn as text with placeholders, and the turns before it."""
    messages = list(sample.messages)
    for k in range(len(messages) - 1, -1, -1):
        if messages[k].get("role") == "user":
            return _flatten_turn(messages[k].get("content")), messages[:k]
    return "", messages


@lru_cache(maxsize=None)
def builtin_templates() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in TEMPLATES_DIR.glob("*.jinja")))
