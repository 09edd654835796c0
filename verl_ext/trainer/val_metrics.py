"""Validation metrics with verl's bootstrap for the score keys only.

verl 0.9.1's ``process_validation_metrics`` computes ``best@k``/``worst@k`` for every key the reward returns,
by 1000 Python-level resamples per prompt, per key, per k: ~1 s per key per validation at 90 prompts x 4
samples on 2 CPU cores. The project's reward returns a dozen keys, most of them counters (``error``,
``gt_missing``, ``format``, ...) whose best and worst of k mean nothing; those keep verl's ``mean@n`` and
``std@n`` (the same per-prompt mean and population std, averaged over prompts) and skip the resampling. The
score keys below go through verl's function unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

# keys verl's validation bootstraps: the core accuracy/reward verl reports as val-core, the score, and the
# prediction verl's majority vote reads
BOOTSTRAPPED = frozenset({"acc", "acc_success_only", "reward", "score", "pred"})


def split_infos(infos: dict[str, list[Any]]) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """``infos`` as (keys verl bootstraps, the rest)."""
    core = {k: v for k, v in infos.items() if k in BOOTSTRAPPED}
    return core, {k: v for k, v in infos.items() if k not in BOOTSTRAPPED}


def mean_std_metrics(data_sources: list[str], sample_uids: list[str], infos: dict[str, list[Any]]) -> dict[str, float]:
    """``val-aux/<source>/<key>/mean@n`` and ``std@n`` as verl's ``process_validation_metrics`` computes them
    (per prompt over its non-None values, then the mean over prompts with the same n); string values are
    skipped, as verl skips them."""
    groups: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for key, values in infos.items():
        for source, uid, value in zip(data_sources, sample_uids, values, strict=True):
            groups[(source, key, uid)].append(value)
    per_metric: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for (source, key, _uid), values in groups.items():
        values = [v for v in values if v is not None]
        if not values or isinstance(values[0], str):
            continue
        n = len(values)
        per_metric[(source, key, f"mean@{n}")].append(float(np.mean(values)))
        if n > 1:
            per_metric[(source, key, f"std@{n}")].append(float(np.std(values)))
    return {f"val-aux/{source}/{key}/{name}": float(np.mean(vals)) for (source, key, name), vals in per_metric.items()}
