"""ZeroBench (``jonathan-roberts1/zerobench``): split ``zerobench_subquestions`` (334 rows) or, with
``--zerobench-variant main``, ``zerobench`` (100 rows); ``question_images_decoded`` is a list."""

from __future__ import annotations

import pyarrow as pa

from data_prep.common import Sample
from data_prep.converters.base import Converter, Job, need, register

SPLITS = {"subquestions": "zerobench_subquestions", "main": "zerobench"}


@register
class ZeroBenchConverter(Converter):
    name = "zerobench"
    hub_id = "jonathan-roberts1/zerobench"
    expected_rows = {"zerobench": 100, "zerobench_subquestions": 334}
    ability = "visual_reasoning"
    id_columns = ("question_id",)
    extra_fields = {"question_id": pa.string(), "variant": pa.string()}

    def jobs(self, args):
        variant = getattr(args, "zerobench_variant", "subquestions") or "subquestions"
        return [Job(SPLITS[variant], SPLITS[variant])]

    def convert(self, raw, row_id, job):
        imgs = need(raw, "question_images_decoded")
        imgs = [] if imgs is None else list(imgs) if isinstance(imgs, (list, tuple)) else [imgs]
        variant = "main" if job.split == "zerobench" else "subquestions"
        return Sample(id=row_id, question=need(raw, "question_text"), answer=need(raw, "question_answer"),
                      problem_type="open",
                      images=[(f"question_images_decoded[{i}]", v) for i, v in enumerate(imgs)],
                      prepend_images=True,
                      extra={"question_id": str(raw.get("question_id")), "variant": variant})
