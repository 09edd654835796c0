"""The CPU engine's response-only logits against verl's own full-logits forward on the same micro-batch.

Both run verl's ``FSDPEngineWithLMHead.forward_step`` code on the real tiny Qwen3-VL (a plain module here: one
process, no FSDP wrapping, which the shortcut does not depend on); the reference is verl's class, the
candidate our CPU subclass. Log-probs and entropy at the response positions and the gradients of a
response loss must agree; prompt positions are zero in ours (nothing reads them).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from tensordict import TensorDict

from verl.utils import tensordict_utils as tu
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead
from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding
from verl_ext.cpu.engine import CPUFSDPEngineWithLMHead, response_positions

PROMPTS = [[11, 12, 13, 14, 15], [21, 22], [31, 32, 33, 34]]
RESPONSES = [[41, 42, 43], [51, 52, 53, 54, 55], [61]]
# two responses to one prompt that share their first two tokens (as a group's rows do), and a third row
SHARED_PROMPTS = [[11, 12, 13], [11, 12, 13], [21, 22]]
SHARED_RESPONSES = [[41, 42, 43], [41, 42, 44], [51, 52]]


def micro_batch(temperature: float = 1.0, use_remove_padding: bool = False, rows=(PROMPTS, RESPONSES)) -> TensorDict:
    """A left-padded prompt / right-padded response batch as verl's trainer builds it, converted by verl's own
    ``left_right_2_no_padding`` to the engine's nested layout."""
    PROMPTS, RESPONSES = rows
    P, R = max(map(len, PROMPTS)), max(map(len, RESPONSES))
    B = len(PROMPTS)
    prompts, responses = torch.zeros(B, P, dtype=torch.long), torch.zeros(B, R, dtype=torch.long)
    mask = torch.zeros(B, P + R, dtype=torch.long)
    for b, (p, r) in enumerate(zip(PROMPTS, RESPONSES)):
        prompts[b, P - len(p):], responses[b, : len(r)] = torch.tensor(p), torch.tensor(r)
        mask[b, P - len(p): P + len(r)] = 1
    data = TensorDict(
        {"input_ids": torch.cat([prompts, responses], 1), "attention_mask": mask, "response_mask": mask[:, P:],
         "position_ids": (mask.cumsum(1) - 1).clamp(min=0), "prompts": prompts, "responses": responses},
        batch_size=[B],
    )  # fmt: skip
    data = left_right_2_no_padding(data)
    data["temperature"] = torch.full((B,), temperature)
    tu.assign_non_tensor(data, use_remove_padding=use_remove_padding, calculate_entropy=True, pad_token_id=0)
    return data


def engine(cls, model) -> FSDPEngineWithLMHead:
    """An engine object holding only what ``forward_step`` reads on one process."""
    eng = object.__new__(cls)
    eng.module, eng.pad_to_length, eng._autocast_dtype = model, None, torch.float32
    eng.engine_config = SimpleNamespace(entropy_checkpointing=False, entropy_from_logits_with_chunking=False)
    eng.get_data_parallel_group = lambda: None
    return eng


@pytest.fixture(autouse=True)
def cpu_device(monkeypatch):
    """verl resolves the device from its platform, which these in-process tests do not switch to ``cpu``."""
    import verl.workers.engine.fsdp.transformer_impl as impl

    monkeypatch.setattr(impl, "get_device_id", lambda: "cpu")
    monkeypatch.setattr(impl, "get_device_name", lambda: "cpu")


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration.from_pretrained(str(tiny_model_dir), dtype=torch.float32, attn_implementation="eager")


def response_loss(model_output, data, dp_group=None):
    """A loss reading what verl's losses read: response log-probs and entropy through ``no_padding_2_padding``."""
    lp = no_padding_2_padding(model_output["log_probs"], data)
    ent = no_padding_2_padding(model_output["entropy"], data)
    weights = torch.linspace(-1.0, 2.0, lp.numel()).view_as(lp) * data["response_mask"]
    return (lp * weights).sum() + 0.1 * (ent * data["response_mask"]).sum(), {}


