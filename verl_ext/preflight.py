"""Checks of a composed training config that must fail before Ray or any GPU work starts.

verl finds most mistakes only inside its Ray workers, minutes into a run (an unknown estimator
name raises there without listing the valid ones). These checks run on the driver right after
Hydra has composed the config.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from verl_ext.algorithms import GRPO_OPSD_DEFAULTS, RLSD_DEFAULTS, TEACHER_ESTIMATORS, TEACHER_TRAINER_MODE
from verl_ext.algorithms.checks import section


class ConfigError(ValueError):
    """A training config that cannot run, with the key to fix in the message."""


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v) for v in value]
    return [str(value)]


def _local_files(config: DictConfig, key: str) -> list[str]:
    out = []
    for path in _files(config.data.get(key)):
        if "://" in path and not path.startswith("file://"):
            continue  # remote paths are verl's to resolve
        local = path.removeprefix("file://")
        out.extend(sorted(glob.glob(local)) or [local])
    return out


def check_data_files(config: DictConfig) -> None:
    """Every local data file exists; parquet files hold at least one row."""
    for key in ("train_files", "val_files"):
        for local in _local_files(config, key):
            if not os.path.exists(local):
                raise ConfigError(
                    f"data.{key}: {local} does not exist; build it with `python data_prep/build_parquet.py` "
                    f"(see README, 'Data') or point data.{key} / DATA_DIR at your copy"
                )
            if local.endswith(".parquet") and _parquet_rows(local, key) == 0:
                raise ConfigError(f"data.{key}: {local} has no rows")


def _parquet_rows(path: str, key: str) -> int:
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as err:  # pyarrow raises several types for a broken file
        raise ConfigError(f"data.{key}: {path} cannot be read as parquet ({err})") from None


def _extra_info_fields(path: str) -> set[str] | None:
    """The ``extra_info`` struct's field names of a parquet file (None: no such struct column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    if "extra_info" not in schema.names or not pa.types.is_struct(schema.field("extra_info").type):
        return None
    t = schema.field("extra_info").type
    return {t.field(i).name for i in range(t.num_fields)}


def check_estimator(config: DictConfig) -> None:
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

    name = str(config.algorithm.adv_estimator)
    if name not in ADV_ESTIMATOR_REGISTRY:
        raise ConfigError(
            f"algorithm.adv_estimator={name} is not a registered advantage estimator; "
            f"valid: {', '.join(sorted(ADV_ESTIMATOR_REGISTRY))}"
        )
    mode = config.trainer.get("v1", {}).get("trainer_mode", "sync")
    if name in TEACHER_ESTIMATORS and mode != TEACHER_TRAINER_MODE:
        raise ConfigError(
            f"algorithm.adv_estimator={name} needs teacher log-probs: set trainer.v1.trainer_mode={TEACHER_TRAINER_MODE} "
            f"(got {mode})"
        )
    # estimator and teacher knobs: unknown keys and bad values raise, naming the valid ones
    try:
        rlsd = section(config.algorithm, "rlsd", RLSD_DEFAULTS)
        grpo_opsd = section(config.algorithm, "grpo_opsd", GRPO_OPSD_DEFAULTS)
        if name in TEACHER_ESTIMATORS:
            from verl_ext.privileged.config import TeacherConfig

            TeacherConfig.from_verl(config)
        from verl_ext.distill.config import check_config as check_distill

        check_distill(config)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    check_ranges(rlsd, grpo_opsd)
    check_rollout_options(config)


def check_rollout_options(config: DictConfig) -> None:
    """The agent loop's sampling extras: known keys, a number or null each."""
    from verl_ext.rollout import rollout_options

    try:
        opts = rollout_options(config)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    for key, value in opts.items():
        if value is not None and not isinstance(value, (int, float)):
            raise ConfigError(f"algorithm.rollout.{key} must be a number or null, got {value!r}")


