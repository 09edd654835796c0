"""The engine-side pieces of the top-k loss on a real tiny Qwen3-VL (no Ray): the recorded student ids,
the teacher values' alignment with the sampled-token log-probs of today's teacher pass, and the
update's per-token divergence, each against an independent computation on padded logits."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from verl_ext.distill.actor import ROW, TEACHER_TOPK, TOPK_IDS, TopkRecorder, response_rows, self_distill_loss
from verl_ext.distill.config import DistillOptions, check_config
from verl_ext.distill.losses import topk_divergence
from verl_ext.privileged.forward import response_log_probs


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    m = AutoModelForImageTextToText.from_pretrained(str(tiny_model_dir), torch_dtype=torch.float32)
    return m.eval()


def make_rows(vocab: int, prompt_lens=(5, 3), response_lens=(4, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(10, vocab, (p,), generator=g) for p in prompt_lens]
    responses = [torch.randint(10, vocab, (r,), generator=g) for r in response_lens]
    return prompts, responses


def nested(ts):
    return torch.nested.as_nested_tensor(list(ts), layout=torch.jagged)


def micro_batch(prompts, responses, **fields) -> TensorDict:
    seqs = [torch.cat([p, r]) for p, r in zip(prompts, responses)]
    td = TensorDict(
        {
            "input_ids": nested(seqs),
            "prompts": nested(prompts),
            "responses": nested(responses),
            "response_mask": nested([torch.ones(len(r), dtype=torch.long) for r in responses]),
            ROW: torch.arange(len(seqs)),
            **fields,
        },
        batch_size=len(seqs),
    )
    return td, seqs


@torch.no_grad()
def packed_and_padded_logits(model, seqs):
    """The engine's no-remove-padding layout: ``[1, N, V]`` packed valid rows, plus the ``[B, L, V]`` padded logits."""
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, s in enumerate(seqs):
        ids[b, : len(s)], mask[b, : len(s)] = s, 1
    pos = torch.arange(width).expand(len(seqs), width)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits.float()
    packed = torch.cat([logits[b, : len(s)] for b, s in enumerate(seqs)]).unsqueeze(0)
    return packed, logits


def test_response_rows_follow_verls_shift():
    prompts, responses = make_rows(100)
    td, _ = micro_batch(prompts, responses)
    rows, lens = response_rows(td, 18)
    # row 0: 5 + 4 tokens at packed 0..8, responses scored by rows 4..7; row 1: 3 + 6 at 9..17 -> 11..16
    assert lens == [4, 6]
    assert rows.tolist() == [4, 5, 6, 7, 11, 12, 13, 14, 15, 16]


def test_student_ids_and_teacher_values_align_with_sampled_log_probs(model):
    vocab = model.config.get_text_config().vocab_size
    prompts, responses = make_rows(vocab)
    td, seqs = micro_batch(prompts, responses)
    packed, padded = packed_and_padded_logits(model, seqs)

    student = TopkRecorder("student", topk=3, chunk_rows=2)
    assert student(student_logits=packed, data=td) == {}
    ids = student.nested(2)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        expected = padded[b, len(p) - 1 : len(p) + len(r) - 1].topk(3, dim=-1).indices
        assert torch.equal(ids[b].long(), expected)

    # teacher values at [sampled token, top-1, top-2]: column 0 must be today's sampled-token log-prob
    support = nested([torch.cat([r.unsqueeze(-1), ids[b][:, :2].long()], dim=-1) for b, r in enumerate(responses)])
    td[TOPK_IDS] = support
    teacher = TopkRecorder("teacher", topk=3)
    teacher(student_logits=packed, data=td)
    values = teacher.nested(2)
    sampled = response_log_probs(
        model, seqs, [torch.arange(len(s)) for s in seqs], [None, None], [len(r) for r in responses]
    )
    for b, r in enumerate(responses):
        assert torch.allclose(values[b][:, 0], sampled[b, : len(r)], atol=1e-5)
        lsm = torch.log_softmax(padded[b, len(prompts[b]) - 1 : len(prompts[b]) + len(r) - 1], -1)
        assert torch.allclose(values[b], lsm.gather(-1, support[b]), atol=1e-5)


