"""Plot token-credit dumps and training curves.

    python examples/plot_token_credit.py DUMP.jsonl [--by delta|weight|advantage] [--out DIR] [--index N]
    python examples/plot_token_credit.py --curves METRICS.jsonl [--out DIR]     # verl's file logger output
    python examples/plot_token_credit.py --curves TENSORBOARD_DIR [--out DIR]   # or TensorBoard event files

A dump comes from training with ``algorithm.diagnostics.dump_every=N`` (files
``<algorithm.diagnostics.dir>/step_<step>.jsonl``). For each response of the dump (or only ``--index``)
it writes ``<out>/<dump>_r<row>_<by>.png``, and one page ``<out>/<dump>_<by>.html`` with all of them
(hover a token for its numbers). Red = blame, blue = credit; for ``--by weight``, blue/red = RLSD's
clipped weight above/below 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from verl_ext.diagnostics import read_records
from verl_ext.diagnostics.render import QUANTITIES, plot_curves, read_metrics_jsonl, read_tensorboard, render_html, render_png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump", nargs="?", help="a token-credit dump (JSONL)")
    parser.add_argument("--by", default="advantage", choices=sorted(QUANTITIES))
    parser.add_argument("--out", default=None, help="output folder (default: beside the input)")
    parser.add_argument("--index", type=int, default=None, help="only the N-th response of the dump (0-based)")
    parser.add_argument("--width", type=int, default=90, help="characters per line in the PNG")
    parser.add_argument("--curves", default=None, help="verl file-logger JSONL or a TensorBoard log folder")
    args = parser.parse_args(argv)
    if not args.dump and not args.curves:
        parser.error("give a dump and/or --curves")

    if args.curves:
        src = Path(args.curves)
        metrics = read_tensorboard(src) if src.is_dir() else read_metrics_jsonl(src)
        out = Path(args.out or src.parent)
        path, panels = plot_curves(metrics, out / f"{src.stem}_curves.png", title=src.stem)
        print(f"curves ({len(metrics)} steps; {', '.join(panels)}): {path}")

    if args.dump:
        dump = Path(args.dump)
        records = read_records(dump)
        if not records:
            raise SystemExit(f"{dump}: no records")
        if args.index is not None:
            if not 0 <= args.index < len(records):
                raise SystemExit(f"{dump}: --index {args.index} out of range (0..{len(records) - 1})")
            records = [records[args.index]]
        out = Path(args.out or dump.parent)
        for rec in records:
            png = render_png(rec, out / f"{dump.stem}_r{rec.row}_{args.by}.png", by=args.by, width=args.width)
            print(f"step {rec.step} row {rec.row} ({len(rec)} tokens, A={rec.seq_advantage:+.3g}): {png}")
        print(f"html: {render_html(records, out / f'{dump.stem}_{args.by}.html', by=args.by)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
