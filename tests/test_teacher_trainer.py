"""The self_distill trainer mode: registration, sync-mode behaviour, teacher schedule and weight sync.

The trainer's Ray/TransferQueue path runs in the end-to-end test; here its pieces run on real verl
objects (the registered class built from the Hydra config, verl's worker-role mapping) and a real
tiny Qwen3-VL (teacher copy refreshed with the worker's own blend function).
"""

from __future__ import annotations

import copy
import types

import pytest
import torch
from hydra import compose, initialize_config_dir

from verl_ext.privileged import PrivilegedPromptBuilder, StudentSample, TeacherConfig
from verl_ext.privileged.forward import response_log_probs
from verl_ext.trainer import CONFIG_DIR
from verl_ext.trainer.schedule import TeacherSchedule
from verl_ext.trainer.thought import thought_mask
from verl_ext.trainer.worker import blend_parameters


def _config(*overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose(
            "self_distill",
            overrides=[
                "data.train_batch_size=4",
                "actor_rollout_ref.actor.ppo_mini_batch_size=4",
                "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
                *overrides,
            ],
        )


def test_mode_is_registered_and_behaves_as_sync():
    import verl  # noqa: F401  (the plugin entry point registers the mode)
    from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    from verl_ext.algorithms import TEACHER_TRAINER_MODE
    from verl_ext.trainer.self_distill import SelfDistillTrainer

    cfg = _config("algorithm.adv_estimator=rlsd")
    assert cfg.trainer.v1.trainer_mode == TEACHER_TRAINER_MODE == "self_distill"
    cls = get_trainer_cls(cfg.trainer.v1.trainer_mode)
    assert cls is SelfDistillTrainer and issubclass(cls, PPOTrainerSync)
    trainer = cls(cfg)
    assert trainer.trainer_mode == "sync" and trainer.registered_mode == "self_distill"
    assert type(trainer.replay_buffer) is ReplayBuffer  # the async buffer is what a plain new name would get
    assert trainer.teacher_config.hint == "answer" and trainer.teacher_config.mode == "frozen"
    assert trainer.teacher_config.sync_every == 10
    # student prompt + hint budget + template room + response (no dynamic-batch limit in this config)
    assert trainer.teacher_config.max_length == cfg.data.max_prompt_length + 4096 + 512 + cfg.data.max_response_length
    assert trainer.teacher_config.context == "question" and trainer.teacher_config.template == "teacher"
    capped = cls(_config("algorithm.adv_estimator=rlsd", "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=true",
                         "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=3000"))
    assert capped.teacher_config.max_length == 3000  # the ref engine's per-sequence limit
    assert trainer.use_reference_policy and not trainer.kl_needs_ref


def test_worker_roles():
    from verl.trainer.ppo.utils import Role

    from verl_ext.trainer.self_distill import SelfDistillTrainer
    from verl_ext.trainer.worker import SelfDistillWorker

    frozen = SelfDistillTrainer(_config("algorithm.adv_estimator=rlsd"))
    frozen._init_resource_pool_mgr()
    assert list(frozen.role_worker_mapping) == [Role.ActorRolloutRef]  # verl builds the ref only for this role
    assert frozen.role_worker_mapping[Role.ActorRolloutRef].__ray_actor_class__ is SelfDistillWorker
    assert frozen.resource_pool_manager.mapping[Role.ActorRolloutRef] == "global_pool"

    live = SelfDistillTrainer(_config("algorithm.adv_estimator=opsd", "algorithm.teacher.mode=live"))
    live._init_resource_pool_mgr()
    assert list(live.role_worker_mapping) == [Role.ActorRollout] and not live.use_reference_policy

    grpo = SelfDistillTrainer(_config("algorithm.adv_estimator=grpo"))
    assert not grpo.teacher_enabled and grpo.teacher_schedule is None and not grpo.use_reference_policy


def test_config_errors():
    from verl_ext.trainer.self_distill import SelfDistillTrainer

    with pytest.raises(ValueError, match="actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu"):
        SelfDistillTrainer(_config("algorithm.adv_estimator=sdpo", "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=null"))
    with pytest.raises(ValueError, match="mode must be one of"):
        SelfDistillTrainer(_config("algorithm.adv_estimator=rlsd", "algorithm.teacher.mode=swa"))
    with pytest.raises(ValueError, match="LoRA"):
        SelfDistillTrainer(_config("algorithm.adv_estimator=rlsd", "actor_rollout_ref.model.lora_rank=8"))
    with pytest.raises(ValueError, match="ppo_epochs=2"):
        SelfDistillTrainer(_config("algorithm.adv_estimator=rlsd", "actor_rollout_ref.actor.ppo_epochs=2"))
    opted_in = SelfDistillTrainer(_config("algorithm.adv_estimator=rlsd", "actor_rollout_ref.actor.ppo_epochs=2",
                                          "algorithm.teacher.allow_multiple_updates=true"))
    assert opted_in._multiple_updates


def test_preflight_rejects_what_would_fail_later(tmp_path):
    """Each config below passes Hydra and verl's own checks but could not train as asked."""
    import pandas as pd

    from verl_ext.preflight import ConfigError, check_data_files, check_estimator, check_teacher

    def rejects(match, *overrides):
        cfg = _config("algorithm.adv_estimator=rlsd", *overrides)
        with pytest.raises(ConfigError, match=match):
            check_estimator(cfg)
            check_teacher(cfg)

    rejects(r"ppo_epochs=2 \(must be 1\).*allow_multiple_updates", "actor_rollout_ref.actor.ppo_epochs=2")
    rejects(r"ppo_mini_batch_size=2 < data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=2")
    rejects("bypass_mode", "algorithm.rollout_correction.bypass_mode=true")
    rejects(r"lambda_init must lie in \[0, 1\]", "+algorithm.rlsd.lambda_init=2")
    rejects("clip_eps", "+algorithm.rlsd.clip_eps=1.5")
    rejects("beta", "+algorithm.grpo_opsd.beta=-1")
    rejects(r"max_length=100 is below data.max_prompt_length \+ data.max_response_length",
            "algorithm.teacher.max_length=100")
    rejects(r"ref.log_prob_max_token_len_per_gpu=500\) is below", "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=true",
            "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=500")
    check_teacher(_config("algorithm.adv_estimator=rlsd", "actor_rollout_ref.actor.ppo_epochs=2",
                          "algorithm.teacher.allow_multiple_updates=true"))  # the explicit opt-in passes
    # data: an empty parquet file, and one without the question the teacher is shown
    empty, bare = tmp_path / "empty.parquet", tmp_path / "bare.parquet"
    pd.DataFrame({"prompt": pd.Series([], dtype=object)}).to_parquet(empty)
    pd.DataFrame({"prompt": ["q"], "extra_info": [{"answer": "1"}]}).to_parquet(bare)
    with pytest.raises(ConfigError, match=f"data.train_files: {empty} has no rows"):
        check_data_files(_config(f"data.train_files={empty}", f"data.val_files={bare}"))
    with pytest.raises(ConfigError, match="no extra_info.question.*context=student_prompt"):
        check_teacher(_config("algorithm.adv_estimator=rlsd", f"data.train_files={bare}"))
    check_teacher(_config("algorithm.adv_estimator=rlsd", f"data.train_files={bare}", "algorithm.teacher.context=student_prompt"))


def test_schedule():
    frozen = TeacherSchedule("frozen", sync_every=10)
    frozen.on_start(0)
    assert [s for s in range(1, 32) if frozen.rate_at(s) is not None] == [11, 21, 31]
    ema = TeacherSchedule("ema", ema_rate=0.05)
    ema.on_start(0)
    assert [ema.rate_at(s) for s in (1, 2, 3)] == [None, 0.05, 0.05]
    live = TeacherSchedule("live")
    live.on_start(5)
    assert all(live.rate_at(s) is None for s in range(1, 20)) and not live.needs_copy
    resumed = TeacherSchedule("frozen", sync_every=10)
    resumed.on_start(14)  # verl restored global_steps=14; fit runs step 15 next
    assert [resumed.rate_at(s) for s in (15, 16, 21)] == [1.0, None, 1.0]


def test_blend_parameters_is_the_ema_formula():
    torch.manual_seed(0)
    target, source = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    t0 = {k: v.clone() for k, v in target.state_dict().items()}
    assert blend_parameters(target, source, 0.25) == 2
    for k, v in target.state_dict().items():
        torch.testing.assert_close(v, 0.75 * t0[k] + 0.25 * source.state_dict()[k])
    blend_parameters(target, source, 1.0)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())
    with pytest.raises(RuntimeError, match="shard"):
        blend_parameters(torch.nn.Linear(3, 2), torch.nn.Linear(2, 3), 1.0)


