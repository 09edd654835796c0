#!/usr/bin/env python
"""Benchmark of data_prep/build_parquet.py on the training set's release layout: throughput and peak
memory against row count, with the paper's pixel clamp on (the default).

Writes a release-shaped folder (``MMFineReason_data_with_conclusion.json``, a JSON list of rows with
a ~2 KB reference trace each, and ``MMFineReason_images/`` with a pool of diagram-like images of
mixed sizes: below, inside and above 262144..1048576 pixels, so rows are upscaled, kept and
downscaled), then converts the first ``--small`` rows and all ``--rows`` rows, each in a fresh
subprocess, and prints rows/s and the peak RSS (``ru_maxrss``) of that process. Streaming means the
peak must not grow with the row count; the time for the released 123K rows is extrapolated from
the rate. Rows reuse the pool's image files (disk stays small), but every row's image is read,
decoded, clamped and encoded on its own, as in a real run.

    python examples/bench_build_parquet.py [--rows 4000] [--small 1000] [--pool 48] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE_ROWS = 123_000

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from data_prep.build_parquet import build, parse_args
args = parse_args(["train", "--source", {src!r}, "--out-dir", {out!r}, "--limit", "{n}", "--quiet"])
ru = resource.getrusage(resource.RUSAGE_SELF)
rss0, cpu0 = ru.ru_maxrss, ru.ru_utime + ru.ru_stime
t0 = time.perf_counter()
summary = build(args)
dt = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
rss1, cpu = ru.ru_maxrss, ru.ru_utime + ru.ru_stime - cpu0
rec = summary[0]
print(json.dumps({{"rows": rec["written"], "rejected": rec["rejected"], "seconds": dt, "cpu_seconds": cpu, "rss_before_kb": rss0,
                   "rss_peak_kb": rss1, "clamp": [rec["min_pixels"], rec["max_pixels"]]}}))
"""

# (width, height): below the clamp (upscaled), inside it (kept), above it (downscaled)
SIZES = [(320, 240), (448, 336), (512, 384), (800, 600), (1024, 768), (1600, 1200), (2048, 1536)]


def write_images(folder: Path, pool: int) -> list[str]:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(pool):
        w, h = SIZES[i % len(SIZES)]
        img = Image.new("RGB", (w, h), (255, 255, 255))
        d = ImageDraw.Draw(img)
        for k in range(12):  # a diagram: lines, shapes and labels on white
            x0, y0 = (37 * (i + k) * 13) % w, (53 * (i + 2 * k) * 7) % h
            d.line([(x0, y0), ((x0 + w // 3) % w, (y0 + h // 4) % h)], fill=(20 * k % 255, 0, 120), width=3)
            d.ellipse([x0 // 2, y0 // 2, x0 // 2 + 40, y0 // 2 + 40], outline=(0, 90, 30 * k % 255), width=2)
            d.text((x0 // 3 + 5, y0 // 3 + 5), f"P{k} = {i * k}", fill=(0, 0, 0))
        name = f"img_{i:04d}." + ("jpg" if i % 3 == 0 else "png")
        img.save(folder / name, quality=90) if name.endswith("jpg") else img.save(folder / name)
        names.append(f"MMFineReason_images/{name}")
    return names


def write_release(src: Path, rows: int, pool: int) -> None:
    images = write_images(src / "MMFineReason_images", pool)
    trace = "<think>" + "Consider the triangle and the marked angle; " * 48 + "</think>"
    types = ["math", "multiple choice", "numerical", "open-ended", "math", "math"]
    with open(src / "MMFineReason_data_with_conclusion.json", "w") as f:
        f.write("[\n")
        for i in range(rows):
            ptype = types[i % len(types)]
            problem = f"<image>In the figure, point P{i % 12} lies on the circle. Find the measure of angle {i}."
            answer = str(i % 90)
            if ptype == "multiple choice":
                problem += "\nA. 30\nB. 45\nC. 60\nD. 90"
                answer = "ABCD"[i % 4]
            row = {"problem_id": i, "problem": problem, "answer": answer, "images": [images[i % len(images)]],
                   "problem_type": ptype, "qwen3vl_235b_thinking_response": trace + answer}
            f.write(("," if i else "") + json.dumps(row) + "\n")
        f.write("]\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--pool", type=int, default=48, help="distinct image files the rows cycle through")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        src = Path(tmp) / "release"
        write_release(src, args.rows, args.pool)
        mb = (src / "MMFineReason_data_with_conclusion.json").stat().st_size / 2**20
        print(f"source: {args.rows} rows ({mb:.1f} MiB JSON list), {args.pool} images of sizes {SIZES}")
        results = []
        for n in (args.small, args.rows):
            out_dir = Path(tmp) / f"out{n}"
            code = CHILD.format(root=str(ROOT), src=str(src), out=str(out_dir), n=n)
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            size = sum(p.stat().st_size for p in out_dir.rglob("*.parquet")) / 2**20
            results.append(r)
            print(f"{r['rows']:>7} rows: {r['rows'] / r['seconds']:8.1f} rows/s  ({r['seconds']:.1f} s, "
                  f"{r['rows'] / r['cpu_seconds']:.1f} rows per CPU second)   "
                  f"peak RSS {r['rss_peak_kb'] / 1024:7.1f} MiB (after imports {r['rss_before_kb'] / 1024:7.1f})   "
                  f"parquet {size:8.1f} MiB   clamp {r['clamp']}")
        a, b = results
        rate, cpu_rate = b["rows"] / b["seconds"], b["rows"] / b["cpu_seconds"]
        print(f"peak RSS ratio {b['rows']} vs {a['rows']} rows: {b['rss_peak_kb'] / a['rss_peak_kb']:.3f} "
              f"(row count ratio {b['rows'] / a['rows']:.1f})")
        print(f"extrapolated: {RELEASE_ROWS} rows in {RELEASE_ROWS / rate / 60:.1f} min at {rate:.1f} rows/s "
              f"(wall clock here); {RELEASE_ROWS / cpu_rate / 60:.1f} min of one core at {cpu_rate:.1f} rows per CPU second")


if __name__ == "__main__":
    main()
