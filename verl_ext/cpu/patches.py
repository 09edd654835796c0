"""The two places where verl 0.9.1 has no extension point for a CPU run; each is patched here only.

1. Process-group backend string. ``verl.utils.distributed.initialize_global_process_group_ray``
   defaults to ``f"cpu:gloo,{device}:{backend}"``; with device ``cpu`` and backend ``gloo`` that is
   ``"cpu:gloo,cpu:gloo"``, which torch rejects. Minimal upstream reproduction::

       VERL_PLATFORM=<any platform whose device_name is "cpu"> \\
       RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 python -c \\
       "from verl.utils.distributed import initialize_global_process_group_ray as f; f()"
       # ValueError: Duplicate device type cpu in backend string: cpu:gloo,cpu:gloo

   Upstream fix: skip the second entry when the device is ``cpu``.

2. Ragged dim of nested 4-row position ids (Qwen-VL: text position + 3 M-RoPE rows, ``(B, 4, j)``).
   ``verl.utils.tensordict_utils.maybe_fix_3d_position_ids`` sets ``_ragged_idx = 2`` on every nested
   3-D ``position_ids``, to repair an index lost in pickling. But when all samples of a batch have
   the same length, torch stores the jagged tensor with the row dim as the ragged one (values
   ``(B*4, j)``, ragged dim 1); forcing dim 2 then mis-reads it and the next split/pad fails (in
   ``update_actor``: ``split_with_sizes expects split_sizes to sum exactly to N``). Minimal upstream
   reproduction (not CPU-specific)::

       import torch; from tensordict import TensorDict
       from verl.utils.tensordict_utils import maybe_fix_3d_position_ids
       pos = torch.nested.as_nested_tensor([torch.arange(24).view(4, 6)] * 2, layout=torch.jagged)
       td = TensorDict({"position_ids": pos}, batch_size=[2]); maybe_fix_3d_position_ids(td)
       torch.nested.to_padded_tensor(td["position_ids"], 0, output_size=(2, 4, 6))  # RuntimeError

   The replacement reads the ragged dim from the values' layout: dim ``r`` with
   ``values.shape[r - 1] == offsets[-1]`` (the summed length). Upstream fix: the same check.
"""

from __future__ import annotations

import functools
import logging
import sys

logger = logging.getLogger(__name__)

CPU_BACKEND = "cpu:gloo"


def cpu_backend(backend: str | None) -> str | None:
    """Return ``"cpu:gloo"`` when ``backend`` is unset or names ``cpu`` twice; otherwise ``backend``."""
    if backend is None:
        return CPU_BACKEND
    devices = [part.split(":", 1)[0] for part in backend.split(",") if ":" in part]
    if len(devices) != len(set(devices)):
        return CPU_BACKEND
    return backend


def _wrap_process_group_init(fn):
    if getattr(fn, "_verl_ext_cpu", False):
        return fn

    @functools.wraps(fn)
    def wrapper(timeout_second=None, backend=None):
        return fn(timeout_second=timeout_second, backend=cpu_backend(backend))

    wrapper._verl_ext_cpu = True
    return wrapper


def patch_process_group_backend() -> None:
    """Make verl's Ray process-group init use ``cpu:gloo`` (in the module and in importers)."""
    import verl.utils.distributed as dist

    dist.initialize_global_process_group_ray = _wrap_process_group_init(dist.initialize_global_process_group_ray)
    # Modules that already did ``from verl.utils.distributed import ...`` hold the old function.
    for name in ("verl.workers.engine_workers", "verl.checkpoint_engine.base", "verl.workers.engine_workers_tinker"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "initialize_global_process_group_ray"):
            module.initialize_global_process_group_ray = dist.initialize_global_process_group_ray


def ragged_dim(nested) -> int:
    """Ragged dim of a jagged nested tensor, read from its values: ``r`` with ``_values.shape[r-1] == offsets[-1]``.

    Falls back to the tensor's own ``_ragged_idx`` when the layout is ambiguous (several dims match).
    """
    total = int(nested.offsets()[-1])
    values = nested.values()
    matches = [d + 1 for d in range(values.dim()) if values.shape[d] == total]
    if len(matches) == 1:
        return matches[0]
    return nested._ragged_idx


def fix_3d_position_ids(data) -> None:
    """Layout-aware replacement of ``verl.utils.tensordict_utils.maybe_fix_3d_position_ids``."""
    if "position_ids" in data.keys():
        pos = data["position_ids"]
        if pos.dim() == 3 and pos.is_nested:
            pos._ragged_idx = ragged_dim(pos)


def patch_3d_position_ids() -> None:
    """Install :func:`fix_3d_position_ids` in verl's module and in the modules that imported it."""
    import verl.utils.tensordict_utils as tu

    tu.maybe_fix_3d_position_ids = fix_3d_position_ids
    for name in ("verl.workers.engine_workers", "verl.workers.engine.base", "verl.workers.engine_workers_tinker"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "maybe_fix_3d_position_ids"):
            module.maybe_fix_3d_position_ids = fix_3d_position_ids