@pytest.fixture(scope="module")
def vl(tmp_path_factory):
    from transformers import AutoModelForImageTextToText
    from verl.utils import hf_processor, hf_tokenizer

    from verl_ext.tiny_model import build_tiny_qwen3vl

    path = str(build_tiny_qwen3vl(tmp_path_factory.getbasetemp() / "tiny_qwen3vl"))
    tok, proc = hf_tokenizer(path), hf_processor(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    prompt = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    rows = [
        StudentSample(messages=msgs, prompt_ids=list(prompt), response_ids=tok.encode(text, add_special_tokens=False),
                      ground_truth="5", uid="g", score=1.0)
        for text in ("<thought>2 plus 3</thought><answer>5</answer>", "<answer>6</answer>")
    ]
    return types.SimpleNamespace(tok=tok, proc=proc, model=model, rows=rows)


def _teacher_log_probs(vl, model, builder):
    teacher, _, _ = builder.build(vl.rows)
    lengths = [len(r.response_ids) for r in vl.rows]
    return response_log_probs(model, [t.input_ids for t in teacher], [t.position_ids for t in teacher],
                              [t.multi_modal_inputs for t in teacher], lengths)


def test_frozen_teacher_changes_only_at_sync_steps(vl):
    policy = copy.deepcopy(vl.model)
    teacher = copy.deepcopy(vl.model)
    builder = PrivilegedPromptBuilder(vl.tok, vl.proc, TeacherConfig(hint="answer"))
    schedule = TeacherSchedule("frozen", sync_every=3)
    schedule.on_start(0)
    previous, changed, synced = None, [], []
    for step in range(1, 9):
        rate = schedule.rate_at(step)
        if rate is not None:
            blend_parameters(teacher, policy, rate)
            synced.append(step)
        out = _teacher_log_probs(vl, teacher, builder)
        if rate is not None:  # right after a sync the teacher is the policy
            torch.testing.assert_close(out, _teacher_log_probs(vl, policy, builder), atol=0, rtol=0)
        if previous is not None:
            changed.append(step) if not torch.equal(out, previous) else None
        previous = out
        with torch.no_grad():  # a policy update
            for p in policy.parameters():
                p.add_(0.02 * torch.randn_like(p))
    assert synced == [4, 7] and changed == [4, 7]


def test_ema_teacher_moves_by_the_rate(vl):
    policy, teacher = copy.deepcopy(vl.model), copy.deepcopy(vl.model)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    blend_parameters(teacher, policy, 0.05)
    pol = policy.state_dict()
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, 0.95 * before[k] + 0.05 * pol[k])


