"""A verl reward function that scores benchmark rows with the evaluation scorers.

verl's validation (``trainer.test_freq``) calls the reward function on every validation response
and groups the returned keys by ``data_source``: with ``acc`` present, the metric
``val-core/<data_source>/acc/mean@1`` is the benchmark's row accuracy. Wiring::

    reward.custom_reward_function.path=pkg://verl_ext.eval.val_reward
    reward.custom_reward_function.name=compute_score
    data.val_files=[DIR/mmmu/validation.parquet,DIR/mathvista/testmini.parquet,...]
    trainer.test_freq=10
    actor_rollout_ref.rollout.val_kwargs.do_sample=True
    actor_rollout_ref.rollout.val_kwargs.temperature=0.7
    actor_rollout_ref.rollout.val_kwargs.top_p=0.8
    actor_rollout_ref.rollout.val_kwargs.top_k=20
    data.max_response_length=4096

verl 0.9.1's validation sampling has no presence penalty setting (``val_kwargs`` holds temperature,
top-k, top-p, do_sample and n), so in-training numbers follow the ``default`` protocol except for
that penalty; the command-line evaluation applies it.

Rows of other data sources (training data) go to ``fallback`` (the project's training reward when
present, else verl's ``default_compute_score``), so one function serves training and validation.
WeMath's group score needs whole groups and is not a per-row quantity: validation shows WeMath
row accuracy; the command-line evaluation reports the group score.
"""

from __future__ import annotations

from typing import Any, Callable

from verl_ext.eval.scorers import SCORERS, score


def _default_fallback(data_source, solution_str, ground_truth, extra_info, **kwargs):
    """The project's training reward (``verl_ext.reward.compute_score``) when installed, else
    verl's ``default_compute_score``."""
    try:
        from verl_ext.reward import compute_score as training_reward
    except ImportError:
        from verl.utils.reward_score import default_compute_score

        return default_compute_score(data_source, solution_str, ground_truth, extra_info)
    return training_reward(data_source=data_source, solution_str=solution_str, ground_truth=ground_truth,
                           extra_info=extra_info, **kwargs)


fallback: Callable[..., Any] = _default_fallback


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None, **kwargs) -> Any:
    """``{"score": 1.0|0.0, "acc": same, "pred": normalised prediction}`` for benchmark rows;
    ZeroBench rows also get ``acc_<variant>`` (``acc_subquestions`` / ``acc_main``)."""
    if data_source not in SCORERS:
        return fallback(data_source, solution_str, ground_truth, extra_info, **kwargs)
    extra_info = dict(extra_info or {})
    res = score(data_source, solution_str, ground_truth, extra_info)
    ok = 1.0 if res["correct"] else 0.0
    out = {"score": ok, "acc": ok, "pred": "" if res["pred"] is None else str(res["pred"])}
    if data_source == "zerobench":
        out[f"acc_{extra_info.get('variant') or 'subquestions'}"] = ok
    return out
