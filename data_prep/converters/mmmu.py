"""MMMU (``MMMU/MMMU``, 30 subject configs, ``validation``): ``<image k>`` placeholders in the
question and options, ``image_1``..``image_7``, options as a Python list literal string."""

from __future__ import annotations

import ast

import pyarrow as pa

from data_prep.common import BadRow, Sample
from data_prep.converters.base import Converter, Job, need, numbered_to_placeholders, register

SUBJECTS = [
    "Accounting", "Agriculture", "Architecture_and_Engineering", "Art", "Art_Theory",
    "Basic_Medical_Science", "Biology", "Chemistry", "Clinical_Medicine", "Computer_Science",
    "Design", "Diagnostics_and_Laboratory_Medicine", "Economics", "Electronics", "Energy_and_Power",
    "Finance", "Geography", "History", "Literature", "Manage", "Marketing", "Materials", "Math",
    "Mechanical_Engineering", "Music", "Pharmacy", "Physics", "Psychology", "Public_Health", "Sociology",
]
TYPES = {"multiple-choice": "multiple choice", "open": "open"}


@register
class MMMUConverter(Converter):
    name = "mmmu"
    hub_id = "MMMU/MMMU"
    expected_rows = {"validation": 900}
    ability = "multidisciplinary"
    extra_fields = {"question_type": pa.string(), "subfield": pa.string()}

    def jobs(self, args):
        return [Job("validation", "validation", SUBJECTS)]

    def convert(self, raw, row_id, job):
        qtype = need(raw, "question_type")
        if qtype not in TYPES:
            raise BadRow("question_type", f"unknown question type {qtype!r} (expected {sorted(TYPES)})")
        opts_raw = raw.get("options")
        options: list[str] = []
        if opts_raw not in (None, "", "[]"):
            try:
                options = ast.literal_eval(opts_raw) if isinstance(opts_raw, str) else list(opts_raw)
            except (ValueError, SyntaxError):
                raise BadRow("options", f"options is not a Python list literal: {str(opts_raw)[:80]!r}") from None
            if not isinstance(options, list):
                raise BadRow("options", f"options is a {type(options).__name__}, not a list")
        # a reference to a null image column is reported against that column by build_row; as in
        # MMMU's own evaluation, only referenced images are shown
        available = {k: f"image_{k}" for k in range(1, 8) if f"image_{k}" in raw}
        texts, order = numbered_to_placeholders([need(raw, "question")] + [str(o) for o in options], available)
        question, options = texts[0], texts[1:]
        images = [(name, raw.get(name)) for name in order]
        ptype = TYPES[qtype]
        return Sample(id=row_id, question=question, answer=need(raw, "answer"),
                      problem_type=ptype, options=options if ptype == "multiple choice" else [],
                      images=images,
                      extra={"question_type": qtype, "subfield": raw.get("subfield")})
