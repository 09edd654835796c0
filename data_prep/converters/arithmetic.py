"""A generated text set a tiny text model can learn in minutes on a CPU (the text CPU default and its tests).

Two tasks, answers in ``\\boxed{}`` as the text math sets ask (``boxed_prompt.jinja``):

- ``add``: "What is a + b?" with one-digit a, b -> a + b;
- ``larger``: "Which is larger, a or b?" with two different one-digit numbers -> the larger.

Every row carries a short correct reference trace (``3 + 4 = 7, so the answer is \\boxed{7}.``), used by the
text warm start and by OPSD's teacher. Deterministic in ``--seed``.
"""

from __future__ import annotations

import random

import pyarrow as pa

from data_prep.common import TRACE_FIELD, Sample
from data_prep.converters.base import Converter, Job, register
from data_prep.converters.text_math import ANSWER_FORMAT, BOXED_TEMPLATE
from data_prep.sources import RowStream

TRAIN_SIZE, TEST_SIZE = 2000, 64


def _add(rng):
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return f"What is {a} + {b}?", str(a + b), f"{a} + {b} = {a + b}, so the answer is \\boxed{{{a + b}}}."


def _larger(rng):
    a, b = rng.sample(range(10), 2)
    m = max(a, b)
    return f"Which is larger, {a} or {b}?", str(m), f"{m} is larger than {min(a, b)}, so the answer is \\boxed{{{m}}}."


TASKS = {"add": _add, "larger": _larger}


def generate(split: str, n: int, seed: int):
    """``n`` raw rows of ``split``, the tasks alternating; one ``random.Random`` seeded by (seed, split)."""
    rng = random.Random(f"arithmetic-{seed}-{split}")
    tasks = list(TASKS.items())
    for i in range(n):
        name, make = tasks[i % len(tasks)]
        q, answer, trace = make(rng)
        yield None, {"id": f"arithmetic-{split}-{i:05d}", "task": name, "question": q, "answer": answer,
                     TRACE_FIELD: trace}


@register
class ArithmeticConverter(Converter):
    name = "arithmetic"
    hub_id = ""
    ability = "math"
    with_trace = True
    text_only = True
    extra_fields = {"task": pa.string(), "answer_format": pa.string()}
    prompt_template = BOXED_TEMPLATE

    def jobs(self, args):
        return [Job("train", "train"), Job("test", "test")]

    def stream(self, source, job, args):
        n = getattr(args, f"arithmetic_{job.split}_size", None)
        n = (TRAIN_SIZE if job.split == "train" else TEST_SIZE) if n is None else n
        seed = getattr(args, "seed", 0)
        return RowStream(lambda: generate(job.split, n, seed), n, f"generated (seed {seed})")

    def convert(self, raw, row_id, job):
        return Sample(id=row_id, question=raw["question"], answer=raw["answer"], problem_type="math",
                      trace=raw[TRACE_FIELD], extra={"task": raw["task"], "answer_format": ANSWER_FORMAT})
