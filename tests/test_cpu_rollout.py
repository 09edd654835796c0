"""The transformers rollout server against an independent full-sequence forward of the same model."""

from __future__ import annotations

import io
import math

import pytest
import torch
from PIL import Image, ImageDraw

from verl_ext.cpu.hf_rollout import HFRolloutServer, request_digest, request_seed, sample_next_token


def test_sample_next_token_rules():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(200, 1)
    assert torch.equal(sample_next_token(logits, 0.0, 1.0, -1), torch.full((200,), 1))  # greedy
    assert torch.equal(sample_next_token(logits, 1.0, 1.0, 1), torch.full((200,), 1))  # top-k 1
    assert torch.equal(sample_next_token(logits, 1.0, 1e-6, -1), torch.full((200,), 1))  # top-p ~ 0
    g = torch.Generator().manual_seed(0)
    top2 = sample_next_token(logits, 1.0, 1.0, 2, generator=g)
    assert set(top2.tolist()) == {1, 3}  # both kept tokens appear in 200 draws, nothing else
    # top-p 0.7: softmax([0,3,1,2]) = [.032,.644,.087,.237]; smallest prefix reaching .7 is {1, 3}
    top_p = sample_next_token(logits, 1.0, 0.7, -1, generator=g)
    assert set(top_p.tolist()) == {1, 3}


def test_sampling_follows_the_softmax():
    """Frequencies of 40,000 draws at temperature 2 match softmax(z / 2) to within 5 standard errors."""
    z = torch.tensor([0.0, 3.0, 1.0, 2.0, -1.0])
    g = torch.Generator().manual_seed(1)
    draws = sample_next_token(z.repeat(40_000, 1), 2.0, 1.0, -1, generator=g)
    freq = torch.bincount(draws, minlength=5).double() / 40_000
    p = torch.exp(z.double() / 2) / torch.exp(z.double() / 2).sum()
    se = torch.sqrt(p * (1 - p) / 40_000)
    assert torch.all((freq - p).abs() < 5 * se), (freq, p)


def test_top_k_then_top_p_follows_the_renormalised_softmax():
    """top-k 3 of z = [0, 3, 1, 2, -1] keeps ids {1, 3, 2} with softmax([3, 2, 1]) = [.665, .245, .090]; top-p .8 then
    keeps {1, 3} (.665 < .8, .910 > .8), drawn as [.731, .269]; nothing else ever appears in 40,000 draws."""
    z = torch.tensor([0.0, 3.0, 1.0, 2.0, -1.0])
    draws = sample_next_token(z.repeat(40_000, 1), 1.0, 0.8, 3, generator=torch.Generator().manual_seed(2))
    freq = torch.bincount(draws, minlength=5).double() / 40_000
    p1 = math.exp(3) / (math.exp(3) + math.exp(2))
    expected = torch.tensor([0.0, p1, 0.0, 1 - p1, 0.0], dtype=torch.double)
    se = math.sqrt(p1 * (1 - p1) / 40_000)
    assert torch.all((freq - expected).abs() < 5 * se), (freq, expected)


def test_per_row_generators_draw_as_they_would_alone():
    """Row r of a batch with one generator per row gets the token a batch of one with the same seed gets."""
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(3))
    batched = sample_next_token(logits, 0.9, 0.95, 10, generator=[torch.Generator().manual_seed(s) for s in range(6)])
    alone = [int(sample_next_token(logits[r : r + 1], 0.9, 0.95, 10, generator=torch.Generator().manual_seed(r))) for r in range(6)]
    assert batched.tolist() == alone


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    from verl.workers.config import HFModelConfig, RolloutConfig

    config = RolloutConfig(name="hf", prompt_length=64, response_length=6, max_model_len=96, tensor_model_parallel_size=1)
    return HFRolloutServer(config, HFModelConfig(path=str(tiny_model_dir)))


def _image(k: int = 0) -> Image.Image:
    im = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(im).ellipse((10 + 4 * k, 10, 40, 40 - 4 * k), fill=("red", "blue")[k % 2])
    return Image.open(io.BytesIO(_png(im))).convert("RGB")


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _prompt(processor, n_images: int, text: str):
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
    chat = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
    images = [_image(i) for i in range(n_images)]
    inputs = processor(text=[chat], images=images or None, return_tensors="pt")
    return inputs["input_ids"][0].tolist(), images, inputs


def _check_against_full_forward(server, prompt_ids, inputs, out):
    """Each generated token is the argmax of an unpadded full-sequence forward at its position, and its
    log-prob is that forward's log-softmax (independent of the KV cache, the batching and the padding)."""
    assert 1 <= len(out.token_ids) <= 6 and len(out.log_probs) == len(out.token_ids)
    ids = torch.tensor([prompt_ids + out.token_ids])
    kwargs = {}
    if "pixel_values" in inputs:
        kwargs = {"pixel_values": inputs["pixel_values"], "image_grid_thw": inputs["image_grid_thw"],
                  "mm_token_type_ids": (ids == server.image_token_id).long()}
    with torch.no_grad():
        logits = server.model(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs).logits[0].float()
    n = len(prompt_ids)
    for t, token in enumerate(out.token_ids):
        step_logits = logits[n - 1 + t]
        assert int(step_logits.argmax()) == token
        assert math.isclose(float(torch.log_softmax(step_logits, -1)[token]), out.log_probs[t], abs_tol=1e-4)


