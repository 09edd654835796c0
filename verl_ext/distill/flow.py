"""Driver side of the logit-level loss: how the ``[B, R_b, k]`` values move between verl's passes.

Per step, with ``algorithm.distill.loss`` top-k (nothing happens with ``sampled``):

1. old-log-prob pass (student, verl's forward on the actor): also records the student's top-k ids at
   every response position -> trajectory field ``distill_topk_ids`` (int32).
2. teacher pass (privileged prompt + the same response tokens): the teacher rows carry those ids; the
   same forward that scores the sampled tokens gathers the teacher's log-probs at them (normalised
   with the teacher's full logsumexp) -> copied to the trajectory as ``distill_teacher_topk`` (fp32),
   with ``distill_valid`` (sdpo rows without a successful sibling: 0).
3. update: the actor's loss reads both and recomputes the student's log-probs at the ids.

The ids are the old policy's top-k; with one update per step that is the policy being updated.
"""

from __future__ import annotations

from typing import Any

import torch
import transfer_queue as tq
from tensordict import TensorDict

from verl_ext.algorithms.registry import GRPO_OPSD_DEFAULTS
from verl_ext.algorithms.checks import section
from verl_ext.distill.actor import PASS_FLAG, TEACHER_TOPK, TOPK_IDS, VALID
from verl_ext.distill.config import PURE_DISTILL_ESTIMATORS, DistillOptions, distill_options


class DistillFlow:
    """What the ``self_distill`` trainer calls; every method is a no-op for ``loss=sampled``."""

    def __init__(self, algorithm_config: Any, estimator: str):
        self.estimator = estimator
        self.options: DistillOptions = distill_options(algorithm_config, estimator)
        self.enabled = self.options.logit_level
        if estimator in PURE_DISTILL_ESTIMATORS:
            self.coef = 1.0
        else:
            self.coef = float(section(algorithm_config, "grpo_opsd", GRPO_OPSD_DEFAULTS)["beta"])

    def setup_workers(self, actor_rollout_wg, ref_wg=None) -> None:
        """Give the actor (and the ref/teacher copy) the options; swap the actor's loss."""
        if not self.enabled:
            return
        groups = [actor_rollout_wg] + ([ref_wg] if ref_wg is not None and ref_wg is not actor_rollout_wg else [])
        for wg in groups:
            wg.set_distill_loss(self.options.to_dict(), self.estimator, self.coef)

    @property
    def needs_student_ids(self) -> bool:
        """The teacher rows carry the student's top-k ids, known only after the old-log-prob pass."""
        return self.enabled and self.options.support == "student"

    # ----------------------------------------------------------------- 1. student pass
    def mark_student_pass(self, batch) -> None:
        if self.needs_student_ids:
            batch.extra_info[PASS_FLAG] = "student"

    def unmark(self, batch) -> None:
        batch.extra_info.pop(PASS_FLAG, None)

    # ----------------------------------------------------------------- 2. teacher pass
    def add_teacher_inputs(self, batch, rows: list[dict], extra_info: dict) -> None:
        """Put the student's top-k ids into the teacher rows (same order as ``batch.keys``)."""
        if not self.enabled:
            return
        if self.options.support == "teacher":  # the teacher forward picks its own top-k
            extra_info[PASS_FLAG] = "teacher_topk"
            return
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=[TOPK_IDS])
        ids = data[TOPK_IDS].unbind()
        if len(ids) != len(rows):
            raise RuntimeError(f"{len(ids)} top-k id rows for {len(rows)} teacher rows")
        for row, row_ids in zip(rows, ids):
            if row_ids.shape[0] != row["response_mask"].shape[0]:
                raise RuntimeError(
                    f"top-k ids cover {row_ids.shape[0]} positions, the response has {row['response_mask'].shape[0]}"
                )
            row[TOPK_IDS] = row_ids
        extra_info[PASS_FLAG] = "teacher"

    def store_teacher_values(self, batch, valid: torch.Tensor, teacher_keys=None, teacher_partition=None) -> None:
        """Copy the teacher's top-k log-probs to the trajectories (zeros when no forward ran)."""
        if not self.enabled:
            return
        teacher_support = self.options.support == "teacher"
        fields = {VALID: valid.detach().float().cpu().reshape(-1)}
        if teacher_keys is not None:
            select = [TEACHER_TOPK, TOPK_IDS] if teacher_support else [TEACHER_TOPK]
            out = tq.kv_batch_get(keys=teacher_keys, partition_id=teacher_partition, select_fields=select)
            fields.update({f: out[f] for f in select})
        else:  # no teacher forward this step (no row had a hint): the loss is masked by distill_valid
            masks = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["response_mask"])
            lengths = [int(m.shape[0]) for m in masks["response_mask"].unbind()]
            k = self.options.topk
            zeros = lambda dtype: torch.nested.as_nested_tensor(  # noqa: E731
                [torch.zeros((n, k), dtype=dtype) for n in lengths], layout=torch.jagged
            )
            fields[TEACHER_TOPK] = zeros(torch.float32)
            if teacher_support:
                fields[TOPK_IDS] = zeros(torch.int32)
        fields = TensorDict(fields, batch_size=len(batch))
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)


__all__ = ["DistillFlow"]
