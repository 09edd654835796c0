"""MathVision (``MathLLMs/MathVision``, ``test``; ``--mathvision-split testmini``): ``decoded_image``,
``options`` (empty for free-form), ``answer`` (letter for multiple choice), ``level``, ``subject``;
questions may carry ``<image1>``."""

from __future__ import annotations

import re

import pyarrow as pa

from data_prep.common import Sample
from data_prep.converters.base import Converter, Job, need, register

_REF = re.compile(r"<image\s*\d+>")


@register
class MathVisionConverter(Converter):
    name = "mathvision"
    hub_id = "MathLLMs/MathVision"
    expected_rows = {"test": 3040, "testmini": 304}
    ability = "math"
    extra_fields = {"level": pa.int64(), "subject": pa.string()}

    def jobs(self, args):
        split = getattr(args, "mathvision_split", "test") or "test"
        return [Job(split, split)]

    def convert(self, raw, row_id, job):
        options = [str(o) for o in (raw.get("options") or [])]
        question = _REF.sub("<image>", need(raw, "question"))
        level = raw.get("level")
        return Sample(id=row_id, question=question, answer=need(raw, "answer"),
                      problem_type="multiple choice" if options else "math", options=options,
                      images=[("decoded_image", raw.get("decoded_image"))], prepend_images=True,
                      extra={"level": None if level is None else int(level), "subject": raw.get("subject")})
