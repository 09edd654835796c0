"""Per-token text pieces of a response, for display and for locating the answer block."""

from __future__ import annotations

from typing import Sequence

_REPLACEMENT = "\ufffd"
# A UTF-8 character spans at most 4 bytes, so at most 4 byte-level BPE tokens.
_MAX_GROUP = 4


def token_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """One string per token id whose concatenation is the decoded response.

    Tokens are decoded one by one (special tokens kept). A character split across byte-level tokens
    decodes to U+FFFD on its own; such a run (up to 4 tokens) is decoded together and its text is
    given to the run's last token, the earlier ones getting "". Returns ``len(ids)`` strings.
    """
    ids = [int(t) for t in ids]
    out = list(tokenizer.batch_decode([[t] for t in ids], skip_special_tokens=False))
    i, n = 0, len(ids)
    while i < n:
        if _REPLACEMENT in out[i]:
            for j in range(i + 1, min(i + _MAX_GROUP, n)):
                text = tokenizer.decode(ids[i : j + 1], skip_special_tokens=False)
                if _REPLACEMENT not in text:
                    out[i:j] = [""] * (j - i)
                    out[j] = text
                    i = j
                    break
        i += 1
    return out


def answer_token_mask(pieces: Sequence[str], open_tag: str = "<answer>", close_tag: str = "</answer>") -> list[bool]:
    """True for the tokens overlapping the content of the last complete ``open_tag ... close_tag`` block.

    The content is the text strictly between the tags (the tags themselves are excluded); offsets
    come from the concatenated ``pieces``. All False when there is no complete block.
    """
    text = "".join(pieces)
    close = text.rfind(close_tag)
    mask = [False] * len(pieces)
    if close < 0:
        return mask
    opened = text.rfind(open_tag, 0, close)
    if opened < 0:
        return mask
    lo_char, hi_char = opened + len(open_tag), close
    pos = 0
    for k, piece in enumerate(pieces):
        lo, hi = pos, pos + len(piece)
        if hi > lo_char and lo < hi_char:
            mask[k] = True
        pos = hi
    return mask
