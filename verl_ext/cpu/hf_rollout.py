"""A transformers-``generate`` rollout server for verl's agent loop, for machines without vLLM/SGLang.

Three pieces, as verl's vLLM rollout has them:

- :class:`HFRolloutServer`, a Ray actor holding its own copy of the policy; ``generate`` is
  token-in/token-out (prompt ids plus PIL images for Qwen-VL) and returns the sampled ids with
  their log-probs under the unprocessed logits, ``log softmax(z_t)[y_t]``.
- :class:`HFReplica`, the :class:`~verl.workers.rollout.replica.RolloutReplica` that starts one
  server per replica next to its trainer workers; registered as rollout name ``hf``.
- :class:`HFServerAdapter`, the rollout object inside each trainer worker; verl's ``naive``
  checkpoint engine hands it the actor's full tensors after every update and it ships them to the
  server through Ray's object store.

Concurrent requests (verl's agent loop sends a whole batch at once) are generated in batches, one batch at a
time (the server is a second model copy on the same cores).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import os
from typing import Any, Generator, Optional

import ray
import torch

from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "hf"
SERVER_PREFIX = "hf_rollout_server_"


def server_actor_name(replica_rank: int, node_rank: int = 0, suffix: str = "") -> str:
    return f"{SERVER_PREFIX}{replica_rank}_{node_rank}{suffix}"


def sample_next_token(logits: torch.Tensor, temperature: float, top_p: float, top_k: int, generator=None) -> torch.Tensor:
    """Sample one token per row from ``logits`` (B, V): greedy at temperature 0, else top-k/top-p sampling.

    ``generator``: one ``torch.Generator`` for the batch, or a list with one per row (reproducible draws
    per request whatever the batch it lands in).
    """
    if temperature is None or temperature <= 0:
        return logits.argmax(dim=-1)
    scores, ids = logits / temperature, None
    # top-k first: sorting the whole 150K vocabulary per step costs 0.6 s for 64 rows on 2 cores
    if top_k is not None and 0 < top_k < scores.shape[-1]:
        scores, ids = torch.topk(scores, top_k, dim=-1)
    if top_p is not None and 0 < top_p < 1:
        if ids is None:
            scores, ids = torch.sort(scores, descending=True, dim=-1)
        probs = scores.softmax(-1)
        # keep the smallest prefix with mass >= top_p
        scores = scores.masked_fill(probs.cumsum(-1) - probs > top_p, float("-inf"))
    probs = scores.softmax(-1)
    # inverse-CDF draw: one uniform per row (torch.multinomial and per-token noise cost ~0.25 s per step
    # over a 150K-token vocabulary on a CPU); u in (0, 1] never selects a zero-probability token
    cdf = probs.cumsum(-1)
    if isinstance(generator, (list, tuple)):
        u = torch.cat([torch.rand(1, generator=g, dtype=cdf.dtype) for g in generator])[:, None]
    else:
        u = torch.rand(probs.shape[0], 1, generator=generator, dtype=cdf.dtype)
    choice = torch.searchsorted(cdf, (1.0 - u) * cdf[:, -1:]).clamp(max=probs.shape[-1] - 1)
    return (choice if ids is None else ids.gather(-1, choice)).squeeze(-1)


def request_digest(base: int, key: tuple, prompt_ids, images) -> bytes:
    """A digest of the request's content: the server's seed, sampling settings, prompt ids and image pixels."""
    h = hashlib.blake2b(digest_size=8)
    h.update(repr((base, key)).encode())
    h.update(torch.as_tensor(list(prompt_ids), dtype=torch.int64).numpy().tobytes())
    for image in images or ():
        h.update(image.tobytes() if hasattr(image, "tobytes") else repr(image).encode())
    return h.digest()


def request_seed(digest: bytes, occurrence: int) -> int:
    """A 63-bit seed for the ``occurrence``-th request with ``digest`` since the last weight update (the n samples
    of one prompt differ)."""
    h = hashlib.blake2b(digest + occurrence.to_bytes(8, "little"), digest_size=8)
    return int.from_bytes(h.digest(), "little") >> 1


class SeedCounter:
    """Ray actor shared by the replicas of one rollout: the occurrence count of each request digest since the
    last weight update. verl's load balancer spreads the n samples of one prompt over the replicas, so
    per-server counts would give two replicas' samples of a prompt the same seed (identical responses)."""

    def __init__(self):
        self._seen: collections.Counter = collections.Counter()

    def take(self, digests: list[bytes]) -> list[int]:
        out = []
        for d in digests:
            out.append(self._seen[d])
            self._seen[d] += 1
        return out

    def reset(self) -> None:
        self._seen.clear()