def test_live_teacher_with_empty_template_is_the_student(vl, tmp_path):
    plain = tmp_path / "plain.jinja"
    plain.write_text("{{ prompt }}")
    builder = PrivilegedPromptBuilder(vl.tok, vl.proc, TeacherConfig(hint="answer", mode="live", template=str(plain)))
    got = _teacher_log_probs(vl, vl.model, builder)
    lengths = [len(r.response_ids) for r in vl.rows]
    # the student's own old log-probs: its prompt + response, positions 0..L-1 on all rows
    ids = [torch.tensor(list(r.prompt_ids) + list(r.response_ids)) for r in vl.rows]
    pos = [torch.arange(x.numel()).expand(4, -1) for x in ids]
    want = response_log_probs(vl.model, ids, pos, [None, None], lengths)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    hinted = _teacher_log_probs(vl, vl.model, PrivilegedPromptBuilder(vl.tok, vl.proc, TeacherConfig(hint="answer")))
    assert (hinted - want).abs().max() > 1e-4  # the hint does change the teacher


def test_student_rows_from_transfer_queue_layout():
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    from verl_ext.trainer.self_distill import student_samples_from_tensordict

    rows = [
        {"uid": "u1", "prompts": torch.tensor([1, 2, 3]), "responses": torch.tensor([4, 5]),
         "rm_scores": torch.tensor([0.0, 0.9]), "raw_prompt": [{"role": "user", "content": "q1"}],
         "reward_model": {"ground_truth": "A", "style": "rule"}, "extra_info": {"index": 0, "ref": "t"},
         "multi_modal_inputs": {}},
        {"uid": "u1", "prompts": torch.tensor([1, 2]), "responses": torch.tensor([6, 7, 8]),
         "rm_scores": torch.tensor([0.0, 0.0, 1.0]), "raw_prompt": [{"role": "user", "content": "q2"}],
         "reward_model": {"ground_truth": "B", "style": "rule"}, "extra_info": {"index": 1},
         "multi_modal_inputs": {}},
    ]
    td = list_of_dict_to_tensordict(rows)
    samples = student_samples_from_tensordict(td, [{}, {"is_padding": True}])
    assert [s.prompt_ids for s in samples] == [[1, 2, 3], [1, 2]]
    assert [s.response_ids for s in samples] == [[4, 5], [6, 7, 8]]
    assert [s.score for s in samples] == pytest.approx([0.9, 1.0])
    assert [s.ground_truth for s in samples] == ["A", "B"] and samples[0].extra_info["ref"] == "t"
    assert samples[0].messages[0]["content"] == "q1" and [s.is_padding for s in samples] == [False, True]


