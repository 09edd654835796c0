"""``python -m verl_ext.eval --model PATH --data-dir DIR --out-dir OUT [...]``.

Evaluates a Hugging Face model directory or a verl FSDP checkpoint on the benchmark parquet files
and writes per-sample JSONL, per-benchmark JSON and a Markdown table beside the paper's Table 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from verl_ext.eval.protocol import PRESETS, load_protocol
from verl_ext.eval.scorers import BENCHMARKS, EXTRA_BENCHMARKS


def _kv(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"{what} expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = v
    return out


def _positive_int(text: str) -> int:
    n = int(text)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of rows, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m verl_ext.eval",
        description="Evaluate a model on MMMU, MathVista, MathVision, ZeroBench and WeMath; table beside the paper's Table 2.",
    )
    p.add_argument("--model", required=True, help="Hugging Face model dir, or verl checkpoint dir (global_step_N or its actor/)")
    p.add_argument("--data-dir", required=True, help="directory holding <benchmark>/<split>.parquet")
    p.add_argument("--out-dir", required=True, help="results directory (rerun into it to resume)")
    p.add_argument("--benchmarks", default=",".join(BENCHMARKS), help=f"comma-separated subset of {','.join(BENCHMARKS + EXTRA_BENCHMARKS)}")
    p.add_argument("--backend", choices=["vllm", "hf"], default="vllm", help="vllm (GPU) or hf (transformers generate)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default", help="sampling protocol preset")
    p.add_argument("--protocol-file", default=None, help="YAML file of protocol fields overriding the preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one protocol field, e.g. --set max_new_tokens=8 (repeatable)")
    p.add_argument("--split", action="append", default=[], metavar="BENCH=SPLIT", help="read this split (comma-separated for several; repeatable)")
    p.add_argument("--limit", type=_positive_int, default=None, help="first N rows of each benchmark only (smoke tests)")
    p.add_argument("--label", default=None, help="name of our row in the table (a paper method name adds a delta row)")
    g = p.add_argument_group("vllm backend")
    g.add_argument("--tensor-parallel-size", type=int, default=1)
    g.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    g.add_argument("--max-model-len", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=256, help="prompts per vLLM call (results are flushed after each)")
    h = p.add_argument_group("hf backend")
    h.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    h.add_argument("--dtype", default="auto")
    return p


def main(argv: list[str] | None = None, on_record=None) -> dict:
    args = build_parser().parse_args(argv)
    from verl_ext.eval.backends import make_backend
    from verl_ext.eval.checkpoint import resolve_model
    from verl_ext.eval.runner import run

    benches = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    protocol = load_protocol(args.preset, args.protocol_file, _kv(args.overrides, "--set"))
    for bench, split in _kv(args.split, "--split").items():
        protocol.splits[bench] = [x.strip() for x in split.split(",") if x.strip()]
    out_dir = Path(args.out_dir)
    model = resolve_model(args.model, out_dir / "merged_model")
    kw = {
        "device": args.device,
        "dtype": args.dtype,
        "tensor_parallel_size": args.tensor_parallel_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "max_model_len": args.max_model_len,
        "batch_size": args.batch_size,
    }
    summary = run(
        backend_factory=lambda: make_backend(args.backend, model, protocol, **kw),
        backend_name=args.backend,
        model=args.model,
        data_dir=args.data_dir,
        benchmarks=benches,
        out_dir=out_dir,
        protocol=protocol,
        limit=args.limit,
        label=args.label,
        on_record=on_record,
    )
    print((out_dir / "table.md").read_text())
    return summary


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