def check_ranges(rlsd: dict, grpo_opsd: dict) -> None:
    """The estimator knobs' ranges, which verl would only hit at the first advantage step."""
    if not 0.0 <= float(rlsd["lambda_init"]) <= 1.0:
        raise ConfigError(f"algorithm.rlsd.lambda_init must lie in [0, 1] (the factor must stay > 0), got {rlsd['lambda_init']}")
    for key in ("decay_steps", "warmup_steps"):
        if int(rlsd[key]) < 0:
            raise ConfigError(f"algorithm.rlsd.{key} must be >= 0, got {rlsd[key]}")
    from verl_ext.algorithms.registry import SCHEDULE_STEPS

    if rlsd.get("schedule_step", "update") not in SCHEDULE_STEPS:
        raise ConfigError(f"algorithm.rlsd.schedule_step must be one of {SCHEDULE_STEPS}, got {rlsd['schedule_step']!r}")
    if not 0.0 <= float(rlsd["clip_eps"]) < 1.0:
        raise ConfigError(f"algorithm.rlsd.clip_eps must lie in [0, 1), got {rlsd['clip_eps']}")
    if float(grpo_opsd["beta"]) < 0:
        raise ConfigError(f"algorithm.grpo_opsd.beta must be >= 0, got {grpo_opsd['beta']}")


def multiple_update_problems(config: DictConfig) -> list[str]:
    """Why a step would make more than one policy update (or use rollout log-probs as old log-probs).

    delta uses verl's old log-probs, which equal the released in-loop student forward only when the
    policy is updated once per rollout step, from log-probs the actor itself recomputed.
    """
    actor, out = config.actor_rollout_ref.actor, []
    if int(actor.get("ppo_epochs", 1)) != 1:
        out.append(f"actor_rollout_ref.actor.ppo_epochs={actor.ppo_epochs} (must be 1)")
    mini, batch = actor.get("ppo_mini_batch_size", None), config.data.get("train_batch_size", None)
    if mini is not None and batch is not None and int(mini) < int(batch):
        out.append(
            f"actor_rollout_ref.actor.ppo_mini_batch_size={mini} < data.train_batch_size={batch} "
            "(several updates per step; set them equal)"
        )
    corr = config.algorithm.get("rollout_correction", None) or {}
    if corr.get("bypass_mode", False):
        out.append("algorithm.rollout_correction.bypass_mode=true (old log-probs would be the rollout engine's)")
    return out


def one_update_message(problems: list[str]) -> str:
    return (
        "the teacher estimators compare the teacher with verl's old log-probs, which are the policy's only with "
        "one update per rollout step: " + "; ".join(problems)
        + ". Fix it, or set algorithm.teacher.allow_multiple_updates=true to run anyway (warned every step)"
    )


def check_teacher(config: DictConfig) -> None:
    """One update per step, a token budget that can hold a student row, the data fields the teacher reads."""
    if str(config.algorithm.adv_estimator) not in TEACHER_ESTIMATORS:
        return
    from verl_ext.privileged.config import TeacherConfig, engine_token_limit

    teacher = TeacherConfig.from_verl(config)
    problems = multiple_update_problems(config)
    if problems and not teacher.allow_multiple_updates:
        raise ConfigError(one_update_message(problems))
    prompt, response = config.data.get("max_prompt_length"), config.data.get("max_response_length")
    if teacher.max_length is not None and prompt is not None and response is not None:
        need = int(prompt) + int(response)
        if teacher.max_length < need:
            limit = engine_token_limit(config, teacher.mode)
            where = (
                f"algorithm.teacher.max_length={teacher.max_length}"
                if limit is None or limit > teacher.max_length
                else f"the teacher forward's token limit ({'ref' if teacher.mode != 'live' else 'rollout'}"
                f".log_prob_max_token_len_per_gpu={limit})"
            )
            raise ConfigError(
                f"{where} is below data.max_prompt_length + data.max_response_length = {need}: the teacher could "
                f"not score a full-length student row even with an empty hint; raise it to at least "
                f"{need + teacher.max_hint_length} (prompt + max_hint_length + response)"
            )
    # the template is a user file: it must load (sandboxed) and show the question once, hint or not
    from verl_ext.privileged import load_template

    try:
        load_template(teacher.template)
    except (OSError, ValueError) as err:
        raise ConfigError(f"algorithm.teacher.template: {err}") from None
    if teacher.context == "question":
        for path in _local_files(config, "train_files"):
            if path.endswith(".parquet") and os.path.exists(path):
                fields = _extra_info_fields(path)
                if fields is None or "question" not in fields:
                    raise ConfigError(
                        f"data.train_files: {path} has no extra_info{'' if fields is None else '.question'}, which "
                        "algorithm.teacher.context=question shows the teacher; rebuild the data with "
                        "data_prep/build_parquet.py or set algorithm.teacher.context=student_prompt"
                    )


