"""Symbolic-equivalence worker, run as a separate process by ``guard.py`` (one JSON request per
line on stdin: ``[prediction, truth]`` or ``[prediction, truth, "mathruler"]`` for mathruler's
``grade_answer`` alone; one line back: ``1``, ``0`` or ``E``). Kept free of package
imports so it starts fast; its parent kills it when a request runs past the time limit."""

import json
import logging
import sys


def _equal(pred: str, truth: str, method: str = "both") -> bool:
    from math_verify import parse, verify
    from mathruler.grader import grade_answer

    if grade_answer(pred, truth):
        return True
    if method == "mathruler":
        return False
    gold = parse("\\boxed{" + truth + "}", parsing_timeout=None)
    target = parse("\\boxed{" + pred + "}", parsing_timeout=None)
    return bool(gold and target and verify(gold, target, timeout_seconds=None))


def main() -> None:
    logging.disable(logging.WARNING)  # math-verify warns once that its own timeout is off: ours is on
    import math_verify  # noqa: F401  (import cost paid before "ready")
    import mathruler.grader  # noqa: F401

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            out = "1" if _equal(str(req[0]), str(req[1]), *req[2:3]) else "0"
        except Exception:  # any failure on odd input counts as "not equal"
            out = "E"
        sys.stdout.write(out + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
