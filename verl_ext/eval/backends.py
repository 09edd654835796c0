"""Generation backends: vLLM (GPU, batched) and transformers ``generate`` (CPU, tiny models).

Both build the prompt the same way: the contract's user message is split at each ``<image>`` into
Qwen-VL content parts, rendered with the model's own chat template, and every image is resized
with qwen-vl-utils' ``fetch_image`` into ``[min_pixels, max_pixels]`` (the training loader's clamp).
Each sample is generated with its own seed (``protocol.seed`` + CRC32 of its id), so a resumed run
samples exactly what an uninterrupted run would have.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol as TypingProtocol

from verl_ext.eval.data import IMAGE_PLACEHOLDER, Sample
from verl_ext.eval.protocol import Protocol

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class Generation:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" | "length"


class Backend(TypingProtocol):
    name: str
    batch_size: int

    def generate(self, samples: list[Sample]) -> list[Generation]: ...


def sample_seed(protocol: Protocol, uid: str) -> int:
    return (protocol.seed + zlib.crc32(uid.encode())) % (2**31 - 1)


def is_text_only(processor) -> bool:
    """A tokenizer-only model (a text LLM): ``AutoProcessor`` gave a tokenizer, no image processor."""
    return getattr(processor, "image_processor", None) is None


def chat_messages(sample: Sample, system_prompt: str | None = None, text_only: bool = False) -> list[dict]:
    """The contract's user text as Qwen-VL content parts: images where the placeholders are (a text model's
    chat template takes the text itself)."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    if text_only:
        if sample.images:
            raise ValueError(f"{sample.source}: the row has images but the model is text-only")
        return msgs + [{"role": "user", "content": sample.prompt}]
    parts: list[dict[str, Any]] = []
    pieces = sample.prompt.split(IMAGE_PLACEHOLDER)
    for i, piece in enumerate(pieces):
        if piece:
            parts.append({"type": "text", "text": piece})
        if i < len(pieces) - 1:
            parts.append({"type": "image"})
    return msgs + [{"role": "user", "content": parts}]


def load_images(sample: Sample, protocol: Protocol, patch_size: int) -> list["Image.Image"]:
    from PIL import Image
    from qwen_vl_utils import fetch_image

    out = []
    for i, b in enumerate(sample.images):
        try:
            img = Image.open(io.BytesIO(b))
            img.load()
        except Exception as e:
            raise ValueError(f"{sample.source}: field 'images[{i}].bytes' is not a readable image: {e}") from e
        ele = {"image": img, "min_pixels": protocol.min_pixels, "max_pixels": protocol.max_pixels}
        out.append(fetch_image(ele, image_patch_size=patch_size))
    return out


def _patch_size(processor) -> int:
    return int(getattr(getattr(processor, "image_processor", None), "patch_size", 16) or 16)


def _prompt_text(processor, sample: Sample, protocol: Protocol) -> str:
    kwargs = {} if protocol.enable_thinking is None else {"enable_thinking": protocol.enable_thinking}
    return processor.apply_chat_template(
        chat_messages(sample, protocol.system_prompt, is_text_only(processor)), tokenize=False,
        add_generation_prompt=True, **kwargs,
    )


# ----------------------------------------------------------------------------------------------


class PresencePenalty:
    """``logits[b, v] -= penalty`` for every token v already generated in row b (vLLM semantics:
    the prompt does not count). ``input_ids``: (B, prompt_len + t), ``scores``: (B, V)."""

    def __init__(self, penalty: float, prompt_len: int):
        self.penalty = float(penalty)
        self.prompt_len = prompt_len

    def __call__(self, input_ids, scores):
        import torch

        gen = input_ids[:, self.prompt_len :]
        if self.penalty == 0.0 or gen.shape[1] == 0:
            return scores
        seen = torch.zeros_like(scores, dtype=torch.bool)
        seen.scatter_(1, gen.clamp(max=scores.shape[1] - 1), True)
        return scores - self.penalty * seen.to(scores.dtype)


