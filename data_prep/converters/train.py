"""Training set: ``iieycx/rlsd-train-MMFineReason-123K`` (the paper's layout: ``problem`` with one
``<image>`` per image, ``answer``, ``images`` list of paths relative to the data folder, optional
``problem_type``/``options``/``problem_id``/``data_source``; multiple-choice options usually inside the
problem text) or upstream MMFineReason (``question``, ``answer``, single ``image``, ``source``, ``id``);
both keep ``qwen3vl_235b_thinking_response``.

A folder of JSON/JSONL files (the release: ``MMFineReason_data_with_conclusion.json`` and
``vl_math_val_mini_data.json``; or ``train.jsonl`` and ``val.jsonl``) gives the ``train`` split from
its training file and the ``val`` split from its validation file (``sources.json_split_files``)."""

from __future__ import annotations

import pyarrow as pa

from data_prep.common import TRACE_FIELD, BadRow, Sample
from data_prep.converters.base import Converter, Job, need, register
from data_prep.sources import SourceError, json_split_files


@register
class TrainConverter(Converter):
    name = "mmfinereason"
    hub_id = "iieycx/rlsd-train-MMFineReason-123K"
    ability = "math"
    with_trace = True
    extra_fields = {"source": pa.string()}
    id_columns = ("id", "problem_id", "uid", "idx")

    def jobs(self, args):
        source = getattr(args, "train_source", None) or self.hub_id
        files = json_split_files(source)
        if files is None:
            return [Job("train", "train")]
        train_file, val_file = files
        jobs = [Job("train", "train", source=str(train_file))]
        if val_file is not None:
            if getattr(args, "val_size", 0):
                raise SourceError(f"--val-size: {source} has its own validation file ({val_file.name}), which "
                                  "becomes the 'val' split; drop --val-size (or pass the training file "
                                  "itself as --source to hold out training rows instead)")
            jobs.append(Job("val", "val", source=str(val_file)))
        return jobs

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
        ptype = raw.get("problem_type")
        if ptype is None or not str(ptype).strip():
            # the paper's layout: the released reward grades a row without a type as open-ended
            ptype = "open" if prepend is False else ("multiple choice" if options else "math")
        trace = raw.get(TRACE_FIELD)
        # the released loader renders its template with the row's fields; HF datasets gives a row
        # without problem_type None there (the column exists in the file), not an undefined name
        fields = {**raw, "problem_type": raw.get("problem_type")} if not prepend else None
        return Sample(id=row_id, question=question, answer=need(raw, "answer"), problem_type=ptype,
                      options=options, images=images, trace=trace, prepend_images=prepend,
                      extra={"source": None if source is None else str(source)}, template_fields=fields)
