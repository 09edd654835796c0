"""The ``self_distill`` trainer mode: verl's sync V1 trainer plus the teacher log-prob pass.

Why a V1 trainer mode: verl 0.9.1's ``main_ppo`` picks the trainer class with
``get_trainer_cls(config.trainer.v1.trainer_mode)``, so a class registered with
``register_trainer("self_distill")`` is selected by one override and no task runner is copied.
It subclasses ``PPOTrainerSync`` (the teacher is the policy's own network, so rollout and training
stay colocated and synchronous). The base class branches on ``self.trainer_mode == "sync"`` in
several places (replay buffer, exact refill, TransferQueue checkpointing, in-flight re-issue);
:attr:`SelfDistillTrainer.trainer_mode` therefore reads ``"sync"`` while
:attr:`registered_mode` keeps the name, so the mode behaves exactly as ``sync``.

One step (differences from ``sync`` in bold): **teacher sync** (frozen/ema) -> rollout and reward -> old
log-probs, with the **teacher inputs** built meanwhile in a driver thread
(:class:`verl_ext.privileged.PrivilegedPromptBuilder`: question + same images + hint + the same response
tokens; they need only the rollout and the reward) -> **teacher log-probs** of the sampled tokens through
verl's worker groups (``live``: the actor's ``compute_log_prob``; ``frozen``/``ema``: the ref
model's ``compute_ref_log_prob``, the ref slot holding the teacher copy) -> advantage with
``teacher_log_probs``, ``old_log_probs``, ``global_step`` (+ ``teacher_valid``, ``reweight_mask``)
-> PPO update. Rows without a teacher signal (over the length budget, no hint, no sibling) get
``teacher_log_probs = old_log_probs`` (delta 0: rlsd and grpo_opsd keep ``A_i``) and
``teacher_valid`` false (opsd and sdpo: advantage 0); they are counted, never raised on. For estimators outside ``TEACHER_ESTIMATORS`` (``grpo``) nothing is added.

Teacher weights (``algorithm.teacher.mode``):
- ``frozen``: the ref copy, re-synced from the policy at steps ``s`` with ``(s - 1) % sync_every == 0``
  (s > 1), i.e. the teacher of step s is the policy of step ``1 + sync_every * floor((s - 1) / sync_every)``.
- ``ema``: before each step s > 1, ``teacher <- (1 - ema_rate) teacher + ema_rate policy``.
- ``live``: the current policy (no copy, no extra memory).
Resuming: verl restores ``global_steps`` from the checkpoint folder, so lambda and the sync schedule
continue; the teacher copy (not part of verl's checkpoint) is saved beside it in
``global_step_N/teacher/`` and loaded back; a checkpoint without it re-syncs the teacher from the
restored policy at the first step.
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import torch
import transfer_queue as tq
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.protocol import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.ray_trainer import apply_kl_penalty
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch
from verl.trainer.ppo.utils import Role, need_reference_policy
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path
from verl.utils.debug import marked_timer
from verl.utils.tensordict_utils import list_of_dict_to_tensordict
from verl.workers.utils.padding import response_from_nested, response_to_nested

from verl_ext.algorithms.registry import TEACHER_ESTIMATORS, TEACHER_TRAINER_MODE
from verl_ext.diagnostics import TrainerDiagnostics
from verl_ext.distill.flow import DistillFlow
from verl_ext.preflight import multiple_update_problems, one_update_message
from verl_ext.privileged import PrivilegedPromptBuilder, StudentSample, TeacherConfig
from verl_ext.trainer.schedule import TeacherSchedule
from verl_ext.trainer.thought import thought_mask
from verl_ext.trainer.val_metrics import mean_std_metrics, split_infos
from verl_ext.trainer.worker import SelfDistillWorker

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

TEACHER_PARTITION = "self_distill_teacher"
DEFAULT_POLL_INTERVAL_S = 0.05  # trainer.v1.self_distill.poll_interval_s
# Fields of a trajectory the teacher pass reads from TransferQueue.
_STUDENT_FIELDS = [
    "uid",
    "prompts",
    "responses",
    "response_mask",
    "multi_modal_inputs",
    "raw_prompt",
    "reward_model",
    "extra_info",
    "rm_scores",
]


def _rows(value: Any, n: int) -> list:
    """Per-row python objects of a TensorDict entry (nested/dense tensor, NonTensorStack, list)."""
    if value is None:
        return [None] * n
    if isinstance(value, torch.Tensor):
        return list(value.unbind(0))
    if hasattr(value, "tolist"):
        return list(value.tolist())
    return list(value)


def student_samples_from_tensordict(data: TensorDict, tags: list[dict]) -> list[StudentSample]:
    """TransferQueue trajectories (verl's per-trajectory fields) -> :class:`StudentSample` rows."""
    n = len(tags)
    get = lambda k: data.get(k, None) if k in data.keys() else None  # noqa: E731
    prompts, responses = _rows(get("prompts"), n), _rows(get("responses"), n)
    mm, raw = _rows(get("multi_modal_inputs"), n), _rows(get("raw_prompt"), n)
    reward_model, extra_info = _rows(get("reward_model"), n), _rows(get("extra_info"), n)
    uids, scores = _rows(get("uid"), n), _rows(get("rm_scores"), n)
    out = []
    for i in range(n):
        rm = reward_model[i] if isinstance(reward_model[i], dict) else {}
        out.append(
            StudentSample(
                messages=list(raw[i]) if raw[i] is not None else [],
                prompt_ids=prompts[i].tolist(),
                response_ids=responses[i].tolist(),
                multi_modal_inputs=mm[i] if isinstance(mm[i], dict) else None,
                ground_truth=rm.get("ground_truth"),
                extra_info=extra_info[i] if isinstance(extra_info[i], dict) else {},
                uid=str(uids[i]) if uids[i] is not None else None,
                score=float(scores[i].sum()) if isinstance(scores[i], torch.Tensor) else None,
                is_padding=bool(tags[i].get("is_padding", False)),
            )
        )
    return out


def prune_teacher_copies(root: str) -> list[str]:
    """Remove the teacher copy of every step folder whose actor checkpoint verl has removed
    (``trainer.max_actor_ckpt_to_keep``), so a kept-N policy keeps N teacher copies too."""
    removed = []
    for step_dir in glob.glob(os.path.join(root, "global_step_*")):
        teacher = os.path.join(step_dir, "teacher")
        if os.path.isdir(teacher) and not os.path.isdir(os.path.join(step_dir, "actor")):
            shutil.rmtree(teacher, ignore_errors=True)
            removed.append(teacher)
    return sorted(removed)


@dataclass
class TeacherInputs:
    """One step's teacher inputs, built for the student rows ``keys``; ``teacher_keys`` once put."""

    keys: list[str]
    samples: list[StudentSample]
    teacher: list
    valid: torch.Tensor
    response_masks: list
    metrics: dict
    distill_info: dict = field(default_factory=dict)
    teacher_keys: list[str] | None = None
    teacher_tags: list[dict] | None = None
    timing: dict = field(default_factory=dict)  # seconds of the build and the put, spent in the driver thread


@register_trainer(TEACHER_TRAINER_MODE)
class SelfDistillTrainer(PPOTrainerSync):
    """``trainer.v1.trainer_mode=self_distill``: the sync trainer with a privileged-teacher pass."""

    # The base class sets ``self.trainer_mode`` in __init__ and compares it with "sync".
    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        self.registered_mode = value

    def __init__(self, config):
        # uid -> order of arrival from the dataloader (_balance_batch); a counter, as used uids are dropped
        self._uid_position: dict[str, int] = {}
        self._uid_count = itertools.count()
        super().__init__(config)
        self.estimator = str(config.algorithm.adv_estimator)
        self.teacher_enabled = self.estimator in TEACHER_ESTIMATORS
        self.kl_needs_ref = need_reference_policy(config)
        self.teacher_config: TeacherConfig | None = None
        self.teacher_schedule: TeacherSchedule | None = None
        self.distill = DistillFlow(config.algorithm, self.estimator)  # algorithm.distill (logit-level loss)
        if not self.teacher_enabled:
            return
        self.teacher_config = TeacherConfig.from_verl(config)
        problems = multiple_update_problems(config)
        if problems and not self.teacher_config.allow_multiple_updates:
            raise ValueError(one_update_message(problems))
        self._multiple_updates = bool(problems)
        self.teacher_schedule = TeacherSchedule(
            self.teacher_config.mode, self.teacher_config.sync_every, self.teacher_config.ema_rate
        )
        if self.teacher_schedule.needs_copy:
            self._check_ref_config(config)
            self.use_reference_policy = True  # the ref slot holds the teacher copy
        if int(self.parameter_sync_step) != 1:
            raise ValueError("trainer mode self_distill runs one update per step (parameter_sync_step=1)")

    @staticmethod
    def _check_ref_config(config) -> None:
        model = config.actor_rollout_ref.model
        lora = (model.get("lora", {}) or {}).get("rank", 0) or model.get("lora_rank", 0)
        if lora and int(lora) > 0 or model.get("lora_adapter_path") is not None:
            raise ValueError(
                "algorithm.teacher.mode=frozen/ema needs a separate teacher copy, but with LoRA verl's ref is the "
                "adapter-less actor; use algorithm.teacher.mode=live"
            )
        ref = config.actor_rollout_ref.ref
        if not ref.get("log_prob_use_dynamic_bsz", False) and ref.get("log_prob_micro_batch_size_per_gpu") is None:
            raise ValueError(
                "algorithm.teacher.mode=frozen/ema computes teacher log-probs on verl's ref model: set "
                "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu (or log_prob_use_dynamic_bsz=true)"
            )

    # ------------------------------------------------------------------ setup
    def _build_replay_buffer(self):
        # verl's buffer checks for finished rollouts every 2 s: a step's generation then counts in whole 2 s
        # units (measured on CPU: 4.01 or 6.02 s for ~3 s of work), ~1 s lost per step and a +-2 s jitter
        buffer = super()._build_replay_buffer()
        options = self.config.trainer.v1.get(TEACHER_TRAINER_MODE, None) or {}
        buffer.poll_interval = float(options.get("poll_interval_s", DEFAULT_POLL_INTERVAL_S))
        return buffer

    # ------------------------------------------------------------------ batch order
    def _fetch_one_gen_batch(self):
        batch = super()._fetch_one_gen_batch()
        for uid in batch["uid"]:
            self._uid_position[str(uid)] = next(self._uid_count)
        return batch

    def _balance_batch(self, batch: KVBatchMeta, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        # The replay buffer hands rows over in the order rollouts finished, and the rollout's per-request seeds
        # follow arrival order too. With several rollout replicas both change from run to run, and with them
        # which rank and micro-batch a row lands in: float sums in another order, which Adam's first steps turn
        # into weight differences of order lr. Sorting by dataloader position, then response tokens, makes a
        # run with several workers repeat itself; verl then balances. One worker keeps verl's order (the CPU
        # results in the README were produced with it).
        trainer = self.config.trainer
        if int(trainer.n_gpus_per_node) * int(trainer.nnodes) > 1 and len(batch.keys) > 1:
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["responses"])
            responses = [tuple(r.tolist()) for r in _rows(data["responses"], len(batch.keys))]
            batch.reorder(dataloader_order(batch.keys, self._uid_position, responses))
        for key in batch.keys:
            self._uid_position.pop(key.rsplit("_", 2)[0], None)
        return super()._balance_batch(batch, metrics, logging_prefix=logging_prefix, keep_minibatch=keep_minibatch)

    def _init_resource_pool_mgr(self):
        super()._init_resource_pool_mgr()
        needs_copy = self.teacher_schedule is not None and self.teacher_schedule.needs_copy
        if needs_copy and Role.ActorRollout in self.role_worker_mapping:
            # verl builds the ref model only for the actor_rollout_ref role.
            self.role_worker_mapping[Role.ActorRolloutRef] = self.role_worker_mapping.pop(Role.ActorRollout)
            self.mapping[Role.ActorRolloutRef] = self.mapping.pop(Role.ActorRollout)
        for role in list(self.role_worker_mapping):
            if role in (Role.ActorRollout, Role.ActorRolloutRef, Role.Actor, Role.RefPolicy):
                self.role_worker_mapping[role] = ray.remote(SelfDistillWorker)

    def on_init_end(self):
        super().on_init_end()
        self.distill.setup_workers(self.actor_rollout_wg, getattr(self, "ref_policy_wg", None))
        if self.teacher_schedule is not None:
            self.teacher_schedule.on_start(self.global_steps, teacher_restored=getattr(self, "_teacher_restored", False))

    # ------------------------------------------------------------------ checkpoint
    def _teacher_checkpoint_dir(self, step_folder: str) -> str:
        return os.path.join(step_folder, "teacher")

    def _save_checkpoint(self):
        # The teacher first: verl's save ends with its tracker file (latest_checkpointed_iteration.txt), the
        # only thing resume_mode=auto reads, so a kill before that leaves the previous checkpoint selected.
        if self.teacher_schedule is not None and self.teacher_schedule.needs_copy:
            folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
            self.ref_policy_wg.save_teacher(self._teacher_checkpoint_dir(folder))
        super()._save_checkpoint()
        if self.teacher_schedule is not None and self.teacher_schedule.needs_copy:
            prune_teacher_copies(self.config.trainer.default_local_dir)

    def _load_checkpoint(self):
        super()._load_checkpoint()
        self._teacher_restored = False
        if self.global_steps <= 0 or self.teacher_schedule is None or not self.teacher_schedule.needs_copy:
            return
        trainer_cfg = self.config.trainer
        if trainer_cfg.resume_mode == "resume_path":
            folder = os.path.abspath(trainer_cfg.resume_from_path)
        else:
            folder = find_latest_ckpt_path(os.path.abspath(trainer_cfg.default_local_dir))
        if folder:
            self._teacher_restored = all(self.ref_policy_wg.load_teacher(self._teacher_checkpoint_dir(folder)))
        if not self._teacher_restored:
            logger.warning("no teacher copy in the checkpoint: the teacher is re-synced from the restored policy")

    # ------------------------------------------------------------------ step hooks
    def on_step_begin(self):
        super().on_step_begin()
        self._teacher_step_metrics = {}
        if self.teacher_schedule is None:
            return
        rate = self.teacher_schedule.rate_at(self.global_steps)
        if rate is not None:
            with marked_timer("teacher_sync", self.timing_raw, color="purple"):
                self.ref_policy_wg.sync_teacher(rate=rate)
        self._teacher_step_metrics["teacher/synced"] = float(rate == 1.0)
        self._teacher_step_metrics["teacher/blend_rate"] = float(rate or 0.0)

    def _compute_ref_log_prob(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        # The ref slot may hold only the teacher; KL log-probs are computed when KL asks for them.
        if self.kl_needs_ref:
            return super()._compute_ref_log_prob(batch, metrics)
        return batch

    def _val_metrics_update(self, data_sources, sample_uids, reward_extra_infos_dict, sample_turns,
                            expected_acc_counts=None) -> dict[str, float]:
        # verl's bootstrap (best@k/worst@k) only for the score keys; the reward's counters get mean@n and std@n
        # (verl_ext.trainer.val_metrics: ~1 s per key per validation saved on CPU)
        core, aux = split_infos(reward_extra_infos_dict)
        metrics = super()._val_metrics_update(data_sources, sample_uids, core, sample_turns,
                                              expected_acc_counts=expected_acc_counts)
        metrics.update(mean_std_metrics(data_sources, sample_uids, aux))
        return metrics

    # ------------------------------------------------------------------ teacher pass
    def _builder(self) -> PrivilegedPromptBuilder:
        if getattr(self, "_teacher_builder", None) is None:
            kwargs = self.config.data.get("apply_chat_template_kwargs", None) or {}
            self._teacher_builder = PrivilegedPromptBuilder(
                self.tokenizer, self.processor, self.teacher_config, chat_template_kwargs=dict(kwargs)
            )
        return self._teacher_builder

    # The teacher pass in three parts: inputs (builder) -> log-probs (verl's workers) -> advantage. The inputs need
    # only what the rollout and reward wrote, so they are built (and put into TransferQueue) in a driver thread
    # while the workers compute the old log-probs; the advantage stage waits for them.
    def _compute_old_log_prob(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        if self.teacher_enabled:
            if getattr(self, "_teacher_pool", None) is None:
                self._teacher_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="teacher-inputs")
            student = KVBatchMeta(keys=list(batch.keys), tags=list(batch.tags), partition_id=batch.partition_id)
            self._teacher_inputs = self._teacher_pool.submit(self._prepare_teacher, student, int(self.global_steps))
        # logit-level loss: the same forward also records the student's top-k ids (verl_ext.distill.flow)
        self.distill.mark_student_pass(batch)
        try:
            return super()._compute_old_log_prob(batch, metrics)
        finally:
            self.distill.unmark(batch)

    def _prepare_teacher(self, batch: KVBatchMeta, step: int) -> TeacherInputs:
        """Student rows from TransferQueue -> teacher inputs, hints (``valid``), response masks; the teacher rows
        put into TransferQueue unless the distillation loss still has to add the student's top-k ids to them."""
        for key in batch.keys:
            if not key.endswith("_0"):
                raise NotImplementedError(
                    f"trajectory {key}: the teacher pass supports single-output agent loops only"
                )
        start = time.perf_counter()
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=_STUDENT_FIELDS)
        samples = student_samples_from_tensordict(data, batch.tags)
        response_masks = _rows(data["response_mask"], len(samples))
        teacher, hints, build_metrics = self._builder().build(samples, step=step)
        prepared = TeacherInputs(list(batch.keys), samples, teacher, hints.valid, response_masks, build_metrics)
        prepared.timing["teacher_build"] = time.perf_counter() - start
        if bool(hints.valid.any()) and not self.distill.needs_student_ids:
            start = time.perf_counter()
            self._put_teacher_rows(batch, prepared)
            prepared.timing["teacher_put"] = time.perf_counter() - start
        return prepared

    def _put_teacher_rows(self, batch: KVBatchMeta, prepared: TeacherInputs) -> None:
        rows, tags = [], []
        for t, mask in zip(prepared.teacher, prepared.response_masks):
            rows.append(
                {
                    "prompts": t.prompt_ids,
                    "responses": t.input_ids[t.prompt_ids.numel() :],
                    "response_mask": mask,
                    "loss_mask": mask,
                    "input_ids": t.input_ids,
                    "position_ids": t.position_ids,
                    "multi_modal_inputs": t.multi_modal_inputs,
                }
            )
            length = int(t.input_ids.numel())
            tags.append({"status": "success", "prompt_len": int(t.prompt_ids.numel()), "response_len": length - int(t.prompt_ids.numel()), "seq_len": length})
        keys = [f"{k}_teacher" for k in batch.keys]
        self.distill.add_teacher_inputs(batch, rows, prepared.distill_info)
        tq.kv_batch_put(keys=keys, partition_id=TEACHER_PARTITION, fields=list_of_dict_to_tensordict(rows), tags=tags)
        prepared.teacher_keys, prepared.teacher_tags = keys, tags

    def _teacher_inputs_for(self, batch: KVBatchMeta) -> TeacherInputs:
        """The inputs prepared during the old-log-prob pass (their errors raised here), or built now when there
        are none for these rows."""
        pending, self._teacher_inputs = getattr(self, "_teacher_inputs", None), None
        prepared = None
        if pending is not None:
            with marked_timer("teacher_wait", self.timing_raw, color="purple"):
                prepared = pending.result()
            if prepared.keys != list(batch.keys):  # the rows changed after the old-log-prob pass
                if prepared.teacher_keys is not None:
                    tq.kv_clear(keys=prepared.teacher_keys, partition_id=TEACHER_PARTITION)
                prepared = None
        if prepared is None:
            prepared = self._prepare_teacher(batch, int(self.global_steps))
        for name, seconds in prepared.timing.items():
            self.timing_raw[name] = self.timing_raw.get(name, 0.0) + seconds
        return prepared

    def _compute_teacher_log_prob(self, batch: KVBatchMeta, metrics: dict) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Teacher log-probs of the sampled tokens (nested ``[B, R_i]``), ``teacher_valid`` ``[B]``, the rows."""
        prepared = self._teacher_inputs_for(batch)
        metrics.update(prepared.metrics)
        if not bool(prepared.valid.any()):
            # e.g. sdpo before any group has a sibling: no row gets a teacher signal, skip the forward
            empty = [torch.zeros(len(s.response_ids)) for s in prepared.samples]
            self.distill.store_teacher_values(batch, prepared.valid)
            return torch.nested.as_nested_tensor(empty, layout=torch.jagged), prepared.valid, prepared.samples
        return self._teacher_forward(batch, prepared), prepared.valid, prepared.samples

    def _teacher_forward(self, batch: KVBatchMeta, prepared: TeacherInputs) -> torch.Tensor:
        """Log-probs of the response tokens under the teacher through verl's workers (nested ``[B, R_i]``)."""
        if prepared.teacher_keys is None:  # the rows wait for the student's top-k ids (old-log-prob pass)
            with marked_timer("teacher_put", self.timing_raw, color="purple"):
                self._put_teacher_rows(batch, prepared)
        keys, tags = prepared.teacher_keys, prepared.teacher_tags
        try:
            meta = KVBatchMeta(
                keys=keys,
                tags=tags,
                partition_id=TEACHER_PARTITION,
                extra_info={
                    "calculate_entropy": False,
                    "compute_loss": False,
                    "temperature": self.config.actor_rollout_ref.rollout.temperature,
                    **prepared.distill_info,
                },
            )
            with marked_timer("teacher_forward", self.timing_raw, color="purple"):
                if self.teacher_schedule.needs_copy:
                    output = self.ref_policy_wg.compute_ref_log_prob(meta)
                else:
                    output = self.actor_rollout_wg.compute_log_prob(meta)
            assert len(output) == len(keys)
            out = tq.kv_batch_get(keys=keys, partition_id=TEACHER_PARTITION, select_fields=["log_probs", "response_mask"])
            teacher_log_probs = response_from_nested(out["log_probs"], out["response_mask"])
            self.distill.store_teacher_values(batch, prepared.valid, keys, TEACHER_PARTITION)
        finally:
            tq.kv_clear(keys=keys, partition_id=TEACHER_PARTITION)
        return teacher_log_probs

    # ------------------------------------------------------------------ advantage
    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        if not self.teacher_enabled:
            return super()._compute_advantage(batch, metrics)

        with marked_timer("teacher", self.timing_raw, color="purple"):
            teacher_nested, teacher_valid, samples = self._compute_teacher_log_prob(batch, metrics)

        fields = ["uid", "response_mask", "rm_scores", "rollout_log_probs", "old_log_probs", "ref_log_prob", "values"]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        response_mask = data["response_mask"]
        data = DataProto(batch=data.to_padded_tensor())
        data.batch["token_level_scores"] = data.batch["rm_scores"]
        data.non_tensor_batch["uid"] = np.array(data.batch.pop("uid").tolist(), dtype=object)
        bsz, width = data.batch["response_mask"].shape
        teacher_log_probs = torch.nested.to_padded_tensor(teacher_nested, 0.0, output_size=(bsz, width))

        if self.config.algorithm.use_kl_in_reward:
            data, kl_metrics = apply_kl_penalty(
                data, kl_ctrl=self.kl_ctrl_in_reward, kl_penalty=self.config.algorithm.kl_penalty
            )
            metrics.update(kl_metrics)
        else:
            data.batch["token_level_rewards"] = data.batch["token_level_scores"]

        rollout_corr_config = self.config.algorithm.get("rollout_correction", None)
        bypass = rollout_corr_config and rollout_corr_config.get("bypass_mode", False)
        rollout_correction = rollout_corr_config is not None and "rollout_log_probs" in data.batch and not bypass
        if rollout_correction:
            data, is_metrics = compute_rollout_correction_and_add_to_batch(data, rollout_corr_config)
            metrics.update(is_metrics)

        mask = data.batch["response_mask"]
        old_log_probs = data.batch["old_log_probs"]
        # rows without a teacher signal: delta = 0 (rlsd, grpo_opsd keep A_i; opsd, sdpo get 0 via teacher_valid)
        teacher_log_probs = without_invalid_rows(teacher_log_probs, old_log_probs, teacher_valid)
        if self._multiple_updates:
            logger.warning(
                "algorithm.teacher.allow_multiple_updates: more than one policy update per rollout step, so delta "
                "uses old log-probs that are stale after the first update"
            )
        kwargs: dict[str, Any] = {}
        rlsd_opts = self.config.algorithm.get("rlsd", None) or {}
        if self.estimator == "rlsd" and rlsd_opts.get("thought_only", False):
            kwargs["reweight_mask"] = torch.stack(
                [thought_mask(s.response_ids, self.tokenizer, width) for s in samples]
            ).to(mask.dtype)
        estimator_metrics: dict[str, float] = {}
        adv_fn = core_algos.get_adv_estimator_fn(self.estimator)
        advantages, returns = adv_fn(
            token_level_rewards=data.batch["token_level_rewards"],
            response_mask=mask,
            index=data.non_tensor_batch["uid"],
            config=self.config.algorithm,
            teacher_log_probs=teacher_log_probs,
            old_log_probs=old_log_probs,
            global_step=int(self.global_steps),
            teacher_valid=teacher_valid,
            metrics=estimator_metrics,
            **kwargs,
        )
        data.batch["advantages"], data.batch["returns"] = advantages, returns
        metrics.update(estimator_metrics)
        metrics.update(teacher_gap_metrics(teacher_log_probs, old_log_probs, mask, teacher_valid,
                                           success=data.batch["token_level_scores"].sum(-1) > self.teacher_config.success_threshold))
        metrics.update(getattr(self, "_teacher_step_metrics", {}))
        # Diagnostics (verl_ext.diagnostics): diag/ leakage and stability metrics, token-credit dumps.
        if getattr(self, "_diagnostics", None) is None:
            self._diagnostics = TrainerDiagnostics(self.config.algorithm, self.tokenizer, self.estimator)
        with marked_timer("adv_diag", self.timing_raw, color="purple"):
            diag = self._diagnostics.step(
                step=int(self.global_steps), samples=samples, response_mask=mask, old_log_probs=old_log_probs,
                teacher_log_probs=teacher_log_probs, advantages=advantages, uids=data.non_tensor_batch["uid"],
                token_level_rewards=data.batch["token_level_rewards"], teacher_valid=teacher_valid,
                lam=estimator_metrics.get("rlsd/lambda"),
            )  # fmt: skip
        metrics.update(diag)

        out_fields = ["advantages", "returns"]
        if self.config.algorithm.use_kl_in_reward:
            out_fields.append("token_level_rewards")
        if rollout_correction:
            out_fields.append("response_mask")
            if "rollout_is_weights" in data.batch:
                out_fields.append("rollout_is_weights")
        output = TensorDict(
            {f: response_to_nested(data.batch[f], response_mask) for f in out_fields}, batch_size=len(batch)
        )
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=output)


