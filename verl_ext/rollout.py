"""The released rollout's per-request sampling extras, as a verl agent loop (``rlsd_single_turn``).

verl's single-turn agent loop sends each sample as its own request with the sampling settings the
worker built; this subclass adds, from ``algorithm.rollout``:

- ``vision_logit_bias`` (-100, as released): added to the image and video pad tokens' logits in every
  request, so the policy never samples a vision placeholder (vLLM's ``SamplingParams.logit_bias``);
- ``seed`` (null; the released code seeds with 1): request seed ``seed + i`` for the i-th sample of a
  prompt's group (verl's ``session_id``), so sample i of every group draws from the same seed at every
  step, and the samples of one group differ.

Selected by ``actor_rollout_ref.rollout.agent.default_agent_loop=rlsd_single_turn`` (shared.yaml).
"""

from __future__ import annotations

from typing import Any

from verl.experimental.agent_loop.agent_loop import register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

AGENT_LOOP_NAME = "rlsd_single_turn"
ROLLOUT_DEFAULTS = {"vision_logit_bias": -100.0, "seed": None}


def rollout_options(config) -> dict[str, Any]:
    from verl_ext.algorithms.checks import section

    return section(config.algorithm, "rollout", ROLLOUT_DEFAULTS)


def vision_token_ids(processor) -> list[int]:
    """The image and video pad token ids of a VL processor (the released rule: its ``image_token``
    and ``video_token``); none for a text model."""
    if processor is None:
        return []
    ids = []
    for attr in ("image_token", "video_token"):
        token = getattr(processor, attr, None)
        if token is not None:
            ids.append(int(processor.tokenizer.convert_tokens_to_ids(token)))
    return ids


def request_sampling_params(sampling_params: dict[str, Any], options: dict[str, Any], processor,
                            sample_in_group: int = 0) -> dict[str, Any]:
    """``sampling_params`` plus the logit bias and seed of one request (a new dict)."""
    params = dict(sampling_params)
    bias = options.get("vision_logit_bias")
    ids = vision_token_ids(processor) if bias is not None else []
    if ids:
        merged = dict(params.get("logit_bias") or {})
        merged.update({i: float(bias) for i in ids})
        params["logit_bias"] = merged
    if options.get("seed") is not None:
        params["seed"] = int(options["seed"]) + int(sample_in_group)
    return params


@register(AGENT_LOOP_NAME)
class RLSDSingleTurnAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn loop with the released per-request sampling extras."""

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> Any:
        params = request_sampling_params(sampling_params, rollout_options(self.config), self.processor,
                                         int(kwargs.get("session_id", 0) or 0))
        return await super().run(params, **kwargs)
