"""Reading the benchmark parquet files (the project's verl row contract) into evaluation samples.

Layout: ``DIR/<benchmark>/<split>.parquet``, or shards ``DIR/<benchmark>/<split>-00000.parquet`` ...
Every row is checked; a bad row raises an error naming the file, the row and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

IMAGE_PLACEHOLDER = "<image>"


@dataclass
class Sample:
    benchmark: str
    split: str
    uid: str  # "<split>:<extra_info.id>", unique within a benchmark
    index: int
    prompt: str  # the user message, one literal <image> per image
    images: list[bytes]
    ground_truth: str
    extra_info: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # "file:row", for error messages
    # per image, the (min_pixels, max_pixels) clamp written at conversion for the training loader
    image_clamps: list[tuple[int | None, int | None]] = field(default_factory=list)

    def scorer_keys(self) -> dict[str, Any]:
        """The per-row fields the aggregate metrics need (kept in the per-sample JSONL)."""
        e = self.extra_info
        return {
            "problem_type": e.get("problem_type"),
            "variant": e.get("variant"),
            "group_id": e.get("group_id"),
            "key": e.get("key"),
        }


def split_files(data_dir: str | Path, benchmark: str) -> dict[str, list[Path]]:
    """``{split: [files]}`` found under ``data_dir/benchmark`` (shards sorted)."""
    d = Path(data_dir) / benchmark
    if not d.is_dir():
        raise FileNotFoundError(f"no directory {d} for benchmark {benchmark!r} (expected {d}/<split>.parquet)")
    out: dict[str, list[Path]] = {}
    for f in sorted(d.glob("*.parquet")):
        m = re.fullmatch(r"(.+?)(?:-(\d{5}))?\.parquet", f.name)
        out.setdefault(m.group(1), []).append(f)
    return out


def choose_splits(data_dir: str | Path, benchmark: str, preferred: list[str]) -> dict[str, list[Path]]:
    """The splits to evaluate: for ZeroBench every preferred split present, otherwise the first one
    present; a directory holding a single split is used as is, but only for the default choice (a
    split the user named must be there)."""
    from verl_ext.eval.protocol import DEFAULT_SPLITS

    found = split_files(data_dir, benchmark)
    if not found:
        raise FileNotFoundError(f"no parquet files in {Path(data_dir) / benchmark}")
    present = [s for s in preferred if s in found]
    if benchmark == "zerobench" and present:
        return {s: found[s] for s in present}
    if present:
        return {present[0]: found[present[0]]}
    if len(found) == 1 and list(preferred) == DEFAULT_SPLITS.get(benchmark):
        return found
    raise FileNotFoundError(
        f"{Path(data_dir) / benchmark}: none of the splits {preferred} found (have {sorted(found)}); "
        f"choose one with --split {benchmark}=<split>"
    )


def _row_sample(benchmark: str, split: str, row: dict, where: str) -> Sample:
    def need(cond: bool, fld: str, why: str):
        if not cond:
            raise ValueError(f"{where}: field {fld!r} {why}")

    ds = row.get("data_source")
    need(ds == benchmark, "data_source", f"is {ds!r}, expected {benchmark!r}")
    prompt = row.get("prompt")
    need(isinstance(prompt, list) and len(prompt) > 0, "prompt", "must be a non-empty list of chat messages")
    users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    need(len(users) == 1 and isinstance(users[0].get("content"), str), "prompt", "needs one user message with string content")
    text = users[0]["content"]
    images = row.get("images") or []
    need(isinstance(images, list), "images", "must be a list of {'bytes': ...}")
    img_bytes, clamps = [], []
    for i, im in enumerate(images):
        b = im.get("bytes") if isinstance(im, dict) else None
        need(isinstance(b, (bytes, bytearray)) and len(b) > 0, f"images[{i}].bytes", "is missing or empty")
        img_bytes.append(bytes(b))
        clamps.append((im.get("min_pixels"), im.get("max_pixels")))
    n_ph = text.count(IMAGE_PLACEHOLDER)
    need(n_ph == len(img_bytes), "prompt", f"has {n_ph} {IMAGE_PLACEHOLDER} placeholders but the row has {len(img_bytes)} images")
    rm = row.get("reward_model") or {}
    gt = rm.get("ground_truth") if isinstance(rm, dict) else None
    need(gt is not None and str(gt).strip() != "", "reward_model.ground_truth", "is missing or empty")
    extra = row.get("extra_info") or {}
    need(isinstance(extra, dict), "extra_info", "must be a dict")
    rid = extra.get("id")
    need(rid is not None and str(rid) != "", "extra_info.id", "is missing")
    if benchmark == "wemath":
        need(extra.get("group_id") not in (None, ""), "extra_info.group_id", "is missing (needed for the group score)")
        need(extra.get("key") not in (None, ""), "extra_info.key", "is missing (needed for the group score)")
    return Sample(
        benchmark=benchmark,
        split=split,
        uid=f"{split}:{rid}",
        index=int(extra.get("index", -1) if extra.get("index") is not None else -1),
        prompt=text,
        images=img_bytes,
        ground_truth=str(gt),
        extra_info=dict(extra),
        source=where,
        image_clamps=clamps,
    )


def clamp_mismatch(benchmark: str, samples: list[Sample], min_pixels: int, max_pixels: int) -> str | None:
    """A warning when images carry a pixel clamp (written at conversion for the training loader)
    other than the protocol's, which is the one the evaluation applies; None when they agree."""
    other = sorted({c for s in samples for c in s.image_clamps if c != (None, None) and c != (min_pixels, max_pixels)},
                   key=str)
    if not other:
        return None
    shown = ", ".join(f"{lo}..{hi}" for lo, hi in other[:3])
    return (f"WARNING: {benchmark}: images carry the pixel clamp {shown} from conversion; the evaluation resizes "
            f"them into the protocol's {min_pixels}..{max_pixels} (--set min_pixels=... max_pixels=... to match)")


def load_benchmark(data_dir: str | Path, benchmark: str, preferred_splits: list[str]) -> tuple[list[Sample], dict[str, list[str]]]:
    """All samples of a benchmark, and ``{split: [file names]}`` that were read."""
    chosen = choose_splits(data_dir, benchmark, preferred_splits)
    samples: list[Sample] = []
    seen: dict[str, str] = {}
    for split, files in chosen.items():
        for f in files:
            for i, row in enumerate(pq.read_table(f).to_pylist()):
                where = f"{f} row {i}"
                s = _row_sample(benchmark, split, row, where)
                if s.uid in seen:
                    raise ValueError(f"{where}: field 'extra_info.id' {s.uid!r} repeats {seen[s.uid]}")
                seen[s.uid] = where
                samples.append(s)
    return samples, {s: [p.name for p in fs] for s, fs in chosen.items()}
