"""Final-answer extraction from a model response.

One function, :func:`extract_answer`, used by every benchmark scorer. It is the single place to
swap in the training reward's extractor, so that evaluation and reward read answers identically.
"""

from __future__ import annotations

import re

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_THINK_END = "</think>"


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces, else None."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None  # unbalanced: the response was cut off inside the box


def extract_answer(response: str) -> str:
    """The model's final answer: the last ``<answer>...</answer>``, else the last ``\\boxed{}``,
    else the tail (the text after the last ``</think>``, or the whole response), stripped.

    A ``\\boxed{}`` inside the chosen ``<answer>`` block is unwrapped; a box inside a closed
    ``<think>`` block is not an answer.
    """
    if response is None:
        return ""
    tags = _ANSWER_TAG.findall(response)
    if tags:
        ans = tags[-1]
        boxed = last_boxed(ans)
        return (boxed if boxed is not None else ans).strip()
    tail = response.rsplit(_THINK_END, 1)[-1]
    boxed = last_boxed(tail)
    if boxed is not None:
        return boxed.strip()
    return tail.strip()
