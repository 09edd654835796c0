"""Evaluation loop: generate, score, append to the per-sample JSONL, aggregate, write the tables.

Output layout under ``out_dir``:

* ``run.json``: model, backend and protocol; a rerun into the same directory must match it (so
  resumed samples come from the same setup). Stored responses are re-scored with the current
  scorer on every run, so a scorer fix only needs a rerun.
* ``<bench>/samples.jsonl``: one line per sample (``id``, ``split``, ``response``, ``extracted``,
  ``pred``, ``correct``, ...), appended and flushed as each sample finishes; on restart the ids
  already there are skipped.
* ``<bench>/results.json``: metrics, protocol, splits, scorer version.
* ``table.md`` and ``summary.json``: our numbers beside the paper's Table 2.
"""

from __future__ import annotations

import dataclasses

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from verl_ext.eval.backends import Backend
from verl_ext.eval.data import Sample, clamp_mismatch, load_benchmark
from verl_ext.eval.protocol import Protocol
from verl_ext.eval.scorers import BENCHMARKS, EXTRA_BENCHMARKS, SCORER_VERSION, aggregate, score
from verl_ext.eval.table import average, markdown_table


def read_records(path: Path) -> list[dict]:
    """Records of a per-sample JSONL. A torn last line (crash mid-write) is cut off the file;
    a bad line elsewhere is an error."""
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); {_RECOVER}") from None
    records = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                with open(path, "w") as f:
                    f.writelines(lines[:-1])
                break
            raise ValueError(f"{path} line {i + 1}: not valid JSON ({e}); {_RECOVER}") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path} line {i + 1}: expected a JSON object, got {type(rec).__name__}; {_RECOVER}")
        for key in ("id", "response"):
            if not isinstance(rec.get(key), str):
                raise ValueError(f"{path} line {i + 1}: field {key!r} is "
                                 f"{'missing' if key not in rec else type(rec[key]).__name__ + ', expected a string'}; "
                                 f"{_RECOVER}")
        records.append(rec)
    return records


_RECOVER = "delete that line (or the file) and rerun: the samples it held are generated again"


def read_run_meta(out_dir: Path) -> dict | None:
    """``run.json`` of an earlier run, None when there is none; ValueError naming the file when it is
    damaged."""
    f = out_dir / "run.json"
    if not f.exists():
        return None
    try:
        old = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{f}: damaged ({e}); if the samples beside it came from this same command, delete "
                         "run.json and rerun to resume them, otherwise use a new --out-dir") from None
    if not isinstance(old, dict):
        raise ValueError(f"{f}: expected a JSON object; delete it and rerun (or use a new --out-dir)")
    return old


def check_run_meta(out_dir: Path, meta: dict) -> bool:
    """Check that a resumed run uses the same model/backend/protocol; True when ``run.json`` is
    still to be written (``write_run_meta``, once the run really starts)."""
    f = out_dir / "run.json"
    old = read_run_meta(out_dir)
    if old is None:
        return True
    diff = {k: (old.get(k), meta[k]) for k in meta if old.get(k) != meta[k]}
    if diff:
        raise ValueError(
            f"{f} was written by a different setup {diff}; its samples cannot be resumed. "
            "Use a new --out-dir or delete the old one."
        )
    return False


