"""verl's FSDP engines registered for device ``cpu``.

verl 0.9.1 registers ``FSDPEngineWithLMHead`` / ``FSDPEngineWithValueHead`` for ``cuda`` and ``npu``
only. The engines are device-agnostic (device calls go through the platform) except one point:
a forward-only engine (the ref model, which also holds the self-distillation teacher) is always
sharded with ``CPUOffloadPolicy(pin_memory=True)``, and pinning host memory needs a CUDA driver
("Found no NVIDIA driver on your system"). On a CPU there is nothing to offload to, so the subclasses
below build the FSDP2 module as for a trainable engine; everything else is verl's code. Use
``actor.strategy=fsdp2``: FSDP1 refuses CPU parameters together with ``sync_module_states``.
"""

from __future__ import annotations

import dataclasses

from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead


class _NoHostOffloadMixin:
    def _build_fsdp_module(self, module):
        config = self.engine_config
        if not config.forward_only:
            return super()._build_fsdp_module(module)
        # Same sharding as a trainable engine: no CPUOffloadPolicy (pinned memory) on a CPU.
        self.engine_config = dataclasses.replace(config, forward_only=False)
        try:
            return super()._build_fsdp_module(module)
        finally:
            self.engine_config = config


class CPUFSDPEngineWithLMHead(_NoHostOffloadMixin, FSDPEngineWithLMHead):
    """verl's FSDP LM-head engine; forward-only instances are not host-offloaded."""


class CPUFSDPEngineWithValueHead(_NoHostOffloadMixin, FSDPEngineWithValueHead):
    """verl's FSDP value-head engine; forward-only instances are not host-offloaded."""


def register() -> None:
    for model_type, cls in (
        ("language_model", CPUFSDPEngineWithLMHead),
        ("value_model", CPUFSDPEngineWithValueHead),
    ):
        for backend in ("fsdp", "fsdp2"):
            table = EngineRegistry._engines.setdefault(model_type, {}).setdefault(backend, {})
            if "cpu" not in table:  # idempotent: the plugin may be imported twice
                EngineRegistry.register(model_type=model_type, backend=backend, device="cpu")(cls)
