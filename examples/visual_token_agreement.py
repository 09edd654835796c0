"""Visual tokens per image: the released loader against verl's dataset paths, over random image sizes.

    python examples/visual_token_agreement.py [--n 2010] [--seed 0] [--max-side 4000]

Each size is a real PIL image taken through each path's resize; the processor's last step (Qwen3-VL:
sides rounded to multiples of 32 within 65,536..16,777,216 pixels, one token per 32x32) is
transformers' ``smart_resize``. Paths:
- released: PIL resize by a square-root factor with int() floors into 262,144..1,048,576 pixels;
- ours: ``verl_ext.dataset.ReleasedResizeDataset`` (the recipes' ``data.custom_cls``);
- stock verl, ``data.image_patch_size`` 14 (verl's default) and 16: qwen-vl-utils ``fetch_image``.
Prints the share of sizes whose token count equals the released one, and the mean token counts.
"""

from __future__ import annotations

import argparse
import random

from PIL import Image
from qwen_vl_utils import fetch_image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from verl_ext.dataset import ReleasedResizeDataset, released_resize

LO, HI = 262144, 1048576


def processor_tokens(w: int, h: int) -> int:
    rh, rw = smart_resize(h, w, factor=32, min_pixels=65536, max_pixels=16777216)
    return (rh // 32) * (rw // 32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2010)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-side", type=int, default=4000)
    args = p.parse_args()
    rng = random.Random(args.seed)
    counts = {"released": [], "ours": [], "stock, patch 14": [], "stock, patch 16": []}
    for _ in range(args.n):
        w, h = rng.randint(32, args.max_side), rng.randint(32, args.max_side)
        if max(w, h) / min(w, h) > 200:
            continue
        img = Image.new("RGB", (w, h), (120, 80, 40))
        counts["released"].append(processor_tokens(*released_resize(img, LO, HI).size))
        item = {"type": "image", "image": img, "min_pixels": LO, "max_pixels": HI}
        images, _, _ = ReleasedResizeDataset._process_multi_modal_info([{"role": "user", "content": [item]}], 16, {})
        counts["ours"].append(processor_tokens(*images[0].size))
        for patch in (14, 16):
            out = fetch_image({"image": img, "min_pixels": LO, "max_pixels": HI}, image_patch_size=patch)
            counts[f"stock, patch {patch}"].append(processor_tokens(*out.size))
    ref = counts["released"]
    print(f"{len(ref)} image sizes, sides 32..{args.max_side}, seed {args.seed}")
    for name, got in counts.items():
        same = sum(a == b for a, b in zip(got, ref)) / len(ref)
        print(f"{name:>16}: same tokens as released {100 * same:6.2f} %, mean {sum(got) / len(got):7.1f} tokens")


if __name__ == "__main__":
    main()
