"""verl's ``RLHFDataset`` with the released image resize (``data.custom_cls``).

The released loader brings each image into its pixel range with PIL first: above ``max_pixels`` both
sides are scaled by ``sqrt(max_pixels / (w h))`` and floored with ``int()``, below ``min_pixels``
likewise; the processor then rounds the sides to multiples of 32. verl's stock path hands the range
to qwen-vl-utils' ``smart_resize`` instead (multiples of ``2 * data.image_patch_size`` with its own
rounding), which gives another token count for most sizes. Here each image entry's
``min_pixels``/``max_pixels`` (written by ``data_prep``) drive the released resize; qwen-vl-utils
then only rounds to the processor's multiple, as the released processor does. verl calls the same
classmethod for the prompt-length filter, the rollout (its agent loop reads ``dataset_cls``) and so
the training forward and the teacher pass, which reuse the rollout's pixels.
"""

from __future__ import annotations

import math
from io import BytesIO

from PIL import Image
from verl.utils.dataset.rl_dataset import RLHFDataset

CLAMP_KEYS = ("min_pixels", "max_pixels")


def released_resize(image: Image.Image, min_pixels: int | None, max_pixels: int | None) -> Image.Image:
    """The released ``process_image``: PIL resize by a square-root factor, sides floored, into
    ``min_pixels..max_pixels``; RGB."""
    if max_pixels is not None and image.width * image.height > max_pixels:
        f = math.sqrt(max_pixels / (image.width * image.height))
        image = image.resize((int(image.width * f), int(image.height * f)))
    if min_pixels is not None and image.width * image.height < min_pixels:
        f = math.sqrt(min_pixels / (image.width * image.height))
        image = image.resize((int(image.width * f), int(image.height * f)))
    return image if image.mode == "RGB" else image.convert("RGB")


def _resized_item(item: dict) -> dict:
    """One ``{"type": "image", ...}`` message item with its image resized the released way and no
    clamp left for qwen-vl-utils (which then only rounds to its factor)."""
    if not any(item.get(k) is not None for k in CLAMP_KEYS):
        return item
    image = item.get("image")
    if image is None and item.get("bytes") is not None:
        image = Image.open(BytesIO(item["bytes"]))
    if not isinstance(image, Image.Image):
        return item  # a path or URL: qwen-vl-utils loads it with the clamp, verl's way
    image.load()
    out = {k: v for k, v in item.items() if k not in CLAMP_KEYS and k != "bytes"}
    out["image"] = released_resize(image, item.get("min_pixels"), item.get("max_pixels"))
    return out


def with_released_resize(messages: list[dict]) -> list[dict]:
    """A copy of ``messages`` whose image items are resized as released (the input is not changed:
    verl reuses the raw prompt)."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [_resized_item(c) if isinstance(c, dict) and c.get("type") == "image" else c for c in content]
            message = {**message, "content": content}
        out.append(message)
    return out


class ReleasedResizeDataset(RLHFDataset):
    """``data.custom_cls``: verl's dataset, images resized as the released loader resizes them."""

    @classmethod
    def _process_multi_modal_info(cls, messages, image_patch_size, config):
        return super()._process_multi_modal_info(with_released_resize(messages), image_patch_size, config)

    @classmethod
    async def process_vision_info(cls, messages, image_patch_size, config):
        return await super().process_vision_info(with_released_resize(messages), image_patch_size, config)
