"""Streaming readers for a dataset source: a local copy (a ``datasets.save_to_disk`` directory,
parquet files, JSON/JSONL files, or a directory of those) or a hub id (``datasets`` streaming).

Every reader yields plain dicts with images left undecoded (``{"bytes", "path"}`` structs), a
batch of at most ``BATCH_ROWS`` rows in memory at a time.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

BATCH_ROWS = 64


class SourceError(Exception):
    """The source cannot be read at all (not a row problem)."""


@dataclass
class RowStream:
    """Rows of one split: ``rows()`` yields ``(base_dir, row)``; ``total`` is the row count when
    known without reading the rows (used for progress and the held-out slice)."""

    rows: Callable[[], Iterator[tuple[str | None, dict]]]
    total: int | None
    description: str


def _is_saved_dataset(d: Path) -> bool:
    return (d / "dataset_dict.json").is_file() or (d / "state.json").is_file()


def _split_token(split: str) -> re.Pattern:
    # "_" may precede but not follow: "zerobench" must not match "zerobench_subquestions-0.parquet"
    return re.compile(rf"(^|[/\\_.\-]){re.escape(split)}([/\\.\-]|$)")


def _pick_split(paths: list[Path], root: Path, split: str | None) -> list[Path]:
    """Of several files, those whose relative path names ``split`` (``testmini-0000.parquet``,
    ``validation/x.parquet``); all of them when none does."""
    if split is None or len(paths) <= 1:
        return paths
    rx = _split_token(split)
    hits = [p for p in paths if rx.search(str(p.relative_to(root)))]
    return hits or paths


def _parquet_rows(files: list[Path]):
    import pyarrow.parquet as pq

    def gen():
        for f in files:
            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(batch_size=BATCH_ROWS):
                for row in batch.to_pylist():
                    yield str(f.parent), row
    return gen


def _json_rows(files: list[Path]):
    def gen():
        for f in files:
            if f.suffix == ".jsonl":
                with open(f, encoding="utf-8") as fh:
                    for n, line in enumerate(fh, 1):
                        if not line.strip():
                            continue
                        try:
                            yield str(f.parent), json.loads(line)
                        except json.JSONDecodeError as e:
                            raise SourceError(f"{f}: line {n} is not valid JSON ({e})") from None
            else:
                with open(f, encoding="utf-8") as fh:
                    data = json.load(fh)
                if isinstance(data, dict) and isinstance(data.get("data"), list):
                    data = data["data"]
                if not isinstance(data, list):
                    raise SourceError(f"{f}: expected a JSON list of rows")
                for row in data:
                    yield str(f.parent), row
    return gen


def _json_count(files: list[Path]) -> int | None:
    n = 0
    for f in files:
        if f.suffix != ".jsonl":
            return None
        with open(f, encoding="utf-8") as fh:
            n += sum(1 for line in fh if line.strip())
    return n


def _saved_rows(dirs: list[Path], split: str | None):
    import datasets

    def load(d: Path):
        ds = datasets.load_from_disk(str(d))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise SourceError(f"{d}: no split {split!r} (has {sorted(ds)})")
            ds = ds[split]
        return ds

    def gen():
        for d in dirs:
            ds = load(d)
            # arrow format: no image decoding, rows come as the stored {"bytes", "path"} structs
            for table in ds.with_format("arrow").iter(batch_size=BATCH_ROWS):
                for row in table.to_pylist():
                    yield str(d), row
    total = sum(len(load(d)) for d in dirs)
    return gen, total


def open_local(path: str | os.PathLike, split: str | None) -> RowStream:
    """Rows of ``split`` from a local copy (layouts in the module docstring). Files are read in
    sorted path order, so the row order is stable."""
    root = Path(path)
    if not root.exists():
        raise SourceError(f"local source {root} does not exist")
    if root.is_file():
        files = [root]
    elif _is_saved_dataset(root):
        gen, total = _saved_rows([root], split)
        return RowStream(gen, total, f"saved dataset {root}")
    else:
        saved = sorted(p.parent for p in root.rglob("state.json")) + sorted(
            p.parent for p in root.rglob("dataset_dict.json"))
        saved = sorted(set(d for d in saved if not any(d != o and o in d.parents for o in saved)))
        if saved:
            gen, total = _saved_rows(saved, split)
            return RowStream(gen, total, f"{len(saved)} saved dataset(s) under {root}")
        files = sorted(p for p in root.rglob("*") if p.suffix in (".parquet", ".jsonl", ".json")
                       and p.is_file() and not p.name.startswith("."))
    parquet = _pick_split([f for f in files if f.suffix == ".parquet"], root, split)
    if parquet:
        import pyarrow.parquet as pq

        total = sum(pq.ParquetFile(f).metadata.num_rows for f in parquet)
        return RowStream(_parquet_rows(parquet), total, f"{len(parquet)} parquet file(s) at {root}")
    js = _pick_split([f for f in files if f.suffix in (".json", ".jsonl")], root, split)
    if js:
        return RowStream(_json_rows(js), _json_count(js), f"{len(js)} JSON file(s) at {root}")
    raise SourceError(f"{root}: no saved dataset, parquet, JSON or JSONL files found")


def open_hub(repo_id: str, split: str, configs: list[str | None] | None = None) -> RowStream:
    """Rows of ``split`` of a hub dataset (each of ``configs`` in turn), streamed by ``datasets``
    with image decoding off. Fails with a clear message when the hub cannot be reached."""
    import datasets

    configs = configs or [None]
    streams = []
    try:
        for cfg in configs:
            ds = datasets.load_dataset(repo_id, cfg, split=split, streaming=True)
            if hasattr(ds, "decode"):
                ds = ds.decode(False)
            streams.append(ds)
    except Exception as e:
        raise SourceError(
            f"could not load {repo_id!r} (split {split!r}) from the Hugging Face hub: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
            "If the hub is unreachable, download a copy elsewhere and pass its local path "
            "(save_to_disk directory, parquet or JSON/JSONL files) as the source."
        ) from None
    total = 0
    for ds in streams:
        n = None
        try:
            n = ds.info.splits[split].num_examples
        except Exception:
            pass
        total = None if (n is None or total is None) else total + n

    def gen():
        for ds in streams:
            for row in ds:
                yield None, row
    return RowStream(gen, total or None, f"hub {repo_id}")


def open_source(source: str, split: str, hub_configs: list[str | None] | None = None) -> RowStream:
    """A local path when ``source`` exists on disk, otherwise a hub id."""
    if os.path.exists(source):
        return open_local(source, split)
    if source.startswith((".", "/", "~")) or source.endswith((".parquet", ".json", ".jsonl")):
        raise SourceError(f"local source {source} does not exist")
    return open_hub(source, split, hub_configs)