def dataloader_order(keys: list[str], uid_position: dict[str, int], responses: list[tuple] | None = None) -> list[int]:
    """Indices that sort trajectory keys ``{uid}_{sample}_{turn}`` (verl's agent loop) by the uid's position in
    the dataloader, then by response tokens (when given: which sample index drew which seed can change between
    runs), then sample and turn; keys of unknown uids or another form keep their order, after the rest."""

    def rank(i: int) -> tuple:
        uid, sample, turn = (keys[i].rsplit("_", 2) + ["", ""])[:3]
        if uid not in uid_position or not (sample.isdigit() and turn.isdigit()):
            return (1, i, (), 0, 0)
        return (0, uid_position[uid], responses[i] if responses is not None else (), int(sample), int(turn))

    return sorted(range(len(keys)), key=rank)


def without_invalid_rows(
    teacher_log_probs: torch.Tensor, old_log_probs: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """``teacher_log_probs`` with invalid rows replaced by ``old_log_probs`` (delta exactly 0 there)."""
    keep = valid.to(teacher_log_probs.device).bool().unsqueeze(-1)
    return torch.where(keep, teacher_log_probs, old_log_probs.to(teacher_log_probs.dtype))


def teacher_gap_metrics(
    teacher_log_probs: torch.Tensor, old_log_probs: torch.Tensor, response_mask: torch.Tensor, valid: torch.Tensor,
    success: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean over valid rows' response tokens of ``log pi_T - log pi_S`` and of ``log pi_T``; with ``success``
    ([B] bool, reward score above ``success_threshold``) also the gap over successful and over failed rows'
    tokens: a teacher that reads its hint raises the student's successful responses above its failed ones."""
    m = response_mask.bool() & valid.to(response_mask.device).bool().unsqueeze(-1)
    gap_all = teacher_log_probs - old_log_probs

    def mean_gap(mask):
        return float(gap_all[mask].mean()) if bool(mask.any()) else 0.0

    out = {"teacher/logprob_gap_mean": mean_gap(m),
           "teacher/log_prob_mean": float(teacher_log_probs[m].mean()) if bool(m.any()) else 0.0}
    if success is not None:
        ok = success.to(m.device).bool().unsqueeze(-1)
        out["teacher/logprob_gap_success"] = mean_gap(m & ok)
        out["teacher/logprob_gap_failure"] = mean_gap(m & ~ok)
    return out


__all__ = ["SelfDistillTrainer", "student_samples_from_tensordict", "teacher_gap_metrics", "without_invalid_rows"]