def test_greedy_generation_matches_full_forward(server):
    prompt_ids, images, inputs = _prompt(server.processor, 1, "How many circles?")
    out = server._generate(prompt_ids, {"temperature": 0.0, "logprobs": 0}, images)
    _check_against_full_forward(server, prompt_ids, inputs, out)


def test_batched_requests_match_their_own_full_forward(server):
    """Concurrent requests of different lengths, with 0, 1 and 2 images, go through one left-padded batch
    (M-RoPE positions from the attention mask); each row still equals its own unbatched forward."""
    import asyncio

    prompts = [_prompt(server.processor, k, text) for k, text in
               [(2, "Which image has more dots? Answer A or B."), (0, "Say hi"), (1, "What colour?")]]
    calls = []

    async def run_all():
        return await asyncio.gather(*[server.generate(p, {"temperature": 0.0, "logprobs": 0}, f"r{i}", image_data=im or None)
                                      for i, (p, im, _) in enumerate(prompts)])

    original = server._generate_batch
    server._generate_batch = lambda reqs: calls.append(len(reqs)) or original(reqs)
    try:
        outs = asyncio.run(run_all())
    finally:
        server._generate_batch = original
    assert calls == [3]  # one generate call served all three
    for (p, _, inputs), out in zip(prompts, outs):
        _check_against_full_forward(server, p, inputs, out)


def test_requests_with_other_sampling_settings_are_not_mixed(server):
    import asyncio

    p, im, _ = _prompt(server.processor, 1, "What shape?")
    calls = []
    original = server._generate_batch
    server._generate_batch = lambda reqs: calls.append(sorted(r["key"][0] for r in reqs)) or original(reqs)

    async def run_all():
        params = [{"temperature": 0.0}, {"temperature": 1.0}, {"temperature": 0.0}]
        return await asyncio.gather(*[server.generate(p, sp, f"r{i}", image_data=im) for i, sp in enumerate(params)])

    try:
        outs = asyncio.run(run_all())
    finally:
        server._generate_batch = original
    assert sorted(calls) == [[0.0, 0.0], [1.0]]
    assert outs[0].token_ids == outs[2].token_ids and outs[0].log_probs is None


def test_image_token_count_mismatch_is_an_error(server):
    with pytest.raises(ValueError, match="image tokens"):
        server._generate([1, 2, 3], {"temperature": 0.0}, [_image()])


def test_update_weights_rejects_unknown_names(server):
    import asyncio

    with pytest.raises(KeyError, match="does not have"):
        asyncio.run(server.update_weights({"no.such.weight": torch.zeros(1)}))


def test_sampled_requests_are_reproducible_whatever_the_batch(server):
    """Per-request seeds: the same prompt sampled alone or inside a batch gives the same tokens; its second
    occurrence (the n samples of one prompt) gets other draws; new weights start the occurrences over."""
    import asyncio

    p, im, _ = _prompt(server.processor, 1, "What colour?")
    other, other_im, _ = _prompt(server.processor, 2, "Which image has more dots?")
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1}
    server._seen.clear()
    alone = server._generate(p, params, im).token_ids
    again = server._generate(p, params, im).token_ids  # second occurrence: other seed
    digest = request_digest(0, (1.0,), p, im)
    assert request_seed(digest, 0) != request_seed(digest, 1)
    server._seen.clear()

    async def batch():
        return await asyncio.gather(server.generate(other, params, "a", image_data=other_im),
                                    server.generate(p, params, "b", image_data=im),
                                    server.generate(p, params, "c", image_data=im))

    outs = asyncio.run(batch())
    assert outs[1].token_ids == alone and outs[2].token_ids == again
    asyncio.run(server.update_weights({}))
    assert server._generate(p, params, im).token_ids == alone


def test_replicas_share_one_occurrence_count(server, tiny_model_dir):
    """Two replicas (verl's load balancer spreads the n samples of a prompt over them) draw with the shared
    counter: four samples of one prompt over two servers get the seeds of occurrences 0..3, the same four
    draws as four samples on one server alone, and never one seed twice."""
    import asyncio

    import ray
    from verl.workers.config import HFModelConfig, RolloutConfig

    from verl_ext.cpu.hf_rollout import seed_counter

    p, im, _ = _prompt(server.processor, 1, "How many dots?")
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1}
    server._seen.clear()
    alone = [server._generate(p, params, im).token_ids for _ in range(4)]
    assert len({tuple(t) for t in alone}) > 1  # a seed per occurrence: the samples differ
    ray.init(num_cpus=1, include_dashboard=False, namespace="test_seed_counter")
    try:
        config = RolloutConfig(name="hf", prompt_length=64, response_length=6, max_model_len=96, tensor_model_parallel_size=1)
        counter = seed_counter("_test")
        servers = [HFRolloutServer(config, HFModelConfig(path=str(tiny_model_dir)), replica_rank=r, seed_counter=counter)
                   for r in range(2)]  # fmt: skip

        async def spread():
            # requests 0, 2 on replica 0 and 1, 3 on replica 1, one after the other (arrival order = occurrence)
            outs = []
            for i in range(4):
                outs.append(await servers[i % 2].generate(p, params, f"r{i}", image_data=im))
            return [o.token_ids for o in outs]

        assert asyncio.run(spread()) == alone
        ray.get(counter.reset.remote())
        assert ray.get(counter.take.remote([b"x", b"x", b"y"])) == [0, 1, 0]
    finally:
        ray.shutdown()