def write_run_meta(out_dir: Path, meta: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "run.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out_dir / "run.json")


def evaluate_benchmark(
    benchmark: str,
    samples: list[Sample],
    backend: Backend,
    out_dir: Path,
    on_record: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Generate and score the samples not yet in ``out_dir/<benchmark>/samples.jsonl``; returns
    all records of ``samples`` (old and new) in sample order. ``on_record`` is called after each
    record is written (a hook for progress reporting or tests)."""
    bdir = out_dir / benchmark
    bdir.mkdir(parents=True, exist_ok=True)
    path = bdir / "samples.jsonl"
    done = {r["id"]: r for r in read_records(path)}
    todo = [s for s in samples if s.uid not in done]
    bar = tqdm(total=len(samples), initial=len(samples) - len(todo), desc=benchmark, unit="sample", dynamic_ncols=True)
    t0, n_new = time.time(), 0
    with open(path, "a") as f:
        for start in range(0, len(todo), max(1, backend.batch_size)):
            chunk = todo[start : start + max(1, backend.batch_size)]
            gens = backend.generate(chunk)
            for s, g in zip(chunk, gens):
                res = score(benchmark, g.text, s.ground_truth, s.extra_info)
                rec: dict[str, Any] = {
                    "id": s.uid,
                    "split": s.split,
                    "index": s.index,
                    "data_source": benchmark,
                    **s.scorer_keys(),
                    "ground_truth": s.ground_truth,
                    "response": g.text,
                    "extracted": res["extracted"],
                    "pred": res["pred"],
                    "correct": bool(res["correct"]),
                    "num_tokens": g.num_tokens,
                    "finish_reason": g.finish_reason,
                }
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
                done[s.uid] = rec
                n_new += 1
                bar.update(1)
                bar.set_postfix(samples_per_s=f"{n_new / max(time.time() - t0, 1e-9):.2f}")
                if on_record is not None:
                    on_record(rec)
    bar.close()
    return [done[s.uid] for s in samples]


def run(
    backend_factory: Callable[[], Backend],
    backend_name: str,
    model: str,
    data_dir: str | Path,
    benchmarks: list[str],
    out_dir: str | Path,
    protocol: Protocol,
    limit: int | None = None,
    label: str | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> dict:
    """Evaluate ``benchmarks`` and write every output file; returns the summary dict.

    The backend is built lazily (only if some sample is left to generate), so re-running a
    finished evaluation only re-aggregates.
    """
    for b in benchmarks:
        if b not in BENCHMARKS + EXTRA_BENCHMARKS:
            raise ValueError(f"unknown benchmark {b!r}; choose from {', '.join(BENCHMARKS + EXTRA_BENCHMARKS)}")
    out = Path(out_dir)
    # what the stored responses depend on; the scorer does not matter: stored responses are re-scored
    meta = {"model": str(model), "backend": backend_name, "protocol": protocol.to_dict()}
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be a positive number of rows, got {limit}")
    loaded = {}
    for b in benchmarks:
        samples, splits = load_benchmark(data_dir, b, protocol.splits.get(b, []))
        chosen = samples[:limit] if limit else samples
        k = protocol.repeats_for(b)
        if k > 1:  # avg@k: k samples per question, each with its own id (and so its own seed)
            chosen = [dataclasses.replace(s, uid=f"{s.uid}#{r}") for s in chosen for r in range(k)]
        loaded[b] = (chosen, splits, len(samples))
        warning = clamp_mismatch(b, samples, protocol.min_pixels, protocol.max_pixels)
        if warning:
            print(warning, file=sys.stderr)
    # checked once the data loaded, written once the backend is up: a failed start must not lock the out-dir
    unwritten = check_run_meta(out, meta)

    backend: Backend | None = None
    results: dict[str, dict] = {}
    for b in benchmarks:
        samples, splits, total = loaded[b]
        done_ids = {r["id"] for r in read_records(out / b / "samples.jsonl")}
        if backend is None and any(s.uid not in done_ids for s in samples):
            backend = backend_factory()
        if unwritten:
            write_run_meta(out, meta)
            unwritten = False
        records = evaluate_benchmark(b, samples, backend, out, on_record) if backend else _stored(out, b, samples)
        records, rescored = rescore(b, samples, records, out / b / "samples.jsonl")
        metrics = aggregate(b, records)
        res = {
            "benchmark": b,
            "model": str(model),
            "backend": backend_name,
            "splits": splits,
            "rows_in_files": total,
            "limit": limit,
            "scorer_version": SCORER_VERSION,
            "rescored_samples": rescored,
            "protocol": protocol.to_dict(),
            "metrics": metrics,
        }
        (out / b / "results.json").write_text(json.dumps(res, indent=2) + "\n")
        results[b] = res

    scores = {b: r["metrics"]["score"] for b, r in results.items()}
    label = label or Path(str(model).rstrip("/")).name
    table = markdown_table(scores, label, results)
    extra = [b for b in EXTRA_BENCHMARKS if b in results]
    if extra:  # outside Table 2: one line each
        table += "\n" + "".join(_extra_line(b, results[b]["metrics"]) for b in extra)
    proto = protocol.to_dict()
    table += (
        f"\nProtocol: preset {proto['preset']}, temperature {proto['temperature']}, top_p {proto['top_p']}, "
        f"top_k {proto['top_k']}, presence penalty {proto['presence_penalty']}, n {proto['n']}, "
        f"max new tokens {proto['max_new_tokens']}, backend {backend_name}, scorer {SCORER_VERSION}"
        + (f", first {limit} rows per benchmark only" if limit else "")
        + ".\n"
    )
    (out / "table.md").write_text(table)
    summary = {"label": label, "scores": scores, "average": average(scores), **meta, "scorer_version": SCORER_VERSION, "limit": limit}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _extra_line(benchmark: str, m: dict) -> str:
    k = m.get("k", 1)
    if k > 1:
        return (f"{benchmark}: {m['score_name']} {m['score']:.2f} over {m['questions']} questions x {k} samples "
                f"(pass@{k} {m['pass@' + str(k)]:.2f})\n")
    return f"{benchmark}: accuracy {m['accuracy']:.2f} over {m['n']} rows\n"


def _stored(out: Path, benchmark: str, samples: list[Sample]) -> list[dict]:
    done = {r["id"]: r for r in read_records(out / benchmark / "samples.jsonl")}
    return [done[s.uid] for s in samples]


def rescore(benchmark: str, samples: list[Sample], records: list[dict], path: Path) -> tuple[list[dict], int]:
    """Re-apply the current scorer to stored responses (a resumed run may hold lines scored by an
    older scorer version). Changed lines are rewritten in place (atomically); returns the records
    and how many changed."""
    by_id = {s.uid: s for s in samples}
    out, changed = [], 0
    for rec in records:
        s = by_id[rec["id"]]
        res = score(benchmark, rec["response"], s.ground_truth, s.extra_info)
        new = {**rec, "extracted": res["extracted"], "pred": res["pred"], "correct": bool(res["correct"])}
        changed += new != rec
        out.append(new)
    if changed:
        new_by_id = {r["id"]: r for r in out}
        lines = [new_by_id.get(r["id"], r) for r in read_records(path)]
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
        os.replace(tmp, path)
    return out, changed
