"""The transformers rollout server against an independent full-sequence forward of the same model."""

from __future__ import annotations

import io
import math

import pytest
import torch
from PIL import Image, ImageDraw

from verl_ext.cpu.hf_rollout import HFRolloutServer, sample_next_token


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


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    from verl.workers.config import HFModelConfig, RolloutConfig

    config = RolloutConfig(name="hf", prompt_length=64, response_length=6, max_model_len=96, tensor_model_parallel_size=1)
    return HFRolloutServer(config, HFModelConfig(path=str(tiny_model_dir)))


def _image() -> Image.Image:
    im = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(im).ellipse((10, 10, 40, 40), fill="red")
    return Image.open(io.BytesIO(_png(im))).convert("RGB")


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_greedy_generation_matches_full_forward(server):
    """Tokens and log-probs of the KV-cached loop equal those of re-running the whole sequence."""
    processor = server.processor
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many circles?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = _image()
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    prompt_ids = inputs["input_ids"][0].tolist()
    out = server._generate(prompt_ids, {"temperature": 0.0, "logprobs": 0}, [image])
    assert 1 <= len(out.token_ids) <= 6 and len(out.log_probs) == len(out.token_ids)

    ids = torch.tensor([prompt_ids + out.token_ids])
    with torch.no_grad():
        logits = server.model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
            mm_token_type_ids=(ids == server.image_token_id).long(),
        ).logits[0].float()
    n = len(prompt_ids)
    for t, token in enumerate(out.token_ids):
        step_logits = logits[n - 1 + t]
        assert int(step_logits.argmax()) == token
        assert math.isclose(float(torch.log_softmax(step_logits, -1)[token]), out.log_probs[t], abs_tol=1e-4)


def test_image_token_count_mismatch_is_an_error(server):
    with pytest.raises(ValueError, match="image tokens"):
        server._generate([1, 2, 3], {"temperature": 0.0}, [_image()])


def test_update_weights_rejects_unknown_names(server):
    import asyncio

    with pytest.raises(KeyError, match="does not have"):
        asyncio.run(server.update_weights({"no.such.weight": torch.zeros(1)}))
