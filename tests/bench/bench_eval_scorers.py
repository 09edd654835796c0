"""Throughput of the evaluation scorers (they also run inside verl's validation, once per response).

    python tests/bench/bench_eval_scorers.py [--n 2000]

Prints responses scored per second for each benchmark on long synthetic responses (a ~2,000
character reasoning text followed by the answer), and the share of time spent in extraction.

Then the training reward's ``released`` variant on crafted worst-case responses (repeated answer
tags, whitespace runs, format tags, unclosed commands) of 50,000 and 200,000 characters: the seconds
for one response on its slowest route, and their ratio (4 for a linear cost, 16 for a quadratic one).
The released regular expressions took 48-76 s on the 200,000-character answer-tag response.
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
    worst_case_released()


WORST = {
    "answer tags": "<answer>",
    "whitespace": " ",
    "format tags": "</thought><answer>",
    "unclosed text{": "\\text{ a",
    "unclosed boxed{": "\\boxed{",
}
ROUTES = ("math", "multiple choice", "numerical", "open-ended", "ocr", "boolean")


def worst_case_released() -> None:
    from verl_ext.reward.released import released_score

    for route in ROUTES:  # warm-up: imports, the ROUGE scorer and the grader process
        released_score("x y", "42", route, 1)

    def slowest(text: str) -> tuple[float, str]:
        best = (0.0, "")
        for route in ROUTES:
            t0 = time.perf_counter()
            released_score(text, "the reference answer", route, 100)
            best = max(best, (time.perf_counter() - t0, route))
        return best

    print(f"\nreleased reward, one crafted response\n{'shape':<16} {'slowest route':<16} {'50k chars s':>12} "
          f"{'200k chars s':>13} {'ratio':>6}")
    for shape, unit in WORST.items():
        small, route = slowest("<thought>" + unit * (50_000 // len(unit)) + "x")
        large, _ = slowest("<thought>" + unit * (200_000 // len(unit)) + "x")
        print(f"{shape:<16} {route:<16} {small:>12.3f} {large:>13.3f} {large / max(small, 1e-9):>6.1f}")


if __name__ == "__main__":
    main()
