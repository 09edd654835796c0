"""``python -m verl_ext.eval.safe_merge <verl.model_merger arguments>``: verl's model merger with
every ``torch.load`` forced to ``weights_only=True``.

verl's FSDP merger loads the shards with ``weights_only=False``, so a crafted shard runs code when
it is unpickled. Here only tensors and the classes torch itself allow-lists for weights-only
loading once ``torch.distributed.tensor`` is imported (``DTensor``, its spec, ``DeviceMesh``,
``Shard``/``Replicate``: all a verl FSDP shard holds) can be built; anything else stops the merge
with torch's ``UnpicklingError`` naming the refused global. The override lives only in this
short-lived process.
"""

from __future__ import annotations

import functools
import sys

import torch
import torch.distributed.tensor  # noqa: F401  (registers DTensor and friends as weights-only safe)

from verl_ext.eval.checkpoint import SAFE_LOAD_FAILED


def _weights_only(load):
    @functools.wraps(load)
    def safe_load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        try:
            return load(f, *args, **kwargs)
        except Exception as e:
            if "Weights only load failed" not in str(e):
                raise
            print(f"{SAFE_LOAD_FAILED}: {f}: {_refused_global(str(e))}", file=sys.stderr)
            sys.exit(3)
    return safe_load


def _refused_global(message: str) -> str:
    """The line of torch's message that says what was refused (its other lines are advice)."""
    lines = [x.strip() for x in message.splitlines()[1:] if x.strip()]
    for line in lines:
        if "GLOBAL" in line or "global" in line or "Unsupported" in line or "must be imported" in line:
            return line
    return lines[0] if lines else message.strip()


def main(argv: list[str] | None = None) -> None:
    torch.load = _weights_only(torch.load)
    from verl.model_merger.__main__ import main as merger_main

    sys.argv = ["verl.model_merger", *(sys.argv[1:] if argv is None else argv)]
    merger_main()


if __name__ == "__main__":
    main()