def _local_model_config(config: DictConfig) -> dict | None:
    """The actor model's ``config.json`` when the model is a local directory (a hub id: None)."""
    import json

    path = str(config.actor_rollout_ref.model.get("path") or "")
    f = os.path.join(path, "config.json")
    if not path or not os.path.isfile(f):
        return None
    with open(f, encoding="utf-8") as fh:
        return json.load(fh)


def check_topk(config: DictConfig) -> None:
    """A logit-level distillation loss reads the student's top-k tokens: k cannot exceed the vocabulary."""
    from verl_ext.distill.config import distill_options

    try:
        opts = distill_options(config.algorithm, str(config.algorithm.adv_estimator))
    except (TypeError, ValueError):
        return  # check_estimator reports it
    model = _local_model_config(config)
    if not opts.logit_level or model is None:
        return
    vocab = model.get("vocab_size") or (model.get("text_config") or {}).get("vocab_size")
    if vocab and opts.topk > int(vocab):
        raise ConfigError(f"algorithm.distill.topk={opts.topk} is above the model's vocabulary size ({vocab})")


def check_batches(config: DictConfig) -> None:
    """The actor's micro batch (per GPU) cannot exceed its mini batch per data-parallel rank
    (``ppo_mini_batch_size`` prompts x ``rollout.n`` responses over the ranks), which verl checks
    only for the deprecated global micro batch."""
    actor, trainer = config.actor_rollout_ref.actor, config.trainer
    micro, mini = actor.get("ppo_micro_batch_size_per_gpu"), actor.get("ppo_mini_batch_size")
    if actor.get("use_dynamic_bsz", False) or micro is None or mini is None:
        return
    n = int(config.actor_rollout_ref.rollout.get("n", 1) or 1)
    world = int(trainer.get("n_gpus_per_node", 1) or 1) * int(trainer.get("nnodes", 1) or 1)
    dp = max(1, world // int(actor.get("ulysses_sequence_parallel_size", 1) or 1))
    per_rank = int(mini) * n // dp
    if int(micro) > per_rank:
        raise ConfigError(
            f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro} is larger than the mini batch per rank "
            f"(ppo_mini_batch_size={mini} x rollout.n={n} / {dp} data-parallel rank(s) = {per_rank}); lower it")


# rows read per train file for the prompt-length check (its cost stays bounded on a large set)
PROMPT_CHECK_ROWS = 10_000


def check_prompt_length(config: DictConfig) -> None:
    """``data.max_prompt_length`` below every prompt would leave nothing to train on once verl filters
    overlong prompts. The shortest prompts of each train file (first ``PROMPT_CHECK_ROWS`` rows, by
    characters) are tokenized with the model's chat template, images left out: a lower bound."""
    import heapq

    import pyarrow.parquet as pq

    limit = config.data.get("max_prompt_length")
    path = str(config.actor_rollout_ref.model.get("path") or "")
    if limit is None or _local_model_config(config) is None:
        return
    tokenizer = None
    for f in _local_files(config, "train_files"):
        if not (f.endswith(".parquet") and os.path.exists(f)):
            continue
        pf = pq.ParquetFile(f)
        if "prompt" not in pf.schema_arrow.names:
            continue
        shortest: list[tuple[int, int, list]] = []  # (-chars, row, messages): the 8 shortest
        row = 0
        for batch in pf.iter_batches(batch_size=1024, columns=["prompt"]):
            for messages in batch.column(0).to_pylist():
                chars = sum(len(str(m.get("content") or "").replace("<image>", "")) for m in messages or [])
                heapq.heappush(shortest, (-chars, row, messages))
                if len(shortest) > 8:
                    heapq.heappop(shortest)
                row += 1
            if row >= PROMPT_CHECK_ROWS:
                break
        if not shortest:
            continue
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path)
        lengths = []
        for _, _, messages in shortest:
            text = [{"role": m["role"], "content": str(m["content"]).replace("<image>", "")} for m in messages]
            ids = tokenizer.apply_chat_template(text, add_generation_prompt=True, tokenize=True)
            lengths.append(len(ids["input_ids"] if hasattr(ids, "keys") else ids))
        if min(lengths) > int(limit):
            raise ConfigError(
                f"data.max_prompt_length={limit} is below every prompt of {f} checked (the shortest of its first "
                f"{row} rows has {min(lengths)} tokens without its images): verl would filter out every row; "
                "raise it")