def test_teacher_support_records_the_teachers_own_top_k(model):
    vocab = model.config.get_text_config().vocab_size
    prompts, responses = make_rows(vocab, seed=2)
    td, seqs = micro_batch(prompts, responses)
    packed, padded = packed_and_padded_logits(model, seqs)
    rec = TopkRecorder("teacher_topk", topk=5, chunk_rows=4)
    rec(student_logits=packed, data=td)
    ids, values = rec.nested(2, ids=True), rec.nested(2)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        lsm = torch.log_softmax(padded[b, len(p) - 1 : len(p) + len(r) - 1], -1)
        top = lsm.topk(5, dim=-1)
        assert torch.equal(ids[b].long(), top.indices)
        assert torch.allclose(values[b], top.values, atol=1e-5)


def test_update_processor_divergence_and_zero_outside_responses(model):
    vocab = model.config.get_text_config().vocab_size
    prompts, responses = make_rows(vocab, seed=1)
    td, seqs = micro_batch(prompts, responses)
    packed, padded = packed_and_padded_logits(model, seqs)
    k = 4
    ids = [padded[b, len(p) - 1 : len(p) + len(r) - 1].topk(k, -1).indices for b, (p, r) in enumerate(zip(prompts, responses))]
    teacher = [torch.log_softmax(torch.randn(len(r), vocab), -1).gather(-1, i) for r, i in zip(responses, ids)]
    td[TOPK_IDS], td[TEACHER_TOPK] = nested([i.int() for i in ids]), nested(teacher)
    opts = DistillOptions(loss="jsd_topk", topk=k, alpha=0.5, chunk_rows=3)
    leaf = packed.clone().requires_grad_(True)
    out = self_distill_loss(None, opts, "opsd", student_logits=leaf, data=td)
    losses = out["distill_losses"][0]
    rows, _ = response_rows(td, losses.shape[0])
    outside = torch.ones_like(losses, dtype=torch.bool)
    outside[rows] = False
    assert torch.all(losses[outside] == 0)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        lsm = torch.log_softmax(padded[b, len(p) - 1 : len(p) + len(r) - 1], -1)
        expected = topk_divergence(lsm.gather(-1, ids[b]), teacher[b], alpha=0.5, tail=True)
        got = losses[rows[sum(len(x) for x in responses[:b]) :][: len(r)]]
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.all(expected > 0)
    losses.sum().backward()
    assert leaf.grad[0, outside].abs().max() == 0  # prompt positions get no gradient
    assert leaf.grad[0, rows].abs().max() > 0


def test_options_and_checks():
    assert DistillOptions(loss="forward_kl_topk", alpha=0.5).effective_alpha == 0.0
    with pytest.raises(ValueError, match="support"):
        DistillOptions(loss="jsd_topk", support="mixture")
    with pytest.raises(ValueError, match="algorithm.distill.loss"):
        DistillOptions(loss="jsd")
    with pytest.raises(ValueError, match="adv_estimator=rlsd"):
        DistillOptions.resolve({"loss": "jsd_topk"}, "rlsd")
    with pytest.raises(ValueError, match="unknown option"):
        DistillOptions.resolve({"top_k": 3}, "opsd")
    assert DistillOptions.resolve({"loss": "jsd_topk", "is_clip": None}, "sdpo").is_clip is None
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "algorithm": {"adv_estimator": "sdpo", "distill": {"loss": "jsd_topk"}},
            "actor_rollout_ref": {"actor": {"ulysses_sequence_parallel_size": 2}, "model": {}},
        }
    )
    with pytest.raises(ValueError, match="ulysses_sequence_parallel_size=1"):
        check_config(cfg)
    cfg.actor_rollout_ref.actor.ulysses_sequence_parallel_size = 1
    cfg.actor_rollout_ref.model.use_fused_kernels = True
    with pytest.raises(ValueError, match="use_fused_kernels=false"):
        check_config(cfg)
    cfg.actor_rollout_ref.model.use_fused_kernels = False
    check_config(cfg)
    cfg.algorithm.rollout_correction = {"bypass_mode": True}
    with pytest.raises(ValueError, match="bypass_mode"):
        check_config(cfg)