def test_response_positions_are_the_tokens_before_each_response_token():
    rows = response_positions(micro_batch())
    # row 0: prompt 5, response 3 -> columns 4, 5, 6 predict the response; row 2: prompt 4, response 1 -> column 3
    assert rows.nonzero().tolist() == [[0, 4], [0, 5], [0, 6], [1, 1], [1, 2], [1, 3], [1, 4], [1, 5], [2, 3]]
    assert response_positions(micro_batch(use_remove_padding=True)) is None  # packed: verl's own path


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_forward_matches_verls_full_logits(model, temperature):
    ref = engine(FSDPEngineWithLMHead, model).forward_step(micro_batch(temperature), None, forward_only=True)[1]
    ours = engine(CPUFSDPEngineWithLMHead, model).forward_step(micro_batch(temperature), None, forward_only=True)[1]
    data = micro_batch(temperature)
    for key in ("log_probs", "entropy"):
        a = no_padding_2_padding(ref["model_output"][key], data) * data["response_mask"]
        b = no_padding_2_padding(ours["model_output"][key], data) * data["response_mask"]
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        assert ours["model_output"][key].values().shape == ref["model_output"][key].values().shape
    # the full pass really computed something else at the prompt positions: ours are zeros there
    assert float(ours["model_output"]["log_probs"].values().abs().sum()) < float(ref["model_output"]["log_probs"].values().abs().sum())


@pytest.mark.parametrize("temperature", [1.0, 0.7])  # 0.7: our temperature division runs in place
def test_gradients_match_verls_full_logits(model, temperature):
    """In float64. The two paths compute the same sums in a different order (ours over the response positions,
    verl's over every position, whose zero terms change the blocking of each matmul and so the rounding). In
    float32 the tied embedding's gradient sums hundreds of terms per row, and its rounding differs with the
    thread count's blocking (~1e-4 relative): no fixed float32 tolerance is derived from that. In float64 each
    path is within n * 2^-53 of the exact sum of its terms' magnitudes, n <= 151,669 (the softmax's vocabulary
    sum): under 2e-11 relative. We allow 1e-9 of each tensor's largest gradient, which no difference in the
    arithmetic itself could stay under."""
    grads = []
    for cls in (FSDPEngineWithLMHead, CPUFSDPEngineWithLMHead):
        m = copy.deepcopy(model).double().train()
        eng = engine(cls, m)
        eng._autocast_dtype = torch.float64  # CPU autocast does not take float64: verl's autocast block is a no-op
        data = micro_batch(temperature)
        data["temperature"] = data["temperature"].double()
        loss, _ = eng.forward_step(data, response_loss, forward_only=False)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "model.language_model.embed_tokens.weight" in grads[0]  # tied LM head
    assert grads[0]["model.language_model.embed_tokens.weight"].dtype == torch.float64
    for name in grads[0]:
        scale = float(grads[0][name].abs().max())
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=1e-9 * max(scale, 1e-300), msg=name)


def test_unique_rows_keeps_bits_apart_and_rebuilds_the_input():
    from verl_ext.cpu.engine import unique_rows

    h = torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 2.0], [-0.0, 1.0], [1.0, 2.0]], dtype=torch.bfloat16)
    distinct, inverse = unique_rows(h)
    assert distinct.shape[0] == 3  # -0.0 and 0.0 are different bits: not merged
    assert torch.equal(distinct[inverse].view(torch.int16), h.view(torch.int16))
    assert inverse[0] == inverse[2] == inverse[4] and len({int(inverse[1]), int(inverse[3]), int(inverse[0])}) == 3
    assert unique_rows(h[:2])[1] is None  # all distinct: nothing to share


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shared_row_log_probs_match_verl_and_float64(dtype):
    """Against verl's own ``logprobs_from_logits`` on the expanded rows (bit for bit: the same per-row operations)
    and against float64 log-softmax of the same inputs. V = 1000: float32 summation of V terms is within
    V * 2^-24 < 6e-5 relative of the sum, i.e. 6e-5 absolute in its log; bfloat16 rounds the result to 2^-8
    relative (|log p| <= 12 here: 0.047), float32 results are exact to 2^-24 relative."""
    from verl.utils.torch_functional import logprobs_from_logits
    from verl_ext.cpu.engine import shared_row_log_probs

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(4, 1000, generator=g) * 3).to(dtype)
    inverse = torch.tensor([0, 2, 2, 1, 3, 0, 2])
    labels = torch.randint(0, 1000, (7,), generator=g)
    ours = shared_row_log_probs(logits, inverse, labels)
    verl = logprobs_from_logits(logits=logits[inverse], labels=labels)
    assert ours.dtype == verl.dtype and torch.equal(ours, verl)
    exact = torch.log_softmax(logits.double(), -1)[inverse, labels]
    rel = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-24
    torch.testing.assert_close(ours.double(), exact, rtol=rel, atol=6e-5)


