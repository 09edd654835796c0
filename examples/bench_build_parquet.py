#!/usr/bin/env python
"""Benchmark of data_prep/build_parquet.py: throughput and peak memory against row count.

Writes a source of N rows in the upstream training layout (parquet shards, one JPEG per row),
then converts the first 1,000 and all rows, each in a fresh subprocess, and prints rows/s and
the peak RSS (``ru_maxrss``) of that process before and after the conversion. Streaming means the
peak must not grow with the row count.

    python examples/bench_build_parquet.py [--rows 5000] [--side 256] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from data_prep.build_parquet import build, parse_args
args = parse_args(["train", "--source", {src!r}, "--out-dir", {out!r}, "--limit", "{n}", "--quiet"])
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
summary = build(args)
dt = time.perf_counter() - t0
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"rows": summary[0]["written"], "seconds": dt, "rss_before_kb": rss0, "rss_peak_kb": rss1}}))
"""


def write_source(path: Path, rows: int, side: int) -> int:
    """Upstream MMFineReason-like parquet (2 shards), random-noise JPEGs of side x side pixels."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    schema = pa.schema([("id", pa.string()), ("source", pa.string()), ("question", pa.string()),
                        ("answer", pa.string()), ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("qwen3vl_235b_thinking_response", pa.string())])
    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    total_bytes = 0
    per_shard = (rows + 1) // 2
    for shard in range(2):
        with pq.ParquetWriter(path / f"train-{shard:05d}-of-00002.parquet", schema) as w:
            lo, hi = shard * per_shard, min(rows, (shard + 1) * per_shard)
            for start in range(lo, hi, 100):
                batch = []
                for i in range(start, min(hi, start + 100)):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG", quality=80)
                    total_bytes += buf.tell()
                    batch.append({"id": f"b{i}", "source": "bench", "question": f"What is {i} + {i}? " * 8,
                                  "answer": str(2 * i), "image": {"bytes": buf.getvalue(), "path": None},
                                  "qwen3vl_235b_thinking_response": "<think>" + "step " * 400 + "</think>" + str(2 * i)})
                w.write_table(pa.Table.from_pylist(batch, schema=schema))
    return total_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--side", type=int, default=256, help="image side in pixels")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        src = Path(tmp) / "src"
        img_bytes = write_source(src, args.rows, args.side)
        print(f"source: {args.rows} rows, {args.side}x{args.side} JPEGs, {img_bytes / 2**20:.1f} MiB of images")
        results = []
        for n in (args.small, args.rows):
            code = CHILD.format(root=str(ROOT), src=str(src), out=str(Path(tmp) / f"out{n}"), n=n)
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            print(f"{r['rows']:>6} rows: {r['rows'] / r['seconds']:8.1f} rows/s  ({r['seconds']:.1f} s)   "
                  f"peak RSS {r['rss_peak_kb'] / 1024:7.1f} MiB   (after imports {r['rss_before_kb'] / 1024:7.1f} MiB, "
                  f"conversion adds {(r['rss_peak_kb'] - r['rss_before_kb']) / 1024:6.1f} MiB)")
        a, b = results
        print(f"peak RSS ratio {b['rows']} vs {a['rows']} rows: {b['rss_peak_kb'] / a['rss_peak_kb']:.3f} "
              f"(row count ratio {b['rows'] / a['rows']:.1f})")


if __name__ == "__main__":
    main()
