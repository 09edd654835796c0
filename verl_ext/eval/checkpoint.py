"""Model path resolution: a Hugging Face directory is used as is; a verl FSDP checkpoint
(``global_step_N/`` or its ``actor/``, holding ``fsdp_config.json`` and
``model_world_size_W_rank_R.pt`` shards) is merged once with verl's own model merger, its shards
loaded weights-only (``verl_ext.eval.safe_merge``): a checkpoint is a file users download, and a
pickle can run code. ``trust=True`` (``--trust-checkpoint``) runs verl's merger unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# the marker safe_merge prints; kept here so that checking for it imports no torch
SAFE_LOAD_FAILED = "weights-only loading refused"


def is_hf_dir(p: Path) -> bool:
    return (p / "config.json").is_file() and (
        any(p.glob("*.safetensors")) or any(p.glob("*.bin")) or (p / "model.safetensors.index.json").is_file()
    )


def fsdp_actor_dir(p: Path) -> Path | None:
    for cand in (p, p / "actor"):
        if (cand / "fsdp_config.json").is_file() and any(cand.glob("model_world_size_*_rank_*.pt")):
            return cand
    return None


class CheckpointRefused(RuntimeError):
    """A shard holds more than tensors: refused unless the user says they trust the file."""


def resolve_model(model: str, merged_dir: str | Path, trust: bool = False) -> str:
    """A loadable Hugging Face directory for ``model``; merges a verl checkpoint into ``merged_dir``
    with verl's ``model_merger merge --backend fsdp`` (skipped when already merged), weights-only
    unless ``trust``."""
    p = Path(model)
    if not p.exists():
        raise FileNotFoundError(f"--model {model}: no such directory")
    if not p.is_dir():
        raise NotADirectoryError(f"--model {model}: is a file; pass the model's directory (Hugging Face "
                                 "config.json + weights) or a verl checkpoint's global_step_N directory")
    if is_hf_dir(p):
        return str(p)
    actor = fsdp_actor_dir(p)
    if actor is None:
        raise ValueError(
            f"--model {model}: neither a Hugging Face model directory (config.json + weights) nor a verl "
            "FSDP checkpoint (fsdp_config.json + model_world_size_*_rank_*.pt, in it or in actor/)"
        )
    target = Path(merged_dir)
    if is_hf_dir(target):
        return str(target)
    target.mkdir(parents=True, exist_ok=True)
    merger = "verl.model_merger" if trust else "verl_ext.eval.safe_merge"
    cmd = [sys.executable, "-m", merger, "merge", "--backend", "fsdp",
           "--local_dir", str(actor), "--target_dir", str(target)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if not trust and SAFE_LOAD_FAILED in proc.stderr:
        why = proc.stderr[proc.stderr.index(SAFE_LOAD_FAILED):].splitlines()[0]
        raise CheckpointRefused(
            f"--model {model}: a shard holds objects other than tensors, which could run code when loaded "
            f"({why}). Pass --trust-checkpoint only if you trust where this checkpoint came from.")
    if proc.returncode != 0 or not is_hf_dir(target):
        raise RuntimeError(f"merging the verl checkpoint {actor} failed:\n{' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return str(target)
