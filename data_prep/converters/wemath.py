"""WeMath (``We-Math/We-Math``, ``testmini``): all multiple choice; ``option`` is one string
``"A. ...; B. ..."``; ``ID`` (the problem group), ``key`` (step role), ``image_path`` (an image)."""

from __future__ import annotations

import re

import pyarrow as pa

from data_prep.common import BadRow, Sample
from data_prep.converters.base import Converter, Job, need, register

_OPTION_START = re.compile(r"(?:^|;\s*)([A-H])[.．:：]\s*")


def split_options(text: str) -> list[str]:
    """``"A. 3 cm; B. 4 cm"`` -> ``["3 cm", "4 cm"]`` (letters must run A, B, C, ... in order)."""
    marks = list(_OPTION_START.finditer(text or ""))
    letters = [m.group(1) for m in marks]
    if not marks or letters != [chr(65 + i) for i in range(len(marks))]:
        raise BadRow("option", f"cannot split options {str(text)[:80]!r} into 'A. ...; B. ...'")
    out = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out.append(text[m.end():end].strip().rstrip(";").strip())
    return out


@register
class WeMathConverter(Converter):
    name = "wemath"
    hub_id = "We-Math/We-Math"
    expected_rows = {"testmini": 1740}  # 525 question groups
    ability = "math"
    extra_fields = {"group_id": pa.string(), "key": pa.string()}

    def jobs(self, args):
        return [Job("testmini", "testmini")]

    def row_id(self, raw, pos, job):
        # ID names the group (several rows share it); key tells them apart
        if isinstance(raw, dict) and raw.get("ID") is not None:
            return f"{raw['ID']}/{raw.get('key')}"
        return f"{job.split}-{pos}"

    def convert(self, raw, row_id, job):
        options = split_options(need(raw, "option"))
        return Sample(id=row_id, question=need(raw, "question"), answer=need(raw, "answer"),
                      problem_type="multiple choice", options=options,
                      images=[("image_path", raw.get("image_path"))], prepend_images=True,
                      extra={"group_id": str(need(raw, "ID")), "key": need(raw, "key")})
