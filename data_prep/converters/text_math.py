"""Text math sets for text-only models (the student prompt asks for the final answer in ``\\boxed{}``):

- ``dapo`` (training): ``BytedTsinghua-SIA/DAPO-Math-17k``, ``data/dapo-math-17k.parquet`` as verl's DAPO
  recipe downloads it, already in verl's layout: ``data_source`` (``math_dapo``), ``prompt`` (one user turn:
  DAPO's "Answer:" instruction around the problem), ``ability``, ``reward_model.ground_truth``,
  ``extra_info.index`` (a uuid). 1,791,700 rows: each of the ~17.9k problems is repeated; a repeat (same
  problem and answer) is skipped and counted, the same problem with another answer is a bad row. The problem is
  taken out of DAPO's instruction, so the student prompt asks for ``\\boxed{}`` like the benchmarks'. No
  reference traces: OPSD's ``reference`` hint falls back to the answer (``teacher/hint_fallback``).
- ``math500`` (evaluation): ``HuggingFaceH4/MATH-500``, ``test`` (500): ``problem``, ``solution``, ``answer``,
  ``subject``, ``level``, ``unique_id``.
- ``aime24`` (evaluation): ``HuggingFaceH4/aime_2024``, ``train`` (30): ``id``, ``problem``, ``solution``,
  ``answer``, ``url``, ``year``; also ``Maxwell-Jia/AIME_2024`` (``ID``, ``Problem``, ``Answer``) and verl's
  ``BytedTsinghua-SIA/AIME-2024`` (DAPO's layout, each problem repeated: repeats skipped).
- ``aime25`` (evaluation): ``opencompass/AIME2025``, configs ``AIME2025-I`` and ``AIME2025-II`` (``test``, 15
  each: ``question``, ``answer``), written as one ``test`` split of 30.
"""

from __future__ import annotations

import pyarrow as pa

from data_prep.common import TEMPLATES_DIR, BadRow, Sample
from data_prep.converters.base import Converter, Job, need, register

BOXED_TEMPLATE = str(TEMPLATES_DIR / "boxed_prompt.jinja")
ANSWER_FORMAT = "boxed"  # extra_info.answer_format: what the reward extracts (verl_ext.reward)
DAPO_PREFIX = "Solve the following math problem step by step."
DAPO_SUFFIX = "\n\nRemember to put your answer on its own line after"


def dapo_problem(content: str) -> str:
    """The problem inside DAPO's prompt (its instruction paragraph before, its reminder after); a prompt
    without DAPO's instruction is returned as it is."""
    text = str(content)
    if text.startswith(DAPO_PREFIX) and "\n\n" in text:
        text = text.split("\n\n", 1)[1]
    cut = text.rfind(DAPO_SUFFIX)
    return (text[:cut] if cut >= 0 else text).strip()


def _verl_layout(raw: dict) -> tuple[str, str]:
    """(problem, ground truth) of a row already in verl's layout (``prompt`` + ``reward_model``)."""
    prompt = need(raw, "prompt")
    if not isinstance(prompt, (list, tuple)) or not prompt:
        raise BadRow("prompt", f"prompt is a {type(prompt).__name__}, not a non-empty list of chat messages")
    users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    if not users or not isinstance(users[-1].get("content"), str):
        raise BadRow("prompt", "no user message with text content")
    rm = need(raw, "reward_model")
    if not isinstance(rm, dict) or "ground_truth" not in rm:
        raise BadRow("reward_model", "reward_model has no ground_truth")
    return dapo_problem(users[-1]["content"]), rm["ground_truth"]


def _column(raw: dict, *names: str):
    """The first of ``names`` present (published copies differ in capitalisation); BadRow naming the first."""
    for n in names:
        if isinstance(raw, dict) and n in raw:
            return raw[n]
    return need(raw, names[0])


class TextMathConverter(Converter):
    ability = "math"
    text_only = True
    dedup_questions = True
    prompt_template = BOXED_TEMPLATE
    extra_fields = {"answer_format": pa.string(), "source": pa.string()}

    def sample(self, row_id, question, answer, source, **extra) -> Sample:
        return Sample(id=row_id, question=question, answer=answer, problem_type="math",
                      extra={"answer_format": ANSWER_FORMAT, "source": source, **extra})


@register
class DapoMathConverter(TextMathConverter):
    name = "dapo_math"
    hub_id = "BytedTsinghua-SIA/DAPO-Math-17k"
    expected_rows = {"train": 1791700}  # rows read (repeats included)

    def jobs(self, args):
        return [Job("train", "train")]

    def row_id(self, raw, pos, job):
        info = raw.get("extra_info") if isinstance(raw, dict) else None
        if isinstance(info, dict) and info.get("index") not in (None, ""):
            return str(info["index"])
        return super().row_id(raw, pos, job)

    def convert(self, raw, row_id, job):
        question, answer = _verl_layout(raw)
        return self.sample(row_id, question, answer, str(raw.get("data_source") or "math_dapo"))


@register
class Math500Converter(TextMathConverter):
    name = "math500"
    hub_id = "HuggingFaceH4/MATH-500"
    expected_rows = {"test": 500}
    id_columns = ("unique_id",)
    extra_fields = {**TextMathConverter.extra_fields, "subject": pa.string(), "level": pa.int64(),
                    "solution": pa.string()}

    def jobs(self, args):
        return [Job("test", "test")]

    def convert(self, raw, row_id, job):
        level = raw.get("level")
        try:
            level = None if level is None else int(level)
        except (TypeError, ValueError):
            raise BadRow("level", f"level {level!r} is not an integer") from None
        return self.sample(row_id, need(raw, "problem"), need(raw, "answer"), "math500",
                           subject=raw.get("subject"), level=level, solution=raw.get("solution"))


@register
class Aime24Converter(TextMathConverter):
    name = "aime24"
    hub_id = "HuggingFaceH4/aime_2024"
    expected_rows = {"test": 30}
    id_columns = ("id", "ID")

    def jobs(self, args):
        return [Job("test", "train")]  # the hub copy's only split is "train"; it is a test set

    def convert(self, raw, row_id, job):
        if isinstance(raw, dict) and "prompt" in raw and "reward_model" in raw:  # verl's AIME-2024 copy
            question, answer = _verl_layout(raw)
        else:
            question, answer = _column(raw, "problem", "Problem"), _column(raw, "answer", "Answer")
        return self.sample(row_id, question, answer, "aime24")


@register
class Aime25Converter(TextMathConverter):
    name = "aime25"
    hub_id = "opencompass/AIME2025"
    expected_rows = {"test": 30}

    def jobs(self, args):
        return [Job("test", "test", hub_configs=["AIME2025-I", "AIME2025-II"])]

    def row_id(self, raw, pos, job):
        return super().row_id(raw, pos, job) if isinstance(raw, dict) and raw.get("id") not in (None, "") \
            else f"aime25-{pos}"

    def convert(self, raw, row_id, job):
        return self.sample(row_id, _column(raw, "question", "problem"), need(raw, "answer"), "aime25")