def test_shared_row_log_probs_in_chunks_match_verl_at_the_full_vocabulary():
    """bf16 rows go through log-softmax LOG_SOFTMAX_ROWS at a time: 37 distinct rows (three chunks, the last one
    partial) of Qwen's 151,669 logits, 90 positions in shuffled order, each row used at least once; the result is
    verl's one-row-at-a-time computation bit for bit."""
    from verl.utils.torch_functional import logprobs_from_logits
    from verl_ext.cpu.engine import LOG_SOFTMAX_ROWS, shared_row_log_probs

    g = torch.Generator().manual_seed(1)
    rows, vocab = 2 * LOG_SOFTMAX_ROWS + 5, 151669
    logits = (torch.randn(rows, vocab, generator=g) * 3).to(torch.bfloat16)
    inverse = torch.cat([torch.arange(rows), torch.randint(0, rows, (90 - rows,), generator=g)])
    inverse = inverse[torch.randperm(90, generator=g)]
    labels = torch.randint(0, vocab, (90,), generator=g)
    ours = shared_row_log_probs(logits, inverse, labels)
    assert torch.equal(ours, logprobs_from_logits(logits=logits[inverse], labels=labels))


def test_forward_only_pass_shares_equal_hidden_states(model):
    """Under no_grad (verl's forward-only passes) rows with the same prompt and response prefix share their LM-head
    rows: the LM head sees fewer rows, and the log-probs / entropy equal verl's full-logits path; with gradients
    every position keeps its own row (each hidden state needs its own gradient)."""
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, o: seen.append(a[0].shape[-2]))
    try:
        batch = lambda: micro_batch(0.7, rows=(SHARED_PROMPTS, SHARED_RESPONSES))  # noqa: E731
        with torch.no_grad():
            ref, ours = (engine(cls, model).forward_step(batch(), None, forward_only=True)[1]["model_output"]
                         for cls in (FSDPEngineWithLMHead, CPUFSDPEngineWithLMHead))
        # 8 response positions; rows 0 and 1 predict from the same 3 contexts: 3 + 2 distinct hidden states
        assert seen[-1] == 5
        data = batch()
        for key in ("log_probs", "entropy"):
            a = no_padding_2_padding(ref[key], data) * data["response_mask"]
            b = no_padding_2_padding(ours[key], data) * data["response_mask"]
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        lp = no_padding_2_padding(ours["log_probs"], data)
        assert lp[0, :2].tolist() == lp[1, :2].tolist() and lp[0, 2] != lp[1, 2]  # same contexts, labels 43 vs 44
        engine(CPUFSDPEngineWithLMHead, model).forward_step(batch(), None, forward_only=True)
        assert seen[-1] == 8
    finally:
        hook.remove()


