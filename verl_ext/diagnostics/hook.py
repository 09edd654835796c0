"""The one call the ``self_distill`` trainer makes after its advantage step."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from verl_ext.algorithms.checks import section
from verl_ext.algorithms.registry import RLSD_DEFAULTS, grpo_sequence_advantages
from verl_ext.diagnostics.dump import DiagnosticsConfig, TokenCreditDumper
from verl_ext.diagnostics.leakage import answer_leak_metrics, answer_token_masks, answer_token_metrics, stability_metrics


class TrainerDiagnostics:
    """Leakage/stability metrics every step and token-credit dumps every ``dump_every`` steps.

    Built from the algorithm config (``algorithm.diagnostics``, see :class:`DiagnosticsConfig`)."""

    def __init__(self, algorithm_config: Any, tokenizer, estimator: str):
        raw = algorithm_config.get("diagnostics", None) if algorithm_config is not None else None
        self.config = DiagnosticsConfig.from_config(raw)
        self.algorithm_config = algorithm_config
        self.tokenizer = tokenizer
        self.estimator = str(estimator)
        self.dumper = TokenCreditDumper(self.config, tokenizer)

    def step(
        self,
        *,
        step: int,
        samples: Sequence[Any],
        response_mask: torch.Tensor,
        old_log_probs: torch.Tensor,
        teacher_log_probs: torch.Tensor,
        advantages: torch.Tensor,
        token_level_rewards: torch.Tensor,
        uids: np.ndarray,
        teacher_valid: torch.Tensor | None = None,
        lam: float | None = None,
    ) -> dict[str, float]:
        """``samples``: per row, objects with ``response_ids`` and ``ground_truth`` (the teacher
        pass's :class:`~verl_ext.privileged.StudentSample`); tensors ``[B, T]``. Returns ``diag/`` metrics."""
        if not self.config.leakage and not self.dumper.should_dump(step):
            return {}
        mask = response_mask.bool()
        seq_adv = grpo_sequence_advantages(token_level_rewards, response_mask, uids, self.algorithm_config, self.estimator)
        ids = [list(s.response_ids) for s in samples]
        truths = [s.ground_truth for s in samples]
        metrics: dict[str, float] = {}
        if self.config.leakage:
            texts = self.tokenizer.batch_decode(
                [row[: int(mask[i].sum())] for i, row in enumerate(ids)], skip_special_tokens=True
            )
            metrics.update(answer_leak_metrics(texts, truths))
            answer_mask = answer_token_masks(self.tokenizer, ids, response_mask, self.config.answer_window)
            metrics.update(answer_token_metrics(teacher_log_probs, old_log_probs, response_mask, answer_mask, teacher_valid))
            metrics.update(stability_metrics(advantages, seq_adv, teacher_log_probs, old_log_probs, response_mask))
        clip_eps = None
        if self.estimator == "rlsd":
            clip_eps = float(section(self.algorithm_config, "rlsd", RLSD_DEFAULTS)["clip_eps"])
        path = self.dumper.dump(
            step,
            estimator=self.estimator,
            response_ids=ids,
            response_mask=response_mask,
            old_log_probs=old_log_probs,
            teacher_log_probs=teacher_log_probs,
            advantages=advantages,
            seq_advantages=seq_adv,
            rewards=token_level_rewards.sum(-1),
            uids=[str(u) for u in uids],
            lam=lam,
            clip_eps=clip_eps,
            teacher_valid=teacher_valid,
            ground_truths=truths,
            data_sources=[(getattr(s, "extra_info", None) or {}).get("data_source") for s in samples],
        )
        if path is not None:
            metrics["diag/dumped_responses"] = float(min(self.config.num_responses, len(samples)))
        return metrics