def test_loss_aggregation_with_importance_weight_and_invalid_rows():
    """verl's token-mean over the batch's tokens of min(exp(logp - logp_old), clip) * divergence,
    rows without a teacher contributing 0, worked out by hand on 2 rows of 3 + 2 tokens."""
    from types import SimpleNamespace

    from verl_ext.distill.actor import VALID, self_distill_loss

    prompts = [torch.tensor([1, 2]), torch.tensor([3])]
    responses = [torch.tensor([4, 5, 6]), torch.tensor([7, 8])]
    # per packed position: position P-1+t scores response token t; 9.0 marks positions that score no response token
    div = [torch.tensor([9.0, 0.5, 1.0, 2.0, 9.0]), torch.tensor([3.0, 4.0, 9.0])]
    lp = [torch.tensor([9.0, -1.0, -1.0, -1.0, 9.0]), torch.tensor([-2.0, -2.0, 9.0])]
    old = nested([torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-2.0, -2.0])])
    td, _ = micro_batch(prompts, responses, old_log_probs=old, **{VALID: torch.tensor([1.0, 0.0])})
    from verl.utils import tensordict_utils as tu

    tu.assign_non_tensor(td, dp_size=1, batch_num_tokens=5, global_batch_size=2)
    out = {
        "distill_losses": nested(div),
        "distill_student_mass": nested([torch.full((5,), 0.9), torch.full((3,), 0.8)]),
        "distill_teacher_mass": nested([torch.full((5,), 0.7), torch.full((3,), 0.6)]),
        "log_probs": nested(lp),
    }
    config = SimpleNamespace(loss_agg_mode="token-mean", global_batch_info={}, loss_scale_factor=None)
    opts = DistillOptions(loss="jsd_topk", is_clip=2.0)
    loss, metrics = self_distill_loss(config, opts, "sdpo", coef=1.0, model_output=out, data=td)
    # row 0: divergences 0.5, 1.0, 2.0 with ratios exp(0) = 1, exp(1) -> 2 (clipped), exp(-0.5)
    expected = (0.5 * 1.0 + 1.0 * 2.0 + 2.0 * math.exp(-0.5)) / 5  # row 1 has no teacher: 0; 5 tokens in the batch
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["distill/is_clip_frac"].aggregate() == pytest.approx(1 / 3)
    assert metrics["distill/valid_frac"].aggregate() == pytest.approx(0.5)
    assert metrics["distill/teacher_topk_mass"].aggregate() == pytest.approx(0.7)


def test_preflight_refuses_a_logit_loss_for_rlsd():
    from omegaconf import OmegaConf

    from verl_ext.preflight import ConfigError, check_estimator

    cfg = OmegaConf.create(
        {
            "algorithm": {"adv_estimator": "rlsd", "distill": {"loss": "jsd_topk"}},
            "trainer": {"v1": {"trainer_mode": "self_distill"}},
            "actor_rollout_ref": {"actor": {}, "model": {}, "ref": {}, "rollout": {}},
            "data": {},
        }
    )
    with pytest.raises(ConfigError, match="algorithm.distill.loss=jsd_topk applies to opsd, sdpo, grpo_opsd"):
        check_estimator(cfg)
    cfg.algorithm.adv_estimator = "sdpo"
    check_estimator(cfg)
