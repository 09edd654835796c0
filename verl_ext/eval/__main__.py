"""``python -m verl_ext.eval --model PATH --data-dir DIR --out-dir OUT [...]``.

Evaluates a Hugging Face model directory or a verl FSDP checkpoint on the benchmark parquet files
and writes per-sample JSONL, per-benchmark JSON and a Markdown table beside the paper's Table 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from verl_ext.eval.data import split_files
from verl_ext.eval.protocol import PRESETS, load_protocol
from verl_ext.eval.scorers import BENCHMARKS, EXTRA_BENCHMARKS


def _kv(items: list[str], what: str, parser: argparse.ArgumentParser) -> dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it or not it.split("=", 1)[0].strip():
            parser.error(f"{what} expects KEY=VALUE, got {it!r}")
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
    p.add_argument("--backend", choices=["vllm", "hf"], default="vllm", help="vllm (vLLM's engine; on CPU its CPU build) or hf (transformers generate)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default", help="sampling protocol preset")
    p.add_argument("--protocol-file", default=None, help="YAML file of protocol fields overriding the preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one protocol field, e.g. --set max_new_tokens=8 (repeatable)")
    p.add_argument("--split", action="append", default=[], metavar="BENCH=SPLIT", help="read this split (comma-separated for several; repeatable)")
    p.add_argument("--limit", type=_positive_int, default=None, help="first N rows of each benchmark only (smoke tests)")
    p.add_argument("--label", default=None, help="name of our row in the table (a paper method name adds a delta row)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="merge a verl checkpoint with verl's own loader, which unpickles arbitrary objects "
                        "(can run code); by default its shards are loaded weights-only")
    g = p.add_argument_group("vllm backend")
    g.add_argument("--tensor-parallel-size", type=int, default=1)
    g.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    g.add_argument("--max-model-len", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=256, help="prompts per vLLM call (results are flushed after each)")
    h = p.add_argument_group("hf backend")
    h.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    h.add_argument("--dtype", default="auto", help="model dtype, both backends (auto: the checkpoint's; vLLM on CPU: float32)")
    return p


def _validate(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """Every argument checked before anything loads (usage errors: exit 2). Returns (benchmarks, protocol)."""
    known = BENCHMARKS + EXTRA_BENCHMARKS
    benches = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    unknown = [b for b in benches if b not in known]
    if unknown or not benches:
        parser.error(f"--benchmarks: unknown benchmark(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}")
    data = Path(args.data_dir)
    if not data.is_dir():
        parser.error(f"--data-dir {data}: {'is a file' if data.exists() else 'no such directory'}")
    model = Path(args.model)
    if not model.exists():
        parser.error(f"--model {model}: no such directory")
    if not model.is_dir():
        parser.error(f"--model {model}: is a file; pass the model's directory (config.json + weights) or a verl "
                     "checkpoint's global_step_N directory")
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        parser.error(f"--out-dir {out}: is a file")
    if args.protocol_file and not Path(args.protocol_file).is_file():
        parser.error(f"--protocol-file {args.protocol_file}: no such file")
    try:
        protocol = load_protocol(args.preset, args.protocol_file, _kv(args.overrides, "--set", parser))
    except (KeyError, ValueError, TypeError, yaml.YAMLError) as e:
        parser.error(f"--set/--protocol-file: {e.args[0] if e.args else e}")
    for bench, split in _kv(args.split, "--split", parser).items():
        if bench not in known:
            parser.error(f"--split {bench}=...: unknown benchmark; choose from {', '.join(known)}")
        protocol.splits[bench] = [x.strip() for x in split.split(",") if x.strip()]
        if not protocol.splits[bench]:
            parser.error(f"--split {bench}=: no split named")
        have = split_files(data, bench) if (data / bench).is_dir() else {}
        missing = [x for x in protocol.splits[bench] if x not in have]
        if bench in benches and missing:
            parser.error(f"--split {bench}={split}: no split {', '.join(missing)} under {data / bench} "
                         f"(have {', '.join(sorted(have)) or 'none'})")
    for name in ("tensor_parallel_size", "batch_size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if not 0 < args.gpu_memory_utilization <= 1:
        parser.error("--gpu-memory-utilization must be in (0, 1]")
    return benches, protocol


def main(argv: list[str] | None = None, on_record=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    benches, protocol = _validate(args, parser)
    from verl_ext.eval.backends import make_backend
    from verl_ext.eval.checkpoint import resolve_model
    from verl_ext.eval.runner import run

    out_dir = Path(args.out_dir)
    model = resolve_model(args.model, out_dir / "merged_model", trust=args.trust_checkpoint)
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


def cli(argv: list[str] | None = None) -> int:
    """``main`` with the CLI convention: a message and exit 1 for bad data, resume state or model
    (usage errors exit 2 from the parser)."""
    from verl_ext.eval.checkpoint import CheckpointRefused

    try:
        main(argv)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, CheckpointRefused) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
