"""Training set: ``iieycx/rlsd-train-MMFineReason-123K`` (the paper's layout: ``problem`` with one
``<image>`` per image, ``answer``, ``images`` list, optional ``problem_type``/``options``/
``data_source``) or upstream MMFineReason (``question``, ``answer``, single ``image``, ``source``, ``id``);
both keep ``qwen3vl_235b_thinking_response``."""

from __future__ import annotations

import pyarrow as pa

from data_prep.common import TRACE_FIELD, BadRow, Sample
from data_prep.converters.base import Converter, Job, need, register


@register
class TrainConverter(Converter):
    name = "mmfinereason"
    hub_id = "iieycx/rlsd-train-MMFineReason-123K"
    ability = "math"
    with_trace = True
    extra_fields = {"source": pa.string()}
    id_columns = ("id", "uid", "idx")

    def jobs(self, args):
        return [Job("train", "train")]

    def convert(self, raw, row_id, job):
        if "problem" in raw:  # the paper's layout
            question = need(raw, "problem")
            imgs = raw.get("images")
            if imgs is None:
                imgs = []
            if not isinstance(imgs, (list, tuple)):
                imgs = [imgs]
            images = [(f"images[{i}]", v) for i, v in enumerate(imgs)]
            prepend = False
            source = raw.get("data_source") or raw.get("source")
        elif "question" in raw:  # upstream MMFineReason
            question = need(raw, "question")
            img = raw.get("image")
            if img is None and "images" in raw:
                images = [(f"images[{i}]", v) for i, v in enumerate(raw["images"] or [])]
            else:
                images = [("image", img)]
            prepend = True
            source = raw.get("source")
        else:
            raise BadRow("problem", "neither a 'problem' (paper layout) nor a 'question' (upstream "
                                    f"layout) column (row has {sorted(raw)[:12]})")
        options = raw.get("options") or []
        if isinstance(options, str):
            import ast

            try:
                options = ast.literal_eval(options)
            except (ValueError, SyntaxError):
                raise BadRow("options", f"options string is not a list literal: {options[:80]!r}") from None
        ptype = raw.get("problem_type") or ("multiple choice" if options else "math")
        trace = raw.get(TRACE_FIELD)
        return Sample(id=row_id, question=question, answer=need(raw, "answer"), problem_type=ptype,
                      options=list(options), images=images, trace=trace, prepend_images=prepend,
                      extra={"source": None if source is None else str(source)})
