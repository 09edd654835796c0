"""Register verl's FSDP engines for device ``cpu``.

verl 0.9.1 registers ``FSDPEngineWithLMHead`` / ``FSDPEngineWithValueHead`` for devices ``cuda`` and
``npu`` only. The classes themselves are device-agnostic (every device call goes through the
platform), so registering the same classes for ``cpu`` is all the CPU run needs. Use
``actor.strategy=fsdp2``: FSDP1 refuses CPU parameters together with ``sync_module_states``.
"""

from __future__ import annotations


def register() -> None:
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    for model_type, cls in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        for backend in ("fsdp", "fsdp2"):
            table = EngineRegistry._engines.setdefault(model_type, {}).setdefault(backend, {})
            if "cpu" not in table:  # idempotent: the plugin may be imported twice
                EngineRegistry.register(model_type=model_type, backend=backend, device="cpu")(cls)
