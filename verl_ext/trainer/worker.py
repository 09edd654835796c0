"""verl's hybrid actor/rollout/ref worker plus one method: refresh the teacher copy from the policy.

The frozen and EMA teachers live in verl's reference model slot (same architecture, same sharding,
built by verl from the same checkpoint), so their log-probs come from verl's own
``compute_ref_log_prob``. What verl lacks is a way to move weights from actor to ref;
:meth:`SelfDistillWorker.sync_teacher` does it in place on each rank's local shards:

    theta_ref <- (1 - rate) * theta_ref + rate * theta_actor      (rate = 1: a plain copy)

verl's checkpoint holds the actor only; :meth:`save_teacher` / :meth:`load_teacher` keep the teacher
copy beside it (one file of local shards per rank, so a resume needs the same world size).
"""

from __future__ import annotations

import os

import torch
from verl.single_controller.base.decorator import Dispatch, register
from verl.workers.engine_workers import ActorRolloutRefWorker

from verl_ext.distill.worker import DistillWorkerMixin


def _local(t: torch.Tensor) -> torch.Tensor:
    """The rank-local storage of a (possibly FSDP2/DTensor) parameter, as a view."""
    from torch.distributed.tensor import DTensor

    return t._local_tensor if isinstance(t, DTensor) else t


def reshard(module: torch.nn.Module) -> torch.nn.Module:
    """Put every FSDP2 unit of ``module`` back in its sharded state, so that ``named_parameters`` are the fp32
    shards. verl reshards the root unit after an eval pass only when ``fsdp_size > 1`` (default -1), so a
    forward-only engine (the ref slot holding the teacher) keeps its root parameters (embedding, LM head,
    final norm) unsharded in bf16 after its first forward: a copy would land there, a save would write full
    bf16 tensors instead of this rank's shard, and the fp32 shards would never be updated."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        return module
    for unit in module.modules():
        if isinstance(unit, FSDPModule):
            unit.reshard()
    return module


def _engine_module(worker) -> torch.nn.Module:
    module = getattr(worker.engine, "module", None)
    if module is None:
        raise RuntimeError(f"the {type(worker.engine).__name__} engine exposes no .module to copy weights from/to")
    return module


@torch.no_grad()
def blend_parameters(target: torch.nn.Module, source: torch.nn.Module, rate: float) -> int:
    """``target <- (1 - rate) target + rate source`` over matching parameters; returns how many.

    Both modules must hold the same parameter names and local shard shapes (verl builds actor and
    ref with the same engine config). Works across devices and dtypes (the source is cast).
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    src = dict(source.named_parameters())
    tgt = dict(target.named_parameters())
    if set(src) != set(tgt):
        missing = sorted(set(src) ^ set(tgt))[:5]
        raise RuntimeError(f"teacher and policy parameters differ, e.g. {missing}")
    for name, t_param in tgt.items():
        t_local, s_local = _local(t_param.data), _local(src[name].data)
        if t_local.shape != s_local.shape:
            raise RuntimeError(
                f"parameter {name}: teacher shard {tuple(t_local.shape)} != policy shard {tuple(s_local.shape)}; "
                "the ref model must be sharded like the actor"
            )
        s_local = s_local.to(device=t_local.device, dtype=t_local.dtype)
        if rate == 1.0:
            t_local.copy_(s_local)
        else:
            t_local.mul_(1.0 - rate).add_(s_local, alpha=rate)
    return len(tgt)


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


@torch.no_grad()
def save_local_parameters(module: torch.nn.Module, path: str) -> str:
    """Write this rank's local parameter shards to ``path/teacher_rank{r}.pt``; returns the file."""
    os.makedirs(path, exist_ok=True)
    file = os.path.join(path, f"teacher_rank{_rank()}.pt")
    # written under a temporary name and renamed: a kill mid-write never leaves a truncated teacher file
    tmp = f"{file}.tmp{os.getpid()}"
    torch.save({n: _local(p.data).detach().cpu().clone() for n, p in module.named_parameters()}, tmp)
    os.replace(tmp, file)
    return file


@torch.no_grad()
def load_local_parameters(module: torch.nn.Module, path: str) -> bool:
    """Copy ``path/teacher_rank{r}.pt`` into the local shards; False when there is no such file."""
    file = os.path.join(path, f"teacher_rank{_rank()}.pt")
    if not os.path.isfile(file):
        return False
    saved = torch.load(file, map_location="cpu", weights_only=True)
    params = dict(module.named_parameters())
    if set(saved) != set(params):
        raise RuntimeError(f"{file}: saved teacher parameters do not match the model's")
    for name, p in params.items():
        local = _local(p.data)
        if tuple(saved[name].shape) != tuple(local.shape):
            raise RuntimeError(f"{file}: {name} has shard {tuple(saved[name].shape)}, model {tuple(local.shape)}; "
                               "resume with the same number of ranks")
        local.copy_(saved[name].to(device=local.device, dtype=local.dtype))
    return True


class SelfDistillWorker(DistillWorkerMixin, ActorRolloutRefWorker):
    """``ActorRolloutRefWorker`` + :meth:`sync_teacher` (+ the logit-level loss of :mod:`verl_ext.distill`)."""

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def sync_teacher(self, rate: float = 1.0) -> int:
        if self.ref is None or self.actor is None:
            raise RuntimeError("sync_teacher needs a worker holding both the actor and the ref (teacher) model")
        actor_engine, ref_engine = self.actor.engine, self.ref.engine
        # Offloaded parameters are moved back by the engines' own load/offload helpers.
        with actor_engine.eval_mode(), ref_engine.eval_mode():
            target, source = reshard(_engine_module(self.ref)), reshard(_engine_module(self.actor))
            return blend_parameters(target, source, float(rate))

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_teacher(self, path: str) -> str:
        with self.ref.engine.eval_mode():
            return save_local_parameters(reshard(_engine_module(self.ref)), path)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def load_teacher(self, path: str) -> bool:
        with self.ref.engine.eval_mode():
            return load_local_parameters(reshard(_engine_module(self.ref)), path)
