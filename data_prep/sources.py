"""Streaming readers for a dataset source: a local copy (a ``datasets.save_to_disk`` directory,
parquet files, JSON/JSONL files, or a directory of those) or a hub id (``datasets`` streaming).

Every reader yields plain dicts with images left undecoded (``{"bytes", "path"}`` structs), a
batch of at most ``BATCH_ROWS`` rows in memory at a time. A JSON file is streamed too: a list of rows
(or ``{"data": [...]}``) through ``ijson``, and JSON Lines content is read line by line whatever the
file is called. A JSON Lines line that is not UTF-8 or not JSON is yielded as a ``SourceRowError``
(the build names file and line, and ``--skip-bad`` rejects just that row).
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


class SourceRowError:
    """Stands in for a row of a JSON Lines file that cannot be decoded (``where``: file:line)."""

    def __init__(self, where: str, reason: str):
        self.where, self.reason = where, reason


@dataclass
class RowStream:
    """Rows of one split: ``rows()`` yields ``(base_dir, row)``; ``total`` is the row count when
    known without reading the rows (used for progress and the held-out slice); ``count()``, when
    given, finds it by streaming through the files once."""

    rows: Callable[[], Iterator[tuple[str | None, dict]]]
    total: int | None
    description: str
    count: Callable[[], int] | None = None


def _is_saved_dataset(d: Path) -> bool:
    return (d / "dataset_dict.json").is_file() or (d / "state.json").is_file()


def _split_token(split: str) -> re.Pattern:
    # "_" may precede but not follow: "zerobench" must not match "zerobench_subquestions-0.parquet"
    return re.compile(rf"(^|[/\\_.\-]){re.escape(split)}([/\\.\-]|$)")


# split names the published benchmarks use in their file names
KNOWN_SPLITS = ("train", "val", "validation", "dev", "test", "testmini", "zerobench", "zerobench_subquestions")


def _pick_split(paths: list[Path], root: Path, split: str | None) -> list[Path]:
    """Of the files of a folder, those whose relative path names ``split`` (``testmini-0000.parquet``,
    ``validation/x.parquet``); all of them when none names any split. SourceError when the files
    name only other splits: ``test.parquet`` must never be written out as ``testmini``."""
    if split is None or not paths or not root.is_dir():
        return paths
    rx = _split_token(split)
    hits = [p for p in paths if rx.search(str(p.relative_to(root)))]
    if hits:
        return hits
    others = sorted({name for name in KNOWN_SPLITS for p in paths
                     if _split_token(name).search(str(p.relative_to(root)))})
    if others:
        raise SourceError(f"{root}: no file for split {split!r} (the files are named for {', '.join(others)}); "
                          "pass the folder or file that holds it")
    return paths


def _parquet_rows(files: list[Path]):
    import pyarrow.parquet as pq

    def gen():
        for f in files:
            # pre_buffer would cache whole column chunks of the file: memory grows with its size
            pf = pq.ParquetFile(f, pre_buffer=False)
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, use_threads=False):
                for row in batch.to_pylist():
                    yield str(f.parent), row
    return gen


def _json_kind(f: Path) -> str:
    """``lines`` (JSON Lines, whatever the suffix), ``array`` (a list of rows) or ``data`` (an object
    whose ``data`` key holds the rows)."""
    if f.suffix == ".jsonl":
        return "lines"
    with open(f, "rb") as fh:
        head = fh.read(4096).lstrip()
        if head.startswith(b"\xef\xbb\xbf"):
            head = head[3:].lstrip()
        if head.startswith(b"["):
            return "array"
        if not head.startswith(b"{"):
            raise SourceError(f"{f}: neither a JSON list of rows nor JSON Lines (starts with {head[:20]!r})")
        fh.seek(0)
        first = fh.readline()
        try:
            obj = json.loads(first)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "data"  # one object spread over several lines
        rest = b""
        while not rest:
            line = fh.readline()
            if not line:
                break
            rest = line.strip()
    if rest or not (isinstance(obj, dict) and isinstance(obj.get("data"), list)):
        return "lines"
    return "data"


def _lines(f: Path):
    with open(f, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield SourceRowError(f"{f}:{n}", f"{f} line {n} is not UTF-8 text "
                                                 f"(byte 0x{raw[e.start]:02x} at column {e.start + 1})")
                continue
            try:
                yield json.loads(text)
            except json.JSONDecodeError as e:
                yield SourceRowError(f"{f}:{n}", f"{f} line {n} is not valid JSON ({e.msg} at column {e.colno})")


def _items(f: Path, kind: str):
    import ijson

    prefix = "item" if kind == "array" else "data.item"
    n = 0
    with open(f, "rb") as fh:
        try:
            for row in ijson.items(fh, prefix, use_float=True):
                n += 1
                yield row
        except (ijson.JSONError, UnicodeDecodeError, ValueError) as e:
            raise SourceError(f"{f}: not valid JSON after its row {n} ({type(e).__name__}: {e}); "
                              "fix the file, or write it as JSON Lines (one row per line) so that "
                              "--skip-bad can reject single bad rows") from None
    if n == 0 and kind == "data":
        raise SourceError(f"{f}: expected a JSON list of rows, an object with a 'data' list, or JSON Lines")


def _json_rows(files: list[Path]):
    def gen():
        for f in files:
            kind = _json_kind(f)
            rows = _lines(f) if kind == "lines" else _items(f, kind)
            for row in rows:
                yield str(f.parent), row
    return gen


def _json_count(files: list[Path]) -> int:
    """Rows of the files, by streaming through them (bounded memory)."""
    import ijson

    n = 0
    for f in files:
        kind = _json_kind(f)
        if kind == "lines":
            with open(f, "rb") as fh:
                n += sum(1 for line in fh if line.strip())
        else:
            with open(f, "rb") as fh:
                try:
                    n += sum(1 for _ in ijson.items(fh, "item" if kind == "array" else "data.item"))
                except (ijson.JSONError, UnicodeDecodeError, ValueError) as e:
                    raise SourceError(f"{f}: not valid JSON ({type(e).__name__}: {e})") from None
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
        return RowStream(_json_rows(js), None, f"{len(js)} JSON file(s) at {root}", count=lambda: _json_count(js))
    raise SourceError(f"{root}: no saved dataset, parquet, JSON or JSONL files found")


_VAL_NAME = re.compile(r"(^|[_\-.])(val|valid|validation|dev)([_\-.]|$)")
_TRAIN_NAME = re.compile(r"(^|[_\-.])train([_\-.]|$)")
_META_NAMES = {"dataset_info.json", "dataset_dict.json", "state.json"}


def json_split_files(path: str | os.PathLike) -> tuple[Path, Path | None] | None:
    """The training file and the validation file (or None) of a folder of JSON/JSONL files, e.g. the
    release (``MMFineReason_data_with_conclusion.json`` + ``vl_math_val_mini_data.json``) or
    ``train.jsonl`` + ``val.jsonl``. A file whose name has a ``val``/``valid``/``validation``/``dev``
    token is the validation file. None when ``path`` is not such a folder (a file, a saved dataset,
    parquet). SourceError, listing the candidates, when the files cannot be told apart."""
    root = Path(path)
    if not root.is_dir() or _is_saved_dataset(root):
        return None
    files = sorted(p for p in root.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file()
                   and not p.name.startswith(".") and p.name not in _META_NAMES)
    if not files or any(p.suffix == ".parquet" for p in root.rglob("*.parquet")):
        return None
    val = [f for f in files if _VAL_NAME.search(f.stem.lower())]
    train = [f for f in files if f not in val]
    named = [f for f in train if _TRAIN_NAME.search(f.stem.lower())]
    if len(train) > 1 and len(named) == 1:
        train = named
    rel = lambda fs: ", ".join(str(f.relative_to(root)) for f in fs)  # noqa: E731
    if len(train) != 1:
        raise SourceError(f"{root}: cannot tell which JSON file holds the training rows "
                          f"({rel(train) if train else 'none besides ' + rel(val)}); pass the file itself "
                          "as --source, or keep one training file (plus one validation file) in the folder")
    if len(val) > 1:
        raise SourceError(f"{root}: several validation files ({rel(val)}); keep one, or pass the training "
                          "file itself as --source")
    return train[0], (val[0] if val else None)


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