def seed_counter(suffix: str = ""):
    """The rollout's shared :class:`SeedCounter` (created by the first replica that asks)."""
    return ray.remote(SeedCounter).options(name=f"{SERVER_PREFIX}seeds{suffix}", get_if_exists=True, num_cpus=0).remote()


class HFRolloutServer:
    """Ray actor: a transformers model answering verl's ``generate`` calls (see module docstring)."""

    def __init__(self, config, model_config, replica_rank: int = 0, num_threads: Optional[int] = None,
                 seed_counter=None):
        from transformers import AutoConfig, AutoProcessor

        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig

        self.config = omega_conf_to_dataclass(config)
        self.model_config = model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        config = self.config
        self.replica_rank = replica_rank
        self.global_steps = None
        if num_threads:
            torch.set_num_threads(num_threads)
        path = model_config.local_path
        hf_config = AutoConfig.from_pretrained(path, trust_remote_code=model_config.trust_remote_code)
        self.is_vl = hasattr(hf_config, "vision_config")
        if self.is_vl:
            from transformers import AutoModelForImageTextToText as auto_cls
        else:
            from transformers import AutoModelForCausalLM as auto_cls
        self.model = auto_cls.from_pretrained(
            path, dtype=torch.float32, attn_implementation="sdpa", trust_remote_code=model_config.trust_remote_code
        ).eval()
        self.processor = AutoProcessor.from_pretrained(path) if self.is_vl else None
        self.image_token_id = getattr(hf_config, "image_token_id", None)
        self.eos_ids = self._eos_ids(hf_config)
        self.max_model_len = config.max_model_len or (config.prompt_length + config.response_length)
        self.pad_id = self._pad_id(hf_config)
        self._lock = asyncio.Lock()
        # concurrent requests (verl's agent loop sends a whole batch at once) are generated together
        self._queue: list[tuple[dict[str, Any], asyncio.Future]] = []
        self._server_task: Optional[asyncio.Task] = None
        self.max_batch = int(os.environ.get("VERL_EXT_ROLLOUT_MAX_BATCH", "64"))
        self.batch_wait_s = 0.05
        # per-request seeds: the same weights, prompt and settings give the same draws in any batch, so two
        # runs from one checkpoint validate alike and validation before and after training shares its noise
        self.seed = int(getattr(config, "seed", 0) or 0)
        self._seen: collections.Counter = collections.Counter()
        # shared across replicas (SeedCounter); None: this server counts alone
        self._seed_counter = seed_counter

    def _token_ids(self, hf_config, attr: str) -> list[int]:
        """Every ``attr`` (``eos_token_id``, ``pad_token_id``) set in the generation config, the model config
        and its text config, in that order (an entry may be a list)."""
        ids = []
        for source in (getattr(self.model, "generation_config", None), hf_config, getattr(hf_config, "text_config", None)):
            value = getattr(source, attr, None) if source is not None else None
            if value is not None:
                ids.extend(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
        return ids

    def _eos_ids(self, hf_config) -> set[int]:
        return set(self._token_ids(hf_config, "eos_token_id"))

    def _pad_id(self, hf_config) -> int:
        pad = self._token_ids(hf_config, "pad_token_id")
        return pad[0] if pad else min(self.eos_ids)  # left padding is masked out: any id does

    def _vision_inputs(self, prompt_ids: torch.Tensor, image_data) -> dict[str, torch.Tensor]:
        if not image_data:
            return {}
        image_inputs = self.processor.image_processor(images=list(image_data), return_tensors="pt")
        n_pad = int((prompt_ids == self.image_token_id).sum())
        merge = self.processor.image_processor.merge_size ** 2
        expected = int(image_inputs["image_grid_thw"].prod(-1).sum()) // merge
        if n_pad != expected:
            raise ValueError(f"prompt has {n_pad} image tokens but its {len(image_data)} images need {expected}")
        # mm_token_type_ids are built for the whole padded batch in _generate_batch
        return {"pixel_values": image_inputs["pixel_values"], "image_grid_thw": image_inputs["image_grid_thw"]}

    def _request_inputs(self, prompt_ids: list[int], sampling_params: dict[str, Any], image_data) -> dict[str, Any]:
        """Check one request and prepare its tensors; errors here fail only this request."""
        ids = torch.tensor(list(prompt_ids), dtype=torch.long)
        max_new = min(self.config.response_length, self.max_model_len - len(ids))
        if sampling_params.get("max_tokens") is not None:
            max_new = min(max_new, int(sampling_params["max_tokens"]))
        if max_new < 1:
            raise ValueError(f"prompt of {len(ids)} tokens leaves no room within max_model_len={self.max_model_len}")
        vision = self._vision_inputs(ids[None], image_data) if self.is_vl else {}
        want_lp = sampling_params.get("logprobs")
        # requests with equal keys share one batched ``generate`` call
        key = (
            float(sampling_params.get("temperature", 1.0) or 0.0),
            float(sampling_params.get("top_p", 1.0) if sampling_params.get("top_p") is not None else 1.0),
            int(sampling_params.get("top_k", -1) if sampling_params.get("top_k") is not None else -1),
            max_new,
            tuple(sorted((int(t), float(b)) for t, b in (sampling_params.get("logit_bias") or {}).items())),
        )
        digest = request_digest(self.seed, key, prompt_ids, image_data)
        seed = None  # with a shared counter: assigned when the request's batch is taken (_serve)
        if self._seed_counter is None:
            occurrence, self._seen[digest] = self._seen[digest], self._seen[digest] + 1
            seed = request_seed(digest, occurrence)
        return {
            "ids": ids,
            "vision": vision,
            "want_log_probs": want_lp is not None and want_lp is not False,
            "key": key,
            "digest": digest,
            # a request seed (vLLM's SamplingParams.seed) fixes the draws; else one per request (None: assigned
            # from the shared counter when the request's batch is taken)
            "seed": int(sampling_params["seed"]) if sampling_params.get("seed") is not None else seed,
        }

    @torch.no_grad()
    def _generate_batch(self, requests: list[dict[str, Any]]) -> list[TokenOutput]:
        """KV-cached sampling of requests with equal sampling settings as one left-padded batch: M-RoPE positions
        come from the attention mask (padding skipped), log-probs under the unprocessed logits."""
        temperature, top_p, top_k, max_new, bias = requests[0]["key"]
        bias_ids = torch.tensor([t for t, _ in bias], dtype=torch.long)
        bias_values = torch.tensor([b for _, b in bias], dtype=torch.float32)
        B, n = len(requests), max(len(r["ids"]) for r in requests)
        ids = torch.full((B, n), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for row, r in enumerate(requests):
            ids[row, n - len(r["ids"]):] = r["ids"]
            attn[row, n - len(r["ids"]):] = 1
        kwargs: dict[str, Any] = {}
        if self.is_vl:
            mm = (ids == self.image_token_id).long() * attn
            with_images = [r["vision"] for r in requests if r["vision"]]
            thw = torch.cat([v["image_grid_thw"] for v in with_images]) if with_images else None
            if with_images:
                kwargs.update(pixel_values=torch.cat([v["pixel_values"] for v in with_images]), image_grid_thw=thw)
            positions, deltas = self.model.model.get_rope_index(
                ids, mm_token_type_ids=mm, image_grid_thw=thw, video_grid_thw=None, attention_mask=attn
            )
            kwargs.update(mm_token_type_ids=mm, position_ids=positions)
        else:
            kwargs["position_ids"] = (attn.cumsum(-1) - 1).clamp(min=0)
            deltas = torch.zeros(B, 1, dtype=torch.long)
        out = self.model(input_ids=ids, attention_mask=attn, use_cache=True, logits_to_keep=1, **kwargs)
        past, logits = out.past_key_values, out.logits[:, -1, :].float()
        seen = attn.sum(1, keepdim=True)  # real tokens per row so far: the next token's text position
        eos = torch.tensor(sorted(self.eos_ids))
        done = torch.zeros(B, dtype=torch.bool)
        tokens, log_probs = [], []
        generators = [torch.Generator().manual_seed(r["seed"]) for r in requests]
        want_log_probs = any(r["want_log_probs"] for r in requests)
        for step in range(max_new):
            # vLLM's logit_bias: added before sampling; log-probs stay those of the unprocessed logits
            biased = logits.index_add(-1, bias_ids, bias_values.expand(B, -1)) if len(bias) else logits
            token = sample_next_token(biased, temperature, top_p, top_k, generator=generators)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            tokens.append(token)
            if want_log_probs:
                log_probs.append(torch.log_softmax(logits, -1).gather(-1, token[:, None])[:, 0])
            done |= torch.isin(token, eos)
            if bool(done.all()) or step == max_new - 1:
                break
            attn = torch.cat([attn, attn.new_ones(B, 1)], dim=1)
            pos = deltas + seen
            position_ids = pos.view(1, B, 1).expand(3, B, 1) if self.is_vl else pos
            out = self.model(
                input_ids=token[:, None], attention_mask=attn, past_key_values=past, use_cache=True,
                cache_position=torch.tensor([attn.shape[1] - 1]), position_ids=position_ids,
            )  # fmt: skip
            past, logits = out.past_key_values, out.logits[:, -1, :].float()
            seen = seen + 1
        tokens_t = torch.stack(tokens, 1)
        log_probs_t = torch.stack(log_probs, 1) if want_log_probs else None
        results = []
        for row, r in enumerate(requests):
            row_tokens = tokens_t[row].tolist()
            stop = next((i for i, t in enumerate(row_tokens) if t in self.eos_ids), len(row_tokens) - 1)
            results.append(
                TokenOutput(
                    token_ids=row_tokens[: stop + 1],
                    log_probs=log_probs_t[row, : stop + 1].tolist() if r["want_log_probs"] else None,
                    stop_reason="completed",
                    num_preempted=0,
                    extra_fields={"global_steps": self.global_steps},
                )
            )
        return results

    def _generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], image_data) -> TokenOutput:
        """One request on its own (a batch of one)."""
        return self._generate_batch([self._request_inputs(prompt_ids, sampling_params, image_data)])[0]

    async def _serve(self):
        """Drain the queue: wait briefly so that a burst of requests lands, then generate the oldest request's
        group (equal sampling settings, at most ``max_batch``) in one call; repeat until the queue is empty."""
        while self._queue:
            await asyncio.sleep(self.batch_wait_s)
            key = self._queue[0][0]["key"]
            batch = [item for item in self._queue if item[0]["key"] == key][: self.max_batch]
            taken = {id(item) for item in batch}
            self._queue = [item for item in self._queue if id(item) not in taken]
            try:
                requests = [req for req, _ in batch]
                unseeded = [req for req in requests if req["seed"] is None]
                if unseeded:  # one call per batch to the replicas' shared counter
                    occurrences = await self._seed_counter.take.remote([req["digest"] for req in unseeded])
                    for req, occurrence in zip(unseeded, occurrences):
                        req["seed"] = request_seed(req["digest"], occurrence)
                async with self._lock:
                    outputs = await asyncio.to_thread(self._generate_batch, requests)
            except Exception as e:  # a failed batch fails its own requests, not the server
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), output in zip(batch, outputs):
                if not fut.done():
                    fut.set_result(output)

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        audio_data: Optional[list[Any]] = None,
        mm_processor_kwargs: Optional[dict[str, Any]] = None,
        priority: int = 0,
        **kwargs,
    ) -> TokenOutput:
        if video_data or audio_data:
            raise NotImplementedError("the transformers rollout server takes text and images only")
        request = self._request_inputs(prompt_ids, sampling_params, image_data)
        future = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        if self._server_task is None or self._server_task.done():
            self._server_task = asyncio.create_task(self._serve())
        return await future

    async def update_weights(self, state_dict: dict[str, torch.Tensor], global_steps: Optional[int] = None):
        """Load full tensors named as in the HF checkpoint; unknown names are an error."""
        async with self._lock:
            own = self.model.state_dict()
            unknown = sorted(set(state_dict) - set(own))
            if unknown:
                raise KeyError(f"rollout server got weights it does not have: {unknown[:5]} ({len(unknown)} in all)")
            with torch.no_grad():
                for name, tensor in state_dict.items():
                    own[name].copy_(tensor.to(own[name].dtype))
            self._seen.clear()  # new weights: request seeds start over
            if self._seed_counter is not None:
                await self._seed_counter.reset.remote()
            if global_steps is not None:
                self.global_steps = global_steps
        return len(state_dict)

    async def set_global_steps(self, global_steps: int):
        self.global_steps = global_steps

    def get_server_address(self):
        return ray.util.get_node_ip_address(), 0

    # Lifecycle calls verl makes on every server; nothing to free on the host.
    async def wake_up(self, tags: Optional[list[str]] = None):
        return None

    async def sleep(self):
        return None

    async def clear_kv_cache(self):
        return None

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def abort_all_requests(self, reject_request: bool = False, **kwargs) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self):
        return None

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None