class HFBackend:
    """transformers ``generate``, one sample at a time (for tiny models on CPU and debugging)."""

    name = "hf"
    batch_size = 1

    def __init__(self, model_path: str, protocol: Protocol, device: str | None = None, dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

        self.protocol = protocol
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.processor = AutoProcessor.from_pretrained(model_path)
        auto = AutoModelForCausalLM if is_text_only(self.processor) else AutoModelForImageTextToText
        self.model = auto.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        self.patch = _patch_size(self.processor)

    def generate(self, samples: list[Sample]) -> list[Generation]:
        return [self._one(s) for s in samples]

    def _one(self, sample: Sample) -> Generation:
        import torch
        from transformers import LogitsProcessorList

        p = self.protocol
        text = _prompt_text(self.processor, sample, p)
        if is_text_only(self.processor):
            inputs = self.processor([text], add_special_tokens=False, return_tensors="pt").to(self.device)
        else:
            images = load_images(sample, p, self.patch)
            inputs = self.processor(text=[text], images=images or None, return_tensors="pt").to(self.device)
        prompt_len = inputs["input_ids"].shape[1]
        gen_kw: dict[str, Any] = {"max_new_tokens": p.max_new_tokens, "do_sample": not p.greedy}
        if not p.greedy:
            gen_kw.update(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k if p.top_k > 0 else None)
        else:
            gen_kw.update(temperature=None, top_p=None, top_k=None)
        procs = LogitsProcessorList([PresencePenalty(p.presence_penalty, prompt_len)] if p.presence_penalty else [])
        torch.manual_seed(sample_seed(p, sample.uid))
        with torch.no_grad():
            out = self.model.generate(**inputs, logits_processor=procs, **gen_kw)
        new = out[0, prompt_len:]
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        stopped = len(new) > 0 and int(new[-1]) in eos
        return Generation(
            text=self.processor.decode(new, skip_special_tokens=True),
            num_tokens=int(len(new)),
            finish_reason="stop" if stopped or len(new) < p.max_new_tokens else "length",
        )


class VLLMBackend:
    """vLLM offline engine: batched generation with every image of each prompt."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        protocol: Protocol,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        max_images: int = 8,
        batch_size: int = 256,
        dtype: str = "auto",
    ):
        import os

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's CPU default (4) is sized for big models
        try:
            from vllm import LLM, SamplingParams
            from vllm.platforms import current_platform
        except ImportError as e:
            raise RuntimeError(
                "the vllm backend needs vLLM, which is not installed here (GPU: requirements.txt; CPU: "
                "bash scripts/setup_venv.sh installs vLLM's CPU build). Or use --backend hf."
            ) from e
        cpu = current_platform.is_cpu()
        if cpu and dtype == "auto":
            dtype = "float32"  # as the hf backend on CPU (vLLM would cast to bfloat16): greedy outputs compare
        from transformers import AutoProcessor

        self.protocol = protocol
        self.batch_size = batch_size
        self._SamplingParams = SamplingParams
        self.processor = AutoProcessor.from_pretrained(model_path)
        self.patch = _patch_size(self.processor)
        self.llm = LLM(
            model=model_path,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            **({} if is_text_only(self.processor) else {"limit_mm_per_prompt": {"image": max_images}}),
            seed=protocol.seed,
            dtype=dtype,
            enforce_eager=cpu,  # compiling costs start-up time that a CPU evaluation does not win back
        )

    def _params(self, uid: str):
        p = self.protocol
        return self._SamplingParams(
            n=1,
            temperature=p.temperature,
            top_p=p.top_p if not p.greedy else 1.0,
            top_k=p.top_k if not p.greedy else -1,
            presence_penalty=p.presence_penalty,
            max_tokens=p.max_new_tokens,
            seed=sample_seed(p, uid),
        )

    def generate(self, samples: list[Sample]) -> list[Generation]:
        reqs = []
        for s in samples:
            req: dict[str, Any] = {"prompt": _prompt_text(self.processor, s, self.protocol)}
            images = load_images(s, self.protocol, self.patch)
            if images:
                req["multi_modal_data"] = {"image": images}
            reqs.append(req)
        outs = self.llm.generate(reqs, sampling_params=[self._params(s.uid) for s in samples], use_tqdm=False)
        res = []
        for o in outs:
            c = o.outputs[0]
            res.append(Generation(text=c.text, num_tokens=len(c.token_ids), finish_reason=str(c.finish_reason)))
        return res


def make_backend(name: str, model_path: str, protocol: Protocol, **kw) -> Backend:
    if name == "hf":
        return HFBackend(model_path, protocol, **{k: v for k, v in kw.items() if k in ("device", "dtype")})
    if name == "vllm":
        return VLLMBackend(model_path, protocol, **{k: v for k, v in kw.items() if k != "device"})
    raise ValueError(f"unknown backend {name!r}; use 'vllm' (GPU) or 'hf' (transformers)")
