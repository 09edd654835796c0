"""MathVista (``AI4Math/MathVista``, ``testmini``): ``decoded_image``, ``choices`` (multi_choice:
the answer is the option's text, stored here as its letter), ``precision``, ``unit``, ``answer_type``."""

from __future__ import annotations

import pyarrow as pa

from data_prep.common import BadRow, Sample
from data_prep.converters.base import Converter, Job, need, register


@register
class MathVistaConverter(Converter):
    name = "mathvista"
    hub_id = "AI4Math/MathVista"
    expected_rows = {"testmini": 1000}
    ability = "math"
    id_columns = ("pid",)
    extra_fields = {"precision": pa.float64(), "answer_type": pa.string(), "unit": pa.string(),
                    "question_type": pa.string()}

    def jobs(self, args):
        return [Job("testmini", "testmini")]

    def convert(self, raw, row_id, job):
        qtype = need(raw, "question_type")
        atype = raw.get("answer_type")
        answer = need(raw, "answer")
        choices = list(raw.get("choices") or [])
        if qtype == "multi_choice":
            ptype = "multiple choice"
            texts = [str(c) for c in choices]
            if str(answer) in texts:  # the answer is an option's text: store its letter
                answer = chr(65 + texts.index(str(answer)))
            else:
                raise BadRow("answer", f"answer {answer!r} is not one of the choices {texts}")
        elif qtype == "free_form":
            ptype = "numerical" if atype in ("integer", "float") else "open"
            choices = []
        else:
            raise BadRow("question_type", f"unknown question type {qtype!r} (expected multi_choice or free_form)")
        precision = raw.get("precision")
        image = raw["decoded_image"] if raw.get("decoded_image") is not None else raw.get("image")
        return Sample(id=row_id, question=need(raw, "question"), answer=answer, problem_type=ptype,
                      options=[str(c) for c in choices], images=[("decoded_image", image)],
                      prepend_images=True,
                      extra={"precision": None if precision is None else float(precision),
                             "answer_type": atype, "unit": raw.get("unit") or "",
                             "question_type": qtype})
