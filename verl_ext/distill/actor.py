"""The logit-level loss inside verl's engine: logits processors for the two forward-only passes and
the actor's update, all per micro-batch (no ``[B, T, V]`` tensor beyond the micro-batch's logits).

verl's FSDP/Megatron engines call the worker's loss function twice per micro-batch when the batch
carries ``distillation_use_topk``: first as a *logits processor* with the micro-batch's logits
``[1, N, V]`` (N packed tokens, already divided by the temperature), whose per-token outputs become
``model_output`` fields; then as the loss with ``model_output``. The three uses here:

1. student pass (the old-log-prob forward): :class:`TopkRecorder` records the student's top-k ids at
   each response position -> trajectory field ``distill_topk_ids`` ``[B, R_b, k]``.
2. teacher pass (the privileged forward, same response tokens): :class:`TopkRecorder` gathers the
   teacher's log-probs at those ids -> ``distill_teacher_topk`` ``[B, R_b, k]``, aligned to the
   student's response positions exactly like the sampled-token teacher log-probs (the logits of
   position ``P + t - 1`` score response token ``t``).
3. update: :func:`self_distill_loss` recomputes the student's log-probs at the ids (with gradient) and
   the per-token divergence; verl's ``distillation_loss`` aggregates it (loss clamp, token-mean).
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict
from verl.trainer.distillation.losses import (
    DistillationLossSettings,
    distillation_loss,
    register_distillation_loss,
)
from verl.utils import tensordict_utils as tu
from verl.utils.metric import AggregationType, Metric
from verl.workers.config import DistillationConfig, DistillationLossConfig
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

from verl_ext.distill.config import PURE_DISTILL_ESTIMATORS, DistillOptions
from verl_ext.distill.losses import gather_log_probs, top_mass, topk_divergence, topk_ids

TOPK_IDS = "distill_topk_ids"  # [B, R_b, k] int32: the student's top-k ids per response position
TEACHER_TOPK = "distill_teacher_topk"  # [B, R_b, k] fp32: teacher log-probs at those ids
VALID = "distill_valid"  # [B] fp32: 1 where the row has a teacher (sdpo: a successful sibling)
ROW = "distill_row"  # [B] int64 row index, only inside a forward-only pass
IS_CLIP = "distill_is_clip"  # non-tensor: the importance-weight clip of the update
PASS_FLAG = "distill_topk_pass"  # non-tensor flag of a forward-only pass: "student" | "teacher" | "teacher_topk"
REGISTRY_NAME = "jsd_topk"  # in verl's distillation-loss registry
# Per-token loss clamp, as verl's loss_max_clamp and the released code's [-10, 10] (JSD/KL >= 0).
LOSS_CLAMP = 10.0


def response_rows(data: TensorDict, n_rows: int) -> tuple[torch.Tensor, list[int]]:
    """Packed row indices of the logits that score each sample's response tokens, and the lengths.

    Sample b occupies packed rows ``[o_b, o_b + L_b)``; its ``R_b`` response tokens are scored by
    rows ``[o_b + L_b - R_b - 1, o_b + L_b - 1)`` (verl's ``no_padding_2_padding`` convention).
    """
    input_ids, responses = data["input_ids"], data["responses"]
    if not (input_ids.is_nested and responses.is_nested):
        raise NotImplementedError("top-k distillation needs verl's no-padding (nested) batch layout")
    ends = input_ids.offsets()[1:].tolist()
    lens = responses.offsets().diff().tolist()
    if ends and ends[-1] > n_rows:
        raise ValueError(f"{ends[-1]} packed tokens but only {n_rows} logit rows (sequence parallelism is not supported)")
    rows = [torch.arange(e - r - 1, e - 1) for e, r in zip(ends, lens)]
    idx = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    return idx.to(input_ids.device), lens


def _flat(nested: torch.Tensor) -> torch.Tensor:
    """``[B, R_b, k]`` nested -> ``[sum R_b, k]`` in sample order."""
    return nested.values() if nested.is_nested else nested.reshape(-1, nested.shape[-1])


class TopkRecorder:
    """Loss function of a forward-only pass: records ``[R_b, k]`` per row, returns no outputs.

    ``mode="student"``: the top-k ids of the logits; ``"teacher"``: the log-probs at ``data[TOPK_IDS]``;
    ``"teacher_topk"``: the top-k ids of the logits and the log-probs at them (``ids`` holds the ids).
    Results are keyed by ``data[ROW]`` because verl's dynamic batching reorders rows across micro-batches.
    """

    def __init__(self, mode: str, topk: int, chunk_rows: int = 1024):
        if mode not in ("student", "teacher", "teacher_topk"):
            raise ValueError(f"unknown top-k pass {mode!r}")
        self.mode, self.topk, self.chunk_rows = mode, int(topk), int(chunk_rows)
        self.rows: dict[int, torch.Tensor] = {}
        self.ids: dict[int, torch.Tensor] = {}

    def __call__(self, student_logits=None, data=None, model_output=None, dp_group=None, **_: Any):
        if student_logits is None:  # called as the loss of a forward-only pass
            return torch.zeros((), device=data["input_ids"].device), {}
        logits = student_logits[0]
        rows, lens = response_rows(data, logits.shape[0])
        if self.mode in ("student", "teacher_topk"):
            vocab = logits.shape[-1]
            if vocab >= 2**31:
                raise ValueError(f"vocabulary of {vocab} does not fit int32 ids")
            ids = topk_ids(logits, self.topk, self.chunk_rows, rows=rows)
            values = ids.to(torch.int32)
            if self.mode == "teacher_topk":
                for r, v in zip(data[ROW].tolist(), values.split(lens)):
                    self.ids[int(r)] = v.cpu()
                values = gather_log_probs_rows(logits, rows, ids, self.chunk_rows)
        else:
            ids = _flat(data[TOPK_IDS]).to(device=logits.device, dtype=torch.long)
            if ids.shape[0] != rows.numel():
                raise ValueError(f"{ids.shape[0]} top-k id rows for {rows.numel()} response positions")
            values = gather_log_probs_rows(logits, rows, ids, self.chunk_rows)
        for r, v in zip(data[ROW].tolist(), values.split(lens)):
            self.rows[int(r)] = v.detach().cpu()
        return {}

    def nested(self, n: int, ids: bool = False) -> torch.Tensor:
        store = self.ids if ids else self.rows
        missing = [i for i in range(n) if i not in store]
        if missing:
            raise RuntimeError(f"top-k pass produced no values for rows {missing[:10]}")
        return torch.nested.as_nested_tensor([store[i] for i in range(n)], layout=torch.jagged)


def gather_log_probs_rows(logits: torch.Tensor, rows: torch.Tensor, ids: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """``log_softmax(logits[rows])[ids]`` ``[n, k]``, one ``[chunk_rows, V]`` fp32 block at a time."""
    return gather_log_probs(logits, ids, chunk_rows, rows=rows)


def _scatter_rows(values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """``[n]`` zeros with ``values`` at ``rows`` (keeps the gradient), as ``[1, n]``."""
    return values.new_zeros(n).index_put((rows,), values).unsqueeze(0)


def verl_distillation_config(options: DistillOptions) -> DistillationConfig:
    """verl's distillation config for its ``distillation_loss`` aggregation (supervised, no PG)."""
    loss = DistillationLossConfig(
        loss_mode=REGISTRY_NAME,
        topk=options.topk,
        use_task_rewards=False,
        loss_max_clamp=LOSS_CLAMP,
        log_prob_min_clamp=None,
        use_policy_gradient=False,
    )
    return DistillationConfig(enabled=False, distillation_loss=loss)


@register_distillation_loss(DistillationLossSettings(names=[REGISTRY_NAME], use_topk=True))  # type: ignore[arg-type]
def compute_jsd_topk(config, distillation_config, model_output: dict, data: TensorDict) -> tuple[torch.Tensor, dict]:
    """verl registry entry: per-token divergences ``[B, R]`` from the update's logits processor,
    times the importance weight and zeroed on rows without a teacher; plus ``distill/`` metrics."""
    losses = no_padding_2_padding(model_output["distill_losses"], data)
    s_mass = no_padding_2_padding(model_output["distill_student_mass"], data)
    t_mass = no_padding_2_padding(model_output["distill_teacher_mass"], data)
    mask = data["response_mask"]
    mask = (mask.to_padded_tensor(0) if mask.is_nested else mask).bool()
    mask = mask.to(losses.device)
    valid = data[VALID].to(losses.device).bool() if VALID in data.keys() else mask.new_ones(mask.shape[0])
    active = mask & valid.unsqueeze(-1)
    metrics: dict[str, Any] = {}
    weights = torch.ones_like(losses)
    is_clip = tu.get_non_tensor_data(data=data, key=IS_CLIP, default=None)
    if is_clip is not None:
        log_prob = no_padding_2_padding(model_output["log_probs"], data).detach()
        old = data["old_log_probs"]
        old = old.to_padded_tensor(0.0) if old.is_nested else old
        ratio = torch.exp((log_prob - old).clamp(max=20.0))
        weights = ratio.clamp(max=is_clip)
        if active.any():
            metrics["distill/is_clip_frac"] = Metric(AggregationType.MEAN, (ratio[active] > is_clip).float().mean())
            metrics["distill/is_weight_mean"] = Metric(AggregationType.MEAN, weights[active].mean())
    if active.any():
        metrics["distill/divergence_mean"] = Metric(AggregationType.MEAN, losses.detach()[active].mean())
        metrics["distill/student_topk_mass"] = Metric(AggregationType.MEAN, s_mass[active].mean())
        metrics["distill/teacher_topk_mass"] = Metric(AggregationType.MEAN, t_mass[active].mean())
    metrics["distill/valid_frac"] = Metric(AggregationType.MEAN, valid.float().mean())
    return losses * weights * valid.unsqueeze(-1).to(losses.dtype), metrics


def self_distill_loss(
    config,
    options: DistillOptions,
    estimator: str,
    coef: float = 1.0,
    model_output: dict | None = None,
    data: TensorDict | None = None,
    dp_group=None,
    student_logits: torch.Tensor | None = None,
    data_format: str = "thd",
):
    """The actor's loss with a logit-level distillation term (verl's loss-function interface).

    As logits processor: per-token ``JSD_alpha`` on the stored top-k support (+ tail) -> model outputs.
    As loss: opsd/sdpo: ``coef * distill``; grpo_opsd: verl's ``ppo_loss`` + ``coef * distill``.
    """
    if student_logits is not None:
        logits = student_logits[0]
        rows, _ = response_rows(data, logits.shape[0])
        ids = _flat(data[TOPK_IDS]).to(device=logits.device, dtype=torch.long)
        teacher = _flat(data[TEACHER_TOPK]).to(device=logits.device, dtype=torch.float32)
        student = gather_log_probs_rows(logits, rows, ids, options.chunk_rows)
        div = topk_divergence(student, teacher, alpha=options.effective_alpha, tail=options.tail)
        n = logits.shape[0]
        return {
            "distill_losses": _scatter_rows(div, rows, n),
            "distill_student_mass": _scatter_rows(top_mass(student.detach()), rows, n),
            "distill_teacher_mass": _scatter_rows(top_mass(teacher), rows, n),
        }

    tu.assign_non_tensor(data, **{IS_CLIP: options.is_clip})  # read by compute_jsd_topk
    d_loss, metrics = distillation_loss(config, verl_distillation_config(options), model_output, data)
    if estimator in PURE_DISTILL_ESTIMATORS:
        total, out = coef * d_loss, {}
    else:
        total, out = ppo_loss(config, model_output, data, dp_group)
        total = total + coef * d_loss
    out.update(metrics)
    # as verl's ppo_loss: globally normalised losses are summed over micro-batches
    global_norm = data["dp_size"] > 1 or data["batch_num_tokens"] is not None or data["global_batch_size"] is not None
    agg = AggregationType.SUM if global_norm or config.loss_scale_factor is not None else AggregationType.MEAN
    out["distill/loss"] = Metric(value=d_loss.detach(), aggregation=agg)
    return total, out


__all__ = [
    "PASS_FLAG",
    "ROW",
    "TEACHER_TOPK",
    "TOPK_IDS",
    "TopkRecorder",
    "VALID",
    "compute_jsd_topk",
    "response_rows",
    "self_distill_loss",
    "verl_distillation_config",
]
