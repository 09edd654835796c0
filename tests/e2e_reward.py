"""Test-only reward for the end-to-end runs (not the project's reward; that is ``verl_ext.reward``).

A tiny random model never answers correctly, so the real reward is 0 for every response, every
GRPO group has zero advantage and no gradient. This deterministic pseudo-random score of the text,
``(sum of code points) mod 997 / 996``, differs between distinct responses, so group advantages
are non-zero and the update is a real gradient step.
"""


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    return (sum(map(ord, solution_str)) % 997) / 996.0