def test_gap_metric_and_thought_mask(vl):
    from verl_ext.trainer.self_distill import teacher_gap_metrics

    t = torch.tensor([[-1.0, -2.0, 0.0], [-3.0, -1.0, -1.0]])
    s = torch.tensor([[-2.0, -2.5, 0.0], [-1.0, -1.0, -9.0]])
    m = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = teacher_gap_metrics(t, s, m, torch.tensor([True, False]))
    assert out["teacher/logprob_gap_mean"] == pytest.approx((1.0 + 0.5) / 2)
    assert out["teacher/log_prob_mean"] == pytest.approx(-1.5)
    assert "teacher/logprob_gap_success" not in out
    # split by the reward: three valid rows, the second failed; gaps by hand: row 0 (1.0, 0.5), row 1 (-2, 0, 8),
    # row 2 (0.5); row 3 invalid
    t3 = torch.cat([t, torch.tensor([[-0.5, 0.0, 0.0], [5.0, 5.0, 5.0]])])
    s3 = torch.cat([s, torch.tensor([[-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])])
    m3 = torch.cat([m, torch.tensor([[1, 0, 0], [1, 1, 1]])])
    out = teacher_gap_metrics(t3, s3, m3, torch.tensor([True, True, True, False]),
                              success=torch.tensor([True, False, True, True]))
    assert out["teacher/logprob_gap_success"] == pytest.approx((1.0 + 0.5 + 0.5) / 3)
    assert out["teacher/logprob_gap_failure"] == pytest.approx((-2.0 + 0.0 + 8.0) / 3)

    # every thought span, the tag tokens excluded (as released); the answer never
    text = "<thought>add 2 and 3</thought>so 5<thought>check: 5 - 3 = 2</thought><answer>5</answer>"
    ids = vl.tok.encode(text, add_special_tokens=False)
    mask = thought_mask(ids, vl.tok, width=len(ids) + 2)
    pieces = [vl.tok.decode([i]) for i in ids]
    inside = [p for p, k in zip(pieces, mask[: len(ids)].tolist()) if k]
    assert "".join(inside) == "add 2 and 3check: 5 - 3 = 2"
    assert not any(tag in "".join(inside) for tag in ("thought", "<", ">", "so", "answer"))
    assert mask[len(ids):].sum() == 0
    assert thought_mask(vl.tok.encode("<answer>5</answer>", add_special_tokens=False), vl.tok).sum() == 0
    # an unclosed span runs to the end
    open_ids = vl.tok.encode("<thought>still thinking", add_special_tokens=False)
    m = thought_mask(open_ids, vl.tok)
    assert "".join(vl.tok.decode([i]) for i, k in zip(open_ids, m.tolist()) if k) == "still thinking"


def test_teacher_copy_save_and_load_round_trip(tmp_path):
    from verl_ext.trainer.worker import load_local_parameters, save_local_parameters

    torch.manual_seed(1)
    saved, fresh = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    assert not load_local_parameters(fresh, str(tmp_path / "none"))  # no file: caller re-syncs
    save_local_parameters(saved, str(tmp_path / "teacher"))
    assert load_local_parameters(fresh, str(tmp_path / "teacher"))
    assert all(torch.equal(a, b) for a, b in zip(saved.parameters(), fresh.parameters()))
    with pytest.raises(RuntimeError, match="same number of ranks"):
        load_local_parameters(torch.nn.Linear(5, 3), str(tmp_path / "teacher"))
    restored = TeacherSchedule("frozen", sync_every=10)
    restored.on_start(14, teacher_restored=True)
    assert [restored.rate_at(s) for s in (15, 21)] == [None, 1.0]


def test_teacher_copy_reaches_the_fp32_shards_after_an_eval_forward(tmp_path):
    """FSDP2 (gloo, one rank, bf16 compute as verl's engines): after a no-grad forward the root unit keeps its
    parameters unsharded in bf16 (verl reshards it only when fsdp_size > 1). ``reshard`` before the copy makes
    the teacher's fp32 shards equal the policy's, and the saved copy holds those fp32 shards."""
    import os
    import socket

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from verl_ext.trainer.worker import reshard, save_local_parameters

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    try:
        mesh = init_device_mesh("cpu", (1,))
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16)

        def build(seed):
            torch.manual_seed(seed)
            model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 3))
            fully_shard(model[0], mesh=mesh, mp_policy=mp)
            fully_shard(model, mesh=mesh, mp_policy=mp)  # the root unit holds model[1]
            return model

        teacher, policy = build(0), build(1)
        x = torch.randn(2, 8)
        with torch.no_grad():
            teacher(x)
            assert any(p.dtype == torch.bfloat16 for p in teacher.parameters())  # root left unsharded in bf16
            blend_parameters(reshard(teacher), reshard(policy), 1.0)
            assert all(p.dtype == torch.float32 for p in teacher.parameters())
            file = save_local_parameters(teacher, str(tmp_path))
            saved = torch.load(file, weights_only=True)
            want = {n: p.data.to_local() for n, p in policy.named_parameters()}
            assert all(torch.equal(saved[n], want[n]) for n in want)
            assert torch.equal(teacher(x), policy(x))
    finally:
        dist.destroy_process_group()