def check_verl(config: DictConfig) -> None:
    """verl's own driver-side validation, as its main_ppo runs it."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


def check_attention(config: DictConfig, cuda: bool | None = None, flash_attn: bool | None = None) -> None:
    """verl loads the actor with ``flash_attention_2`` unless told otherwise; without the flash-attn
    package every worker fails at model load. Checked only where the driver sees a GPU (the recipes
    run it on a training node); ``cuda`` and ``flash_attn`` override the detection."""
    import importlib.util

    import torch

    if cuda is None:
        cuda = torch.cuda.is_available()
    override = config.actor_rollout_ref.model.get("override_config") or {}
    impl = str(override.get("attn_implementation", "flash_attention_2"))
    if not cuda or impl != "flash_attention_2":
        return
    if flash_attn is None:
        flash_attn = importlib.util.find_spec("flash_attn") is not None
    if not flash_attn:
        raise ConfigError(
            "actor_rollout_ref.model.override_config.attn_implementation=flash_attention_2 needs the flash-attn "
            "package, which is not installed: install it (bash scripts/setup_gpu.sh) or set the override to sdpa "
            "(ATTN_IMPL=sdpa for the recipe scripts)"
        )


def preflight(config: DictConfig) -> None:
    """Run every check; raises :class:`ConfigError` (or verl's own assertion) on the first problem."""
    check_estimator(config)
    check_data_files(config)
    check_attention(config)
    check_teacher(config)
    check_batches(config)
    check_topk(config)
    check_prompt_length(config)
    check_verl(config)


def summary(config: DictConfig) -> str:
    """The values that define a run, one per line: what a dry run prints before the full config."""
    a, r = config.actor_rollout_ref, config.algorithm
    lines = {
        "algorithm.adv_estimator": r.adv_estimator,
        "algorithm.teacher": _teacher_summary(config),
        "trainer.v1.trainer_mode": config.trainer.v1.trainer_mode,
        "actor.optim.lr": a.actor.optim.lr,
        "data.train_batch_size x rollout.n": f"{config.data.train_batch_size} x {a.rollout.n}",
        "max prompt + response": f"{config.data.max_prompt_length} + {config.data.max_response_length}",
        "trainer.total_training_steps": config.trainer.total_training_steps,
        "data.shuffle": f"{config.data.get('shuffle')} (false: file order, as released)",
        "validation / checkpoints": (
            f"test_freq={config.trainer.get('test_freq')} val_before_train={config.trainer.get('val_before_train')} "
            f"save_freq={config.trainer.get('save_freq')} max_actor_ckpt_to_keep={config.trainer.get('max_actor_ckpt_to_keep')}"
        ),
    }
    if str(r.adv_estimator) == "rlsd":
        lines["algorithm.rlsd lambda"] = _lambda_summary(config)
    if str(r.adv_estimator) in TEACHER_ESTIMATORS:
        lines["algorithm.distill.loss"] = r.get("distill", {}).get("loss")
    lines["baseline form (BASELINE_FORM)"] = os.environ.get("BASELINE_FORM", "paper")
    ro = a.rollout
    extras = OmegaConf.to_container(r.get("rollout", {}), resolve=True)
    lines["rollout"] = (f"agent loop {ro.get('agent', {}).get('default_agent_loop')}, vision pad logit bias "
                        f"{extras.get('vision_logit_bias')}, request seed {extras.get('seed')} (+ sample index)")
    return "\n".join(f"{k}: {v}" for k, v in lines.items())


def _lambda_summary(config: DictConfig) -> str:
    from verl_ext.algorithms.estimators import rlsd_lambda
    from verl_ext.algorithms.registry import schedule_position

    o = section(config.algorithm, "rlsd", RLSD_DEFAULTS)

    def lam(step):
        return rlsd_lambda(schedule_position(step, o["schedule_step"]), float(o["lambda_init"]),
                           int(o["decay_steps"]), int(o["warmup_steps"]))

    total = int(config.trainer.total_training_steps or 0)
    zero = next((s for s in range(1, total + 1) if lam(s) == 0.0 and s > int(o["warmup_steps"])), None)
    return (f"schedule_step={o['schedule_step']} decay_steps={o['decay_steps']}: step 1 {lam(1):.4g}, "
            f"step 2 {lam(2):.4g}, " + (f"0 from step {zero}" if zero else "never 0"))


def _teacher_summary(config: DictConfig):
    if str(config.algorithm.adv_estimator) not in TEACHER_ESTIMATORS:
        return OmegaConf.to_container(config.algorithm.get("teacher", {}), resolve=True)
    import dataclasses

    from verl_ext.privileged.config import TeacherConfig

    return dataclasses.asdict(TeacherConfig.from_verl(config))

