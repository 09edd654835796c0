"""Atomic, streaming parquet output: rows are buffered into row groups and written to hidden
temporary files; only a completed split is renamed (``os.replace``) to its final name, so an
interrupted run never leaves a file that looks finished."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 64
ROW_GROUP_BYTES = 32 << 20


def _approx_size(row: dict) -> int:
    return sum(len(im["bytes"]) for im in row["images"]) + len(row["prompt"][0]["content"]) + 512


class SplitWriter:
    """Writes ``<dir>/<split>.parquet``, or ``<dir>/<split>-00000.parquet``, ... when more than
    ``shard_size`` rows arrive. Use as a context manager: an exception removes the temporaries."""

    def __init__(self, out_dir: str | os.PathLike, split: str, schema: pa.Schema,
                 shard_size: int | None = None, row_group_rows: int = ROW_GROUP_ROWS):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.split, self.schema = split, schema
        self.shard_size = shard_size if shard_size and shard_size > 0 else None
        self.row_group_rows = row_group_rows
        self.rows = 0
        self._buf: list[dict] = []
        self._buf_bytes = 0
        self._temps: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_shard = 0

    def _tmp(self, k: int) -> Path:
        return self.dir / f".{self.split}-{k:05d}.parquet.tmp-{os.getpid()}"

    def _open_shard(self) -> None:
        path = self._tmp(len(self._temps))
        self._temps.append(path)
        self._writer = pq.ParquetWriter(path, self.schema, compression="snappy")
        self._rows_in_shard = 0

    def _flush(self) -> None:
        if not self._buf:
            return
        table = pa.Table.from_pylist(self._buf, schema=self.schema)
        self._writer.write_table(table, row_group_size=len(self._buf))
        self._buf, self._buf_bytes = [], 0

    def add(self, row: dict) -> None:
        if self.shard_size and self._rows_in_shard >= self.shard_size:
            self._flush()
            self._writer.close()
            self._writer = None
        if self._writer is None:
            self._open_shard()
        self._buf.append(row)
        self._buf_bytes += _approx_size(row)
        self._rows_in_shard += 1
        self.rows += 1
        if len(self._buf) >= self.row_group_rows or self._buf_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _final_names(self) -> list[Path]:
        if len(self._temps) <= 1:
            return [self.dir / f"{self.split}.parquet"]
        return [self.dir / f"{self.split}-{k:05d}.parquet" for k in range(len(self._temps))]

    def commit(self) -> list[Path]:
        """Finish: flush, close, rename the temporaries, remove this split's files from an
        earlier run that this run did not produce. Returns the final paths."""
        if self._writer is None and not self._temps:
            self._open_shard()  # no rows at all: still write a valid empty file
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        finals = self._final_names()
        stale = re.compile(rf"^{re.escape(self.split)}(-\d{{5}})?\.parquet$")
        for old in self.dir.iterdir():
            if stale.match(old.name) and old not in finals:
                old.unlink()
        for tmp, final in zip(self._temps, finals):
            os.replace(tmp, final)
        self._temps = []
        return finals

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:
                pass
            self._writer = None
        for tmp in self._temps:
            tmp.unlink(missing_ok=True)
        self._temps = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


class RejectLog:
    """``<dir>/<split>.rejects.jsonl``: one JSON line per rejected row (dataset, split, row id,
    field, reason); written atomically like the parquet, removed when a run rejects nothing."""

    def __init__(self, out_dir: str | os.PathLike, split: str):
        self.final = Path(out_dir) / f"{split}.rejects.jsonl"
        self.tmp = Path(out_dir) / f".{split}.rejects.jsonl.tmp-{os.getpid()}"
        self.count = 0
        self.reasons: dict[str, int] = {}
        self._fh = None

    def add(self, err) -> None:
        if self._fh is None:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.tmp, "w", encoding="utf-8")
        rec = {"dataset": err.dataset, "split": err.split, "row_id": err.row_id, "field": err.field,
               "reason": err.reason}
        self._fh.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
        self.count += 1
        key = f"{err.field}: {_reason_kind(err.reason)}"
        self.reasons[key] = self.reasons.get(key, 0) + 1

    def commit(self) -> Path | None:
        if self._fh is None:
            self.final.unlink(missing_ok=True)
            return None
        self._fh.close()
        self._fh = None
        os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.tmp.unlink(missing_ok=True)


def _reason_kind(reason: str) -> str:
    """The reason without row-specific detail (for the summary's counts)."""
    return re.split(r" \(|: |'|\"", reason, maxsplit=1)[0].strip()
