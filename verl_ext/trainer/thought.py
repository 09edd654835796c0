"""Token mask of the reasoning span ``<thought> ... </thought>`` of a response (RLSD thought_only)."""

from __future__ import annotations

from typing import Sequence

import torch


def thought_mask(
    response_ids: Sequence[int], tokenizer, width: int | None = None, open_tag: str = "<thought>", close_tag: str = "</thought>"
) -> torch.Tensor:
    """``[width]`` float mask: 1 for tokens overlapping the first ``open_tag`` .. ``close_tag`` span
    (tags included; to the end of the response when the block is not closed), else 0.

    Character offsets come from decoding each token on its own, so multi-byte characters split
    across tokens do not shift them.
    """
    ids = list(response_ids)
    width = len(ids) if width is None else int(width)
    mask = torch.zeros(width)
    pieces = [tokenizer.decode([t]) for t in ids]
    text = "".join(pieces)
    start = text.find(open_tag)
    if start < 0:
        return mask
    end = text.find(close_tag, start + len(open_tag))
    end = len(text) if end < 0 else end + len(close_tag)
    pos = 0
    for k, piece in enumerate(pieces[:width]):
        lo, hi = pos, pos + len(piece)
        if hi > start and lo < end:
            mask[k] = 1.0
        pos = hi
    return mask
