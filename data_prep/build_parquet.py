#!/usr/bin/env python
"""Build verl-ready parquet files for the training set, the five benchmarks and the generated set.

    python data_prep/build_parquet.py synthetic --out-dir data
    python data_prep/build_parquet.py train --source /path/to/MMFineReason --val-size 512 --out-dir data
    python data_prep/build_parquet.py mmmu mathvista --mmmu-source ./mmmu --mathvista-source ./mv --out-dir data

Writes ``<out-dir>/<dataset>/<split>.parquet`` (``<split>-00000.parquet``, ... when ``--shard-size``
is exceeded). A source is a local copy (``save_to_disk`` directory, parquet, JSON/JSONL + image
files) or a hub id (the default; needs network). Bad rows stop the run with an error naming the
dataset, row and field, or with ``--skip-bad`` go to ``<split>.rejects.jsonl``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import random
import sys
import tempfile
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, closing
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm  # noqa: E402

from data_prep.common import (  # noqa: E402
    DEFAULT_MAX_IMAGE_BYTES, TRACE_FIELD, BadRow, ImageOptions, PromptRenderer, PromptBudget, build_row, row_schema,
    templating,
)
from data_prep.converters import DATASETS  # noqa: E402
from data_prep.sources import SourceError, SourceRowError  # noqa: E402
from data_prep.writer import RejectLog, SplitWriter  # noqa: E402

ALL = ["train", "mmmu", "mathvista", "mathvision", "zerobench", "wemath", "synthetic"]
# text sets for text-only models ("all" stays the multimodal set): a training set, three benchmarks, a generated set
TEXT = ["dapo", "math500", "aime24", "aime25", "arithmetic"]
GENERATED = {"synthetic", "arithmetic"}
VAL_SPLIT = "val"
# The released code resizes every image into this range on load (data.min_pixels / image_max_pixels).
PAPER_MIN_PIXELS, PAPER_MAX_PIXELS = 262144, 1048576
UNCLAMPED = {"synthetic", *TEXT}  # generated tiny images (the CPU default keeps them small); text sets have none
CHUNK_ROWS = 32  # rows per task of a worker process


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datasets", nargs="+", choices=ALL + TEXT + ["all"], metavar="DATASET",
                   help=f"one or more of {', '.join(ALL)}, or all; text sets: {', '.join(TEXT)}")
    p.add_argument("--out-dir", default="data", help="output root (default: data)")
    p.add_argument("--source", help="local path or hub id of the (single) dataset named")
    for name in [n for n in ALL + TEXT if n not in GENERATED]:
        p.add_argument(f"--{name}-source", help=f"local path or hub id for {name} "
                                                f"(default: {DATASETS[name].hub_id})")
    p.add_argument("--limit", type=int, default=None, help="read at most N source rows per split")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out slice and the generated set")
    p.add_argument("--shard-size", type=int, default=None, help="rows per output file (default: one file)")
    p.add_argument("--row-group-rows", type=int, default=64, help="rows per parquet row group")
    p.add_argument("--min-pixels", type=int, default=None,
                   help=f"upscale smaller images (qwen-vl-utils smart_resize); default {PAPER_MIN_PIXELS} "
                        "(the paper's) for train and the benchmarks, none for synthetic")
    p.add_argument("--max-pixels", type=int, default=None,
                   help=f"downscale larger images (qwen-vl-utils smart_resize); default {PAPER_MAX_PIXELS} "
                        "(the paper's) for train and the benchmarks, none for synthetic")
    p.add_argument("--no-pixel-clamp", action="store_true",
                   help="keep every image at its own size (no default clamp)")
    p.add_argument("--resize-images", action="store_true",
                   help="resize images into the clamp at conversion and store them as PNG (slow); by "
                        "default each image keeps its own bytes and the clamp is applied on load, as in "
                        "the released code (the images entries carry min_pixels/max_pixels, which verl "
                        "passes to qwen-vl-utils' fetch_image)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes converting rows; output is identical for any number (default: 1, or "
                        "the CPU cores available with --resize-images: without resizing, reading and "
                        "writing in the main process bound the speed)")
    p.add_argument("--max-prompt-tokens", type=int, default=4096,
                   help="count (and with --skip-bad reject) rows whose prompt is estimated longer than "
                        "this many tokens, text plus image tokens (default 4096, the recipes' "
                        "data.max_prompt_length; verl would drop them later)")
    p.add_argument("--prompt-template", default=None, help="Jinja student prompt template "
                                                           "(default: data_prep/templates/student_prompt.jinja)")
    p.add_argument("--image-root", action="append", default=[], metavar="DIR",
                   help="also allow image paths inside DIR (repeatable); by default an image path must "
                        "resolve inside the folder of the file that names it (or its zip)")
    p.add_argument("--max-image-bytes", type=int, default=DEFAULT_MAX_IMAGE_BYTES,
                   help="largest image a row may store, and largest zip member read, in bytes "
                        f"(default {DEFAULT_MAX_IMAGE_BYTES}, 32 MiB); a larger one is a bad row")
    p.add_argument("--val-size", type=int, default=0,
                   help="train: hold out N rows (chosen by --seed) as the 'val' split")
    p.add_argument("--skip-bad", action="store_true",
                   help="write bad rows to <split>.rejects.jsonl instead of stopping")
    p.add_argument("--mathvision-split", choices=["test", "testmini"], default="test")
    p.add_argument("--zerobench-variant", choices=["subquestions", "main"], default="subquestions")
    p.add_argument("--synthetic-train-size", type=int, default=None, help="generated train rows (320)")
    p.add_argument("--synthetic-test-size", type=int, default=None, help="generated test rows (64)")
    p.add_argument("--arithmetic-train-size", type=int, default=None, help="generated text train rows (2000)")
    p.add_argument("--arithmetic-test-size", type=int, default=None, help="generated text test rows (64)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    names = ALL if "all" in args.datasets else list(dict.fromkeys(args.datasets))
    if args.source is not None:
        if len(names) != 1:
            p.error("--source names the source of one dataset; use --<dataset>-source for several")
        if names[0] in GENERATED:
            p.error(f"{names[0]} is generated and takes no --source")
        setattr(args, f"{names[0]}_source", args.source)
    args.names = names
    for flag in ("limit", "shard_size", "min_pixels", "max_pixels", "max_image_bytes"):
        v = getattr(args, flag)
        if v is not None and v <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive")
    if args.no_pixel_clamp and (args.min_pixels or args.max_pixels):
        p.error("--no-pixel-clamp cannot be combined with --min-pixels/--max-pixels")
    if args.no_pixel_clamp and args.resize_images:
        p.error("--resize-images needs a pixel clamp; drop --no-pixel-clamp")
    if args.workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        args.workers = cores if args.resize_images else 1
    elif args.workers <= 0:
        p.error("--workers must be positive")
    if args.min_pixels and args.max_pixels and args.min_pixels > args.max_pixels:
        p.error("--min-pixels must not exceed --max-pixels")
    if args.max_prompt_tokens <= 0:
        p.error("--max-prompt-tokens must be positive")
    if args.val_size < 0:
        p.error("--val-size must be >= 0")
    for d in args.image_root:
        if not os.path.isdir(d):
            p.error(f"--image-root {d}: not a folder")
    args.image_root = tuple(os.path.realpath(d) for d in args.image_root)
    return args


def pixel_clamp(name: str, args) -> tuple[int | None, int | None]:
    """(min_pixels, max_pixels) for one dataset: the flags, else the paper's clamp (none for the
    generated set or with --no-pixel-clamp)."""
    if args.no_pixel_clamp:
        return None, None
    if args.min_pixels is None and args.max_pixels is None:
        return (None, None) if name in UNCLAMPED else (PAPER_MIN_PIXELS, PAPER_MAX_PIXELS)
    return args.min_pixels, args.max_pixels


def _convert_row(conv, raw, row_id, job, split, index, renderer, image_opts) -> dict:
    if isinstance(raw, SourceRowError):
        raise BadRow("<line>", raw.reason)
    try:
        sample = conv.convert(raw, row_id, job)
        return build_row(sample, data_source=conv.name, ability=conv.ability, split=split, index=index,
                         renderer=renderer, image_opts=image_opts, with_trace=conv.with_trace)
    except (BadRow, templating.TemplateError):  # a template the sandbox refuses is no row's fault
        raise
    except Exception as e:  # an unexpected value type in a column is still a row error
        raise BadRow("<row>", f"{type(e).__name__}: {e}") from e


class RowWork:
    """The per-row work of one split, the same in the main process and in a worker: source row ->
    (split, row or None, BadRow or None, over the prompt budget). ``extra_info.index`` is set by
    the writer's side, which alone knows how many rows each split has so far."""

    def __init__(self, name: str, job, template: str | None, min_px, max_px, resize: bool,
                 max_prompt_tokens: int, skip_bad: bool, image_roots: tuple[str, ...] = (),
                 max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES):
        self.name, self.job, self.skip_bad = name, job, skip_bad
        self.image_roots, self.max_image_bytes = image_roots, max_image_bytes
        self.conv = DATASETS[name]
        self.renderer = PromptRenderer(template or self.conv.prompt_template)
        self.clamp = (min_px, max_px, resize)
        self.budget = PromptBudget(max_prompt_tokens)

    def __call__(self, items: list) -> list:
        out = []
        for pos, split, base_dir, raw in items:
            row_id = raw.where if isinstance(raw, SourceRowError) else self.conv.row_id(raw, pos, self.job)
            over = False
            opts = ImageOptions(self.clamp[0], self.clamp[1], base_dir, self.clamp[2], self.image_roots,
                                self.max_image_bytes)
            try:
                row = _convert_row(self.conv, raw, row_id, self.job, split, -1, self.renderer, opts)
                if not row["images"] and not self.conv.text_only:
                    opts.notes.append("text-only row (no image)")
                n_tok = self.budget.over(row)
                over = n_tok is not None
                if over and self.skip_bad:
                    raise BadRow("prompt", f"prompt of about {n_tok} tokens (text and images) is over "
                                           f"--max-prompt-tokens {self.budget.max_tokens}")
            except BadRow as e:
                out.append((split, None, e.locate(self.name, split, row_id), over, []))
            else:
                out.append((split, row, None, over, opts.notes))
        return out


