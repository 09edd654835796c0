#!/usr/bin/env python
"""Benchmark of data_prep/build_parquet.py on the training set's release layout: throughput and peak
memory against row count, with the paper's pixel clamp on (the default), in both image modes.

Writes a release-shaped folder (``MMFineReason_data_with_conclusion.json``, a JSON list of rows with
a ~2 KB reference trace each, and ``MMFineReason_images/`` with a pool of diagram-like images of
mixed sizes: below, inside and above 262144..1048576 pixels), then converts the first ``--small`` rows
and the first ``--rows`` rows, each in a fresh subprocess, in each mode:

- ``on_load`` (the default): images keep their bytes and carry the clamp, which the loader applies
  (as the released code does); conversion only checks that each image is whole;
- ``at_conversion`` (``--resize-images``): every image is decoded, resized into the clamp where it is
  outside it, and re-encoded as PNG (fewer rows by default, ``--resize-rows``/``--resize-small``:
  it is several times slower).

Prints rows/s (wall clock), CPU seconds per row (main process and its worker processes together),
peak RSS of the main process and of the largest worker (``ru_maxrss``; their sum bounds the total,
shared pages counted twice), and the time for the released 123K rows extrapolated from the larger
run. Streaming means the peaks must not grow with the row count. Rows reuse the pool's image files
(disk stays small), but every row's image is read and checked (or resized) on its own, as in a real run.

    python examples/bench_build_parquet.py [--rows 4000] [--small 1000] [--resize-rows 1200]
        [--resize-small 300] [--workers N] [--modes on_load,at_conversion] [--pool 48] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
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
args = parse_args(["train", "--source", {src!r}, "--out-dir", {out!r}, "--limit", "{n}", "--quiet", *{extra!r}])
ru = resource.getrusage(resource.RUSAGE_SELF)
rss0, cpu0 = ru.ru_maxrss, ru.ru_utime + ru.ru_stime
t0 = time.perf_counter()
summary = build(args)
dt = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes, reaped when the pool closed
rec = summary[0]
print(json.dumps({{"rows": rec["written"], "rejected": rec["rejected"], "seconds": dt,
                   "cpu_seconds": ru.ru_utime + ru.ru_stime - cpu0 + kids.ru_utime + kids.ru_stime,
                   "rss_before_kb": rss0, "rss_peak_kb": ru.ru_maxrss, "worker_rss_peak_kb": kids.ru_maxrss,
                   "workers": rec["workers"], "mode": rec["image_clamp"], "clamp": [rec["min_pixels"], rec["max_pixels"]]}}))
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


def run_one(src: Path, out_dir: Path, n: int, extra: list[str]) -> dict:
    code = CHILD.format(root=str(ROOT), src=str(src), out=str(out_dir), n=n, extra=extra)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["parquet_mib"] = sum(p.stat().st_size for p in out_dir.rglob("*.parquet")) / 2**20
    shutil.rmtree(out_dir)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--resize-rows", type=int, default=1200, help="--rows of the at_conversion mode")
    ap.add_argument("--resize-small", type=int, default=300, help="--small of the at_conversion mode")
    ap.add_argument("--workers", type=int, default=None, help="build_parquet --workers (default: its own)")
    ap.add_argument("--modes", default="on_load,at_conversion")
    ap.add_argument("--pool", type=int, default=48, help="distinct image files the rows cycle through")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    modes = {"on_load": ([], args.small, args.rows),
             "at_conversion": (["--resize-images"], args.resize_small, args.resize_rows)}
    chosen = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(chosen) - set(modes)
    if unknown:
        ap.error(f"unknown modes {sorted(unknown)}; choose from {sorted(modes)}")
    workers = ["--workers", str(args.workers)] if args.workers else []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        src = Path(tmp) / "release"
        n_rows = max(n for m in chosen for n in modes[m][1:])
        write_release(src, n_rows, args.pool)
        mb = (src / "MMFineReason_data_with_conclusion.json").stat().st_size / 2**20
        print(f"source: {n_rows} rows ({mb:.1f} MiB JSON list), {args.pool} images of sizes {SIZES}")
        rates = {}
        for mode in chosen:
            extra, small, rows = modes[mode]
            results = [run_one(src, Path(tmp) / f"out-{mode}-{n}", n, extra + workers) for n in (small, rows)]
            for r in results:
                print(f"{r['mode']:>13} {r['rows']:>7} rows, {r['workers']} worker(s): {r['rows'] / r['seconds']:7.1f} rows/s "
                      f"({r['seconds']:.1f} s)  {1000 * r['cpu_seconds'] / r['rows']:6.1f} CPU ms/row   "
                      f"peak RSS main {r['rss_peak_kb'] / 1024:6.1f} MiB, largest worker "
                      + (f"{r['worker_rss_peak_kb'] / 1024:6.1f} MiB   " if r["workers"] > 1 else "     -       ") +
                      f"parquet {r['parquet_mib']:7.1f} MiB")
            a, b = results
            rate = b["rows"] / b["seconds"]
            rates[mode] = (rate, b["rows"] / b["cpu_seconds"])
            worker = f"worker x{b['worker_rss_peak_kb'] / a['worker_rss_peak_kb']:.3f}" if b["workers"] > 1 else "no workers"
            print(f"{mode:>13} peak RSS {b['rows']} vs {a['rows']} rows: main x{b['rss_peak_kb'] / a['rss_peak_kb']:.3f}, "
                  f"{worker}; {RELEASE_ROWS} rows extrapolated: {RELEASE_ROWS / rate / 60:.1f} min wall clock, "
                  f"{RELEASE_ROWS * b['cpu_seconds'] / b['rows'] / 60:.1f} CPU-min")
        if len(rates) == 2:
            print(f"on_load / at_conversion: x{rates['on_load'][0] / rates['at_conversion'][0]:.1f} rows/s, "
                  f"x{rates['on_load'][1] / rates['at_conversion'][1]:.1f} rows per CPU second")


if __name__ == "__main__":
    main()
