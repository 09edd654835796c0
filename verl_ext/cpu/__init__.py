"""Running verl's own trainer on a machine without accelerators.

Everything here is switched on by ``VERL_PLATFORM=cpu`` (read on ``import verl``, in the driver and in
every Ray worker); without it only the inert platform class is registered and GPU runs are untouched.

=====================  ===========================================================================
piece                  verl extension point
=====================  ===========================================================================
:mod:`.platform`       ``PlatformRegistry`` ("cpu": device cpu, gloo, Ray resource "GPU")
:mod:`.engine`         ``EngineRegistry`` (FSDP engines for device cpu)
:mod:`.hf_rollout`     ``RolloutReplicaRegistry`` + rollout adapter table (rollout name ``hf``)
:mod:`.patches`        no extension point: backend string, ragged dim of 3-D position ids
=====================  ===========================================================================

The trainer-side settings (TransferQueue with one storage unit, logical GPUs for Ray, sdpa
attention, fsdp2, ...) are Hydra overrides in ``recipe/config/cpu_tiny.yaml``.
"""

from __future__ import annotations

import os

from verl_ext.cpu import platform as _platform  # noqa: F401  (registers the "cpu" platform, inert)

_ACTIVE = False


def cpu_selected() -> bool:
    """True when verl's platform is chosen as ``cpu`` through ``VERL_PLATFORM``."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == _platform.PLATFORM_NAME


def activate() -> None:
    """Register the CPU engine and rollout and install the two patches (idempotent)."""
    global _ACTIVE
    if _ACTIVE:
        return
    from verl_ext.cpu import engine, hf_rollout, patches

    patches.patch_process_group_backend()
    patches.patch_3d_position_ids()
    engine.register()
    hf_rollout.register()
    _ACTIVE = True


if cpu_selected():
    activate()