def test_shared_images_encode_each_image_once(tiny_model_dir):
    """In forward-only passes the vision tower runs once per distinct image (a group's rows share theirs) and every
    row gets outputs equal, bit for bit, to the tower run on all images; with gradients nothing changes."""
    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor

    from verl_ext.cpu.engine import SharedImages

    rng = np.random.default_rng(0)
    a, b, c = (Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(3))
    images = AutoProcessor.from_pretrained(str(tiny_model_dir)).image_processor(images=[a, a, b, a, c], return_tensors="pt")
    pv, grid = images["pixel_values"], images["image_grid_thw"]
    # a model of its own: the engines of the tests above left their hooks on the module-scoped one
    from transformers import Qwen3VLForConditionalGeneration

    visual = Qwen3VLForConditionalGeneration.from_pretrained(str(tiny_model_dir), dtype=torch.float32).model.visual
    seen = []
    probe = visual.patch_embed.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    with torch.no_grad():
        ref = visual(pv, grid_thw=grid, return_dict=True)
    shared = SharedImages(visual)
    try:
        with torch.no_grad():
            ours = visual(pv, grid_thw=grid, return_dict=True)
        assert seen[-1] * 5 == seen[0] * 3  # three distinct images encoded, not five
        assert torch.equal(ours.last_hidden_state, ref.last_hidden_state)
        assert torch.equal(ours.pooler_output, ref.pooler_output)
        assert len(ours.deepstack_features) == len(ref.deepstack_features) > 0
        assert all(torch.equal(x, y) for x, y in zip(ours.deepstack_features, ref.deepstack_features))
        tokens = ours.pooler_output.split((grid.prod(-1) // visual.spatial_merge_size**2).tolist())
        assert torch.equal(tokens[0], tokens[3]) and not torch.equal(tokens[0], tokens[2])
        visual(pv, grid_thw=grid, return_dict=True)  # with gradients: every image through the tower
        assert seen[-1] == seen[0]
    finally:
        probe.remove()
        for handle in shared.handles:
            handle.remove()


def test_forward_only_passes_take_the_most_rows_that_divide_the_batch(monkeypatch):
    """verl's fixed micro-batches must divide the batch; on the response-logits path the engine takes the largest
    such size whose response positions (rows x longest response) fit FORWARD_ONLY_POSITIONS, never fewer rows than
    configured, and leaves verl's sizing alone elsewhere (dynamic sizes, packed or top-k passes)."""
    from verl_ext.cpu import engine as cpu_engine

    def batch(configured, rows=(PROMPTS, RESPONSES), **flags):
        data = micro_batch(rows=rows)  # responses of 3, 5 and 1 tokens: the longest is 5
        tu.assign_non_tensor(data, **{"use_dynamic_bsz": False, "micro_batch_size_per_gpu": configured, **flags})
        return data

    assert cpu_engine.forward_only_rows(batch(1)) == 3
    assert cpu_engine.forward_only_rows(batch(3)) is None  # already one micro-batch
    six = (PROMPTS * 2, RESPONSES * 2)
    assert cpu_engine.forward_only_rows(batch(1, six)) == 6
    assert cpu_engine.forward_only_rows(batch(1, six, force_group_size=2)) == 3  # 6 = 2 groups x 3 rows
    monkeypatch.setattr(cpu_engine, "FORWARD_ONLY_POSITIONS", 15)
    assert cpu_engine.forward_only_rows(batch(1, six)) == 3  # 6 x 5 > 15; 5 and 4 do not divide 6; 3 x 5 = 15
    monkeypatch.setattr(cpu_engine, "FORWARD_ONLY_POSITIONS", 14)
    assert cpu_engine.forward_only_rows(batch(1, six)) == 2
    assert cpu_engine.forward_only_rows(batch(2, six)) is None  # nothing larger than the configured 2 fits
    monkeypatch.setattr(cpu_engine, "FORWARD_ONLY_POSITIONS", 2048)
    assert cpu_engine.forward_only_rows(batch(1, use_dynamic_bsz=True)) is None
    assert cpu_engine.forward_only_rows(batch(1, distillation_use_topk=True)) is None  # full-vocabulary logits
    data = micro_batch(use_remove_padding=True)
    tu.assign_non_tensor(data, use_dynamic_bsz=False, micro_batch_size_per_gpu=1)
    assert cpu_engine.forward_only_rows(data) is None  # packed: verl's own path

    # the engine hands verl's micro-batching that size in forward-only passes only (verl's method, which needs a
    # process group, stands in as a recorder here; the e2e runs take the real one)
    seen = []
    monkeypatch.setattr(FSDPEngineWithLMHead, "forward_backward_batch",
                        lambda self, data, loss_function, forward_only=False: seen.append(data["micro_batch_size_per_gpu"]))
    eng = object.__new__(CPUFSDPEngineWithLMHead)
    eng.forward_backward_batch(batch(1, six), None, forward_only=True)
    eng.forward_backward_batch(batch(1, six), None, forward_only=False)
    assert seen == [6, 1]
