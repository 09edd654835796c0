"""The converter interface: one subclass per dataset, registered by name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from data_prep.common import BadRow, Sample
from data_prep.sources import RowStream, open_source

REGISTRY: dict[str, "Converter"] = {}


def register(cls):
    REGISTRY[cls.name] = cls()
    return cls


@dataclass
class Job:
    """One output split: ``split`` names the file and ``extra_info.split``; ``source_split`` is the
    split read from the source; ``hub_configs`` the hub configs to concatenate (MMMU's subjects)."""

    split: str
    source_split: str
    hub_configs: list[str | None] | None = None
    source: str | None = None    # a file of its own (a release folder's validation file), else --source


class Converter:
    name: str = ""               # data_source of every row
    hub_id: str = ""             # default source
    ability: str = "math"
    extra_fields: dict[str, pa.DataType] = {}
    with_trace: bool = False     # rows carry the reference trace field
    id_columns: tuple[str, ...] = ("id",)
    prompt_template: str | None = None  # the student prompt when --prompt-template is not given (None: the default)
    text_only: bool = False      # a text set: rows without images are the norm, not counted as a note
    dedup_questions: bool = False  # repeats of a (question, answer) are skipped and counted (DAPO-Math-17k)

    def jobs(self, args) -> list[Job]:
        raise NotImplementedError

    expected_rows: dict[str, int] = {}  # published row count per output split (a check on local copies)

    def stream(self, source: str, job: Job, args) -> RowStream:
        return open_source(job.source or source, job.source_split, job.hub_configs)

    def row_id(self, raw: dict, pos: int, job: Job) -> str:
        for col in self.id_columns:
            v = raw.get(col) if isinstance(raw, dict) else None
            if v is not None and str(v) != "":
                return str(v)
        return f"{job.split}-{pos}"

    def convert(self, raw: dict, row_id: str, job: Job) -> Sample:
        raise NotImplementedError


def need(raw: dict, key: str) -> Any:
    """A required column; ``BadRow`` naming it when absent."""
    if not isinstance(raw, dict):
        raise BadRow("<row>", f"row is a {type(raw).__name__}, not a mapping")
    if key not in raw:
        raise BadRow(key, f"column {key!r} is missing (row has {sorted(raw)[:12]})")
    return raw[key]


_NUMBERED_IMAGE = re.compile(r"<image\s*(\d+)>")


def numbered_to_placeholders(texts: list[str], available: dict[int, str]) -> tuple[list[str], list[str]]:
    """Replace ``<image k>`` / ``<imagek>`` references in ``texts`` (in reading order) by ``<image>``;
    returns the new texts and, per placeholder, the field name of the image it stands for (an
    image referenced twice is listed twice, so each placeholder has its own image)."""
    order: list[str] = []
    out = []
    for text in texts:
        def sub(m):
            k = int(m.group(1))
            if k not in available:
                raise BadRow(f"image_{k}", f"text refers to <image {k}> but there is no such image column")
            order.append(available[k])
            return "<image>"
        out.append(_NUMBERED_IMAGE.sub(sub, text or ""))
    return out, order