_WORK: RowWork | None = None


def _init_worker(spec: tuple, parent: int) -> None:
    global _WORK
    if sys.platform.startswith("linux"):  # a killed conversion takes its workers with it
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)
    _WORK = RowWork(*spec)


def _run_chunk(items: list) -> list:
    return _WORK(items)


def _ordered_map(spec: tuple, chunks, workers: int):
    """``RowWork(*spec)`` over ``chunks``, results in input order. With ``workers`` > 1 and more than
    one chunk, a process pool with at most two chunks per worker in flight, so memory stays bounded
    however long the source is."""
    it = iter(chunks)
    head = [c for c in (next(it, None), next(it, None)) if c is not None]
    if workers <= 1 or len(head) < 2:
        yield from map(RowWork(*spec), itertools.chain(head, it))
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(), initializer=_init_worker,
                               initargs=(spec, os.getpid()))
    try:
        pending: deque = deque()
        for chunk in itertools.chain(head, it):
            pending.append(pool.submit(_run_chunk, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _convert_split(name, conv, job, args, out_root, summary):
    source = getattr(args, f"{name}_source", None) or conv.hub_id
    try:
        stream = conv.stream(source, job, args)
    except SourceError as e:
        hint = "" if name in GENERATED else f" [--source or --{name}-source PATH]"
        raise SourceError(f"{name}: {e}{hint}") from None
    total = stream.total
    if total is None and name == "train" and args.val_size and stream.count is not None:
        total = stream.count()  # one streaming pass over the files
    if args.limit is not None:
        total = args.limit if total is None else min(total, args.limit)
    splits = [job.split]
    val_rows: set[int] = set()
    if name == "train" and args.val_size and job.split == "train":
        if total is None:
            raise SourceError(f"{name}: --val-size needs a source whose row count is known")
        if args.val_size >= total:
            raise SourceError(f"{name}: --val-size {args.val_size} must be smaller than the {total} rows read")
        val_rows = set(random.Random(f"val-{args.seed}").sample(range(total), args.val_size))
        splits.append(VAL_SPLIT)

    min_px, max_px = pixel_clamp(name, args)
    mode = ImageOptions(min_px, max_px, resize=args.resize_images).mode
    image_meta = {"min_pixels": min_px, "max_pixels": max_px, "image_clamp": mode}
    schema = row_schema(conv.extra_fields, conv.with_trace).with_metadata(
        {"rlsd_verl.images": json.dumps(image_meta), "rlsd_verl.max_prompt_tokens": str(args.max_prompt_tokens)})
    out_dir = out_root / name
    spec = (name, job, args.prompt_template, min_px, max_px, args.resize_images, args.max_prompt_tokens,
            args.skip_bad, args.image_root, args.max_image_bytes)

    def chunks():
        buf = []
        for pos, (base_dir, raw) in enumerate(stream.rows()):
            if args.limit is not None and pos >= args.limit:
                break
            buf.append((pos, VAL_SPLIT if pos in val_rows else job.split, base_dir, raw))
            if len(buf) == CHUNK_ROWS:
                yield buf
                buf = []
        if buf:
            yield buf

    with ExitStack() as stack:
        writers = {s: stack.enter_context(SplitWriter(out_dir, s, schema, args.shard_size, args.row_group_rows))
                   for s in splits}
        rejects = {s: RejectLog(out_dir, s) for s in splits}
        stack.callback(lambda: [r.abort() for r in rejects.values()])  # no-op after commit
        no_trace = {s: 0 for s in splits}
        over_budget = {s: 0 for s in splits}
        counts = {s: {} for s in splits}  # conversions and text-only rows, by kind
        seen_ids: dict[str, tuple[int, str, int]] = {}  # id -> (hash of its answer, split, index there)
        seen_questions: dict[str, tuple[str, str, str]] = {}  # dedup_questions: question -> (answer, split, id)
        repeats = {s: 0 for s in splits}
        bar = stack.enter_context(tqdm(total=total, desc=f"{name}/{job.split}", unit="row",
                                       disable=args.quiet, file=sys.stderr))
        results = stack.enter_context(closing(_ordered_map(spec, chunks(), args.workers)))
        for done in results:
            for split, row, err, over, notes in done:
                over_budget[split] += over
                if err is None and conv.dedup_questions:
                    err = _repeated_question(row, split, seen_questions, name)
                    if err is _REPEAT:
                        repeats[split] += 1
                        bar.update(1)
                        continue
                if err is None:
                    err = _conflicting_id(row, split, writers, seen_ids, name)
                if err is not None:
                    if not args.skip_bad:
                        raise err
                    rejects[split].add(err)
                else:
                    for note in notes:
                        counts[split][note] = counts[split].get(note, 0) + 1
                    row["extra_info"]["index"] = writers[split].rows
                    if conv.with_trace and not row["extra_info"][TRACE_FIELD]:
                        no_trace[split] += 1
                    writers[split].add(row)
                bar.update(1)
        for s in splits:
            files = writers[s].commit()
            rej_file = rejects[s].commit()
            expected = conv.expected_rows.get(s)
            read = writers[s].rows + rejects[s].count + repeats[s]
            if repeats[s]:
                counts[s]["repeat of an earlier row (same question and answer): skipped"] = repeats[s]
            summary.append({"dataset": name, "split": s, "written": writers[s].rows,
                            "rejected": rejects[s].count, "reasons": dict(sorted(rejects[s].reasons.items())),
                            "files": [str(f) for f in files], "rejects_file": str(rej_file) if rej_file else None,
                            "rows_without_trace": no_trace[s] if conv.with_trace else None,
                            "expected_rows": expected, "rows_read": read,
                            "count_mismatch": bool(expected is not None and args.limit is None and read != expected),
                            "over_prompt_budget": over_budget[s], "max_prompt_tokens": args.max_prompt_tokens,
                            "counts": dict(sorted(counts[s].items())),
                            "workers": args.workers, **image_meta})


_REPEAT = object()


def _repeated_question(row: dict, split: str, seen: dict, name: str):
    """``dedup_questions``: ``_REPEAT`` for a question already written with the same answer (skipped and
    counted), a ``BadRow`` when it was written with another answer, else None (first time)."""
    info = row["extra_info"]
    key, answer = info["question"], row["reward_model"]["ground_truth"]
    first = seen.get(key)
    if first is None:
        seen[key] = (answer, split, info["id"])
        return None
    if first[0] == answer:
        return _REPEAT
    return BadRow("answer", f"the same question was written before (id {first[2]!r} of {first[1]}) with another "
                            f"answer; this row's answer is {answer[:80]!r}").locate(name, split, info["id"])


def _conflicting_id(row: dict, split: str, writers: dict, seen: dict, name: str) -> BadRow | None:
    """A row whose id was already written with another answer: one of the two is wrong, and keeping
    both would reward opposite answers to the same question. Same-answer repeats are kept."""
    rid, answer = row["extra_info"]["id"], row["reward_model"]["ground_truth"]
    key = hash(answer)
    first = seen.get(rid)
    if first is None:
        seen[rid] = (key, split, writers[split].rows)
        return None
    if first[0] == key:
        return None
    return BadRow("id", f"id {rid!r} was already written (row {first[2]} of {first[1]}) with a different answer; "
                        f"this row's answer is {answer[:80]!r}").locate(name, split, rid)


def build(args: argparse.Namespace) -> list[dict]:
    """Convert every dataset of ``args.names``; returns one summary record per written split."""
    PromptRenderer(args.prompt_template)  # a missing template stops the run before any data is read
    out_root = Path(args.out_dir)
    summary: list[dict] = []
    for name in args.names:
        conv = DATASETS[name]
        for job in conv.jobs(args):
            _convert_split(name, conv, job, args, out_root, summary)
    return summary


def format_summary(summary: list[dict]) -> str:
    lines = ["", f"{'dataset/split':<32}{'written':>9}{'rejected':>10}{'expected':>10}  files"]
    for rec in summary:
        exp = rec.get("expected_rows")
        lines.append(f"{rec['dataset'] + '/' + rec['split']:<32}{rec['written']:>9}{rec['rejected']:>10}"
                     f"{exp if exp is not None else '-':>10}  " + ", ".join(rec["files"]))
        if rec.get("count_mismatch"):
            lines.append(f"{'':<4}WARNING: read {rec['rows_read']} rows, the published {rec['split']} split has "
                         f"{exp}: the local copy is incomplete or another version")
        if rec.get("min_pixels") or rec.get("max_pixels"):
            when = ("on load (qwen-vl-utils fetch_image; images stored as they are)"
                    if rec.get("image_clamp") == "on_load" else "at conversion (stored resized)")
            lines.append(f"{'':<4}images clamped to {rec['min_pixels']}..{rec['max_pixels']} pixels {when}")
        if rec.get("over_prompt_budget"):
            lines.append(f"{'':<4}{rec['over_prompt_budget']} row(s) with a prompt over {rec['max_prompt_tokens']} "
                         "tokens (verl's filter_overlong_prompts drops them; --skip-bad rejects them here)")
        for note, n in rec.get("counts", {}).items():
            lines.append(f"{'':<4}{n:>6} row(s): {note}")
        for reason, n in rec["reasons"].items():
            lines.append(f"{'':<4}rejected {n:>6}  {reason}")
        if rec["rejects_file"]:
            lines.append(f"{'':<4}rejects listed in {rec['rejects_file']}")
        if rec.get("rows_without_trace"):
            lines.append(f"{'':<4}{rec['rows_without_trace']} row(s) have no reference trace ({TRACE_FIELD})")
    total_w = sum(r["written"] for r in summary)
    total_r = sum(r["rejected"] for r in summary)
    lines.append(f"{'total':<32}{total_w:>9}{total_r:>10}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:  # an unusable output folder is a usage error, found before any data is read
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=args.out_dir):
            pass
    except OSError as e:
        print(f"error: --out-dir {args.out_dir}: cannot write there ({e.strerror or e})", file=sys.stderr)
        return 2
    try:
        PromptRenderer(args.prompt_template)
    except (FileNotFoundError, templating.TemplateError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        summary = build(args)
    except BadRow as e:  # the data: exit 1
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (SourceError, templating.TemplateError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is not None and not os.path.abspath(str(e.filename)).startswith(os.path.abspath(args.out_dir)):
            print(f"error: {e}", file=sys.stderr)  # an input file (template, source) that cannot be read
            return 2
        # writing failed midway, e.g. a full disk (no partial file is left)
        print(f"error: cannot write under --out-dir {args.out_dir}: {e.strerror or e}"
              f"{f' ({e.filename})' if e.filename else ''}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    for rec in summary:
        if rec.get("count_mismatch"):
            print(f"WARNING: {rec['dataset']}/{rec['split']}: {rec['rows_read']} rows read, {rec['expected_rows']} "
                  "expected", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
