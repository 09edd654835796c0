"""Throughput of the evaluation scorers (they also run inside verl's validation, once per response).

    python tests/bench/bench_eval_scorers.py [--n 2000]

Prints responses scored per second for each benchmark on long synthetic responses (a ~2,000
character reasoning text followed by the answer), and the share of time spent in extraction.
"""

from __future__ import annotations

import argparse
import random
import time

from verl_ext.eval.extract import extract_answer
from verl_ext.eval.scorers import score

MC = "multiple choice"
FILLER = "Let us consider the figure carefully. The angle at B equals 30 degrees, so the side is 4. " * 22

CASES = {
    "mmmu": ("<answer>C</answer>", "C", {"problem_type": MC, "options": ["3 cm", "4 cm", "5 cm", "6 cm"]}),
    "mathvista": ("\\boxed{1.46}", "1.5", {"question_type": "free_form", "answer_type": "float", "precision": 1, "options": []}),
    "mathvision": ("\\boxed{\\frac{6}{8}}", "\\frac{3}{4}", {"problem_type": "math", "options": []}),
    "zerobench": ("<answer>1,234</answer>", "1234", {"variant": "subquestions"}),
    "wemath": ("<answer>B</answer>", "B", {"problem_type": MC, "options": ["12", "15", "18", "20"]}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    n = ap.parse_args().n
    rng = random.Random(0)
    print(f"{'benchmark':<11} {'responses/s':>12} {'extract share':>14}")
    for bench, (tail, gold, info) in CASES.items():
        responses = [FILLER[: rng.randint(1500, 2000)] + " " + tail for _ in range(n)]
        score(bench, responses[0], gold, info)  # warm-up (imports)
        t0 = time.perf_counter()
        ok = sum(score(bench, r, gold, info)["correct"] for r in responses)
        dt = time.perf_counter() - t0
        t1 = time.perf_counter()
        for r in responses:
            extract_answer(r)
        de = time.perf_counter() - t1
        assert ok == n, f"{bench}: {ok}/{n} correct"
        print(f"{bench:<11} {n / dt:>12.0f} {de / dt:>13.1%}")


if __name__ == "__main__":
    main()
