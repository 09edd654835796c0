"""Token mask of the reasoning spans ``<thought> ... </thought>`` of a response (RLSD thought_only)."""

from __future__ import annotations

from typing import Sequence

import torch


def thought_mask(
    response_ids: Sequence[int], tokenizer, width: int | None = None, open_tag: str = "<thought>", close_tag: str = "</thought>"
) -> torch.Tensor:
    """``[width]`` float mask: 1 for tokens inside any ``open_tag`` .. ``close_tag`` span, else 0.

    As released: every span counts, the tag tokens themselves do not, and an unclosed span runs to
    the end of the response. A token is inside when its characters overlap a span's interior and no
    tag. Character offsets come from decoding each token on its own, so multi-byte characters split
    across tokens do not shift them.
    """
    ids = list(response_ids)
    width = len(ids) if width is None else int(width)
    mask = torch.zeros(width)
    pieces = [tokenizer.decode([t]) for t in ids]
    text = "".join(pieces)
    interiors, tags = [], []
    pos = text.find(open_tag)
    while pos >= 0:
        start = pos + len(open_tag)
        tags.append((pos, start))
        end = text.find(close_tag, start)
        if end < 0:
            interiors.append((start, len(text)))
            break
        interiors.append((start, end))
        tags.append((end, end + len(close_tag)))
        pos = text.find(open_tag, end + len(close_tag))
    if not interiors:
        return mask
    overlaps = lambda lo, hi, spans: any(hi > a and lo < b for a, b in spans)  # noqa: E731
    pos = 0
    for k, piece in enumerate(pieces[:width]):
        lo, hi = pos, pos + len(piece)
        if overlaps(lo, hi, interiors) and not overlaps(lo, hi, tags):
            mask[k] = 1.0
        pos = hi
    return mask
