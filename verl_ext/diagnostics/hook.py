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
        seq_adv = grpo_sequence_advantages(token_level_rewards, response_mask, uids, self.algorithm_config, self.estimator)
        # rows verl added to fill the batch (is_padding) count in no metric and are dumped last
        real = torch.tensor([not getattr(s, "is_padding", False) for s in samples])
        real_mask = response_mask * real.unsqueeze(-1).to(response_mask.dtype)
        valid = real if teacher_valid is None else real & teacher_valid.bool().cpu()
        ids = [list(s.response_ids) for s in samples]
        truths = [s.ground_truth if keep else None for s, keep in zip(samples, real.tolist())]
        metrics: dict[str, float] = {}
        if self.config.leakage:
            lengths = real_mask.sum(-1).long().tolist()
            texts = self.tokenizer.batch_decode([row[:n] for row, n in zip(ids, lengths)], skip_special_tokens=True)
            metrics.update(answer_leak_metrics(texts, truths))
            answer_mask = answer_token_masks(self.tokenizer, ids, real_mask, self.config.answer_window)
            metrics.update(answer_token_metrics(teacher_log_probs, old_log_probs, real_mask, answer_mask, valid))
            # rows without a teacher signal hold placeholder teacher log-probs and advantage 0
            valid_mask = real_mask * valid.unsqueeze(-1).to(real_mask.dtype)
            metrics.update(stability_metrics(advantages, seq_adv, teacher_log_probs, old_log_probs, valid_mask))
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
            teacher_valid=valid,
            ground_truths=truths,
            data_sources=[(getattr(s, "extra_info", None) or {}).get("data_source") for s in samples],
        )
        if path is not None:
            metrics["diag/dumped_responses"] = float(min(self.config.num_responses, len(samples)))
        return metrics