class HFReplica(RolloutReplica):
    """One :class:`HFRolloutServer` per replica, on the node of its (hybrid) trainer workers."""

    async def launch_servers(self):
        assert self.world_size == 1 and self.nnodes == 1, "the transformers rollout runs unsharded (tp=dp=pp=1)"
        node_id = None
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
        if self.is_reward_model:
            suffix = f"reward{self.name_suffix}"
        elif self.is_teacher_model:
            suffix = f"teacher{self.name_suffix}"
        else:
            suffix = self.name_suffix
        options = {"name": server_actor_name(self.replica_rank, 0, suffix), "max_concurrency": self.max_concurrency}
        if node_id is not None:
            options["scheduling_strategy"] = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                node_id=node_id, soft=False
            )
        threads = int(os.environ.get("VERL_EXT_ROLLOUT_THREADS", "0")) or None
        server = (
            ray.remote(HFRolloutServer)
            .options(**options)
            .remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank, num_threads=threads,
                    seed_counter=seed_counter(suffix))
        )  # fmt: skip
        self.servers = [server]
        address, port = await server.get_server_address.remote()
        self._server_handle = server
        self._server_address = f"{address}:{port}"


class HFServerAdapter(BaseRollout):
    """Rollout object in the trainer worker: forwards weight updates to this replica's server."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", 0))
        rollout_world_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % rollout_world_size
        self.server_handle = None

    def _server(self):
        if self.server_handle is None:
            self.server_handle = ray.get_actor(server_actor_name(self.replica_rank))
        return self.server_handle

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    @torch.no_grad()
    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        wire_format: str = "named_tensors",
        global_steps: Optional[int] = None,
        **kwargs,
    ):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"the transformers rollout takes full tensors, not {wire_format!r}")
        state = {}
        for name, tensor in weights:
            if hasattr(tensor, "full_tensor"):  # DTensor
                tensor = tensor.full_tensor()
            state[name] = tensor.detach().to("cpu", copy=True)
        if self.rollout_rank == 0:
            await self._server().update_weights.remote(state, global_steps=global_steps)


def register() -> None:
    """Register rollout name ``hf``: the replica in verl's registry, the adapter in its adapter table.

    verl 0.9.1 has no public function for the adapter table (``verl.workers.rollout.base._ROLLOUT_REGISTRY``,
    keyed by ``(name, mode)`` and holding a dotted class path), so the entry is written directly.
    """
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: HFReplica)
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{__name__}.HFServerAdapter"
