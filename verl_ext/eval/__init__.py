"""Evaluation on MMMU, MathVista, MathVision, ZeroBench and WeMath (rule-based scorers), beside the
paper's Table 2. Command: ``python -m verl_ext.eval``; scorers: :mod:`verl_ext.eval.scorers`;
reward entry for verl's validation: :mod:`verl_ext.eval.val_reward`."""

from verl_ext.eval.extract import extract_answer
from verl_ext.eval.scorers import BENCHMARKS, SCORER_VERSION, aggregate, score, wemath_group_metrics

__all__ = ["BENCHMARKS", "SCORER_VERSION", "aggregate", "extract_answer", "score", "wemath_group_metrics"]