def test_teacher_inputs_prepared_during_the_old_log_probs_are_used_for_their_rows_only(monkeypatch):
    """The inputs built in the driver thread while the workers compute old log-probs are taken at the advantage
    stage when they were built for the same rows, in the same order; otherwise their teacher rows leave
    TransferQueue and the inputs are built again. An error in the thread surfaces there. TransferQueue's
    ``kv_clear`` is replaced by a recorder (the queue itself runs in the e2e tests)."""
    from concurrent.futures import Future

    from transfer_queue import KVBatchMeta

    from verl_ext.trainer import self_distill as sd

    built = []

    def prepare(batch, step):
        built.append((list(batch.keys), step))
        return sd.TeacherInputs(list(batch.keys), [], [], torch.ones(len(batch.keys), dtype=torch.bool), [], {},
                                timing={"teacher_build": 0.25})  # fmt: skip

    trainer = object.__new__(sd.SelfDistillTrainer)
    trainer.timing_raw, trainer.global_steps, trainer._prepare_teacher = {}, 3, prepare
    cleared = []
    monkeypatch.setattr(sd.tq, "kv_clear", lambda keys, partition_id: cleared.append((keys, partition_id)))
    batch = KVBatchMeta(keys=["a_0", "b_0"], tags=[{}, {}], partition_id="train")

    def done(value=None, error=None):
        future = Future()
        future.set_exception(error) if error else future.set_result(value)
        return future

    trainer._teacher_inputs = done(prepare(batch, 3))
    assert trainer._teacher_inputs_for(batch).keys == ["a_0", "b_0"] and len(built) == 1
    assert trainer.timing_raw["teacher_build"] == 0.25 and "teacher_wait" in trainer.timing_raw

    stale = prepare(KVBatchMeta(keys=["b_0", "a_0"], tags=[{}, {}], partition_id="train"), 3)  # reordered rows
    stale.teacher_keys = ["b_0_teacher", "a_0_teacher"]
    trainer._teacher_inputs = done(stale)
    assert trainer._teacher_inputs_for(batch).keys == ["a_0", "b_0"]
    assert cleared == [(["b_0_teacher", "a_0_teacher"], sd.TEACHER_PARTITION)]
    assert built[-1] == (["a_0", "b_0"], 3) and len(built) == 3  # rebuilt for the rows as they are now
    assert trainer.timing_raw["teacher_build"] == 0.5  # the discarded build is not counted

    trainer._teacher_inputs = done(error=NotImplementedError("trajectory x_1"))
    with pytest.raises(NotImplementedError, match="x_1"):
        trainer._teacher_inputs_for(batch)
    assert trainer._teacher_inputs is None
    trainer._teacher_inputs_for(batch)  # nothing pending: built in place
    assert len(built) == 4
