"""Answer extraction from a model response (pure string functions, never raise).

Order (method.md / data.md): the last complete ``<answer>...</answer>`` block, else the last
``\\boxed{...}``; an answer block that itself holds a ``\\boxed{}`` is unwrapped to the box.
"""

from __future__ import annotations

import re

_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"
_BOX_CMDS = ("\\boxed", "\\fbox")
_FORMAT_RE = re.compile(r"\s*<thought>(.*?)</thought>\s*<answer>(.*?)</answer>\s*", re.DOTALL)


def _last_answer_block(text: str) -> str | None:
    end = text.rfind(_ANSWER_CLOSE)
    if end < 0:
        return None
    start = text.rfind(_ANSWER_OPEN, 0, end)
    if start < 0:
        return None
    return text[start + len(_ANSWER_OPEN) : end]


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, or ``\\boxed x``) in ``text``, or None
    when there is none or its braces never close."""
    if not isinstance(text, str):
        return None
    pos, cmd = max((text.rfind(c), c) for c in _BOX_CMDS)
    if pos < 0:
        return None
    i = pos + len(cmd)
    if i < len(text) and text[i] == " ":  # "\boxed 5": the argument runs to the next "$" or whitespace
        rest = text[i + 1 :].split("$", 1)[0].strip()
        return rest.split()[0] if rest else None
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        ch = text[j]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def extract_answer(text: str, allow_tail: bool = False) -> str | None:
    """The final answer of a response: the last complete ``<answer>`` block (its ``\\boxed{}``
    unwrapped when it holds one), else the last ``\\boxed{}``; with ``allow_tail``, else the last
    non-empty line (the evaluation's last resort). Returns None when nothing is found; never raises."""
    if not isinstance(text, str) or not text:
        return None
    block = _last_answer_block(text)
    if block is not None:
        inner = last_boxed(block)
        return (inner if inner is not None else block).strip()
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    if allow_tail:
        for line in reversed(text.splitlines()):
            if line.strip():
                return line.strip()
    return None


def has_format(text: str) -> bool:
    """True when the response is exactly ``<thought>...</thought>`` then ``<answer>...</answer>``
    (whitespace around allowed, each tag once, non-empty answer)."""
    if not isinstance(text, str):
        return False
    for tag in ("<thought>", "</thought>", _ANSWER_OPEN, _ANSWER_CLOSE):
        if text.count(tag) != 1:
            return False
    m = _FORMAT_RE.fullmatch(text)
    return bool(m and m.group(2).strip())
