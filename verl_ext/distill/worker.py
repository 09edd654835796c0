"""Worker side of the logit-level loss: a mixin for verl's ``ActorRolloutRefWorker``.

- :meth:`set_distill_loss` swaps the actor's loss for :func:`verl_ext.distill.actor.self_distill_loss`.
- ``compute_log_prob`` / ``compute_ref_log_prob`` with the non-tensor flag ``distill_topk_pass``
  (``student`` | ``teacher``) run verl's own forward with a :class:`TopkRecorder` as the loss
  function and return, besides verl's outputs, ``distill_topk_ids`` or ``distill_teacher_topk``
  ``[B, R_b, k]`` (response positions only).
- ``update_actor`` marks the batch ``distillation_use_topk`` so verl's engine calls the loss as a
  logits processor.
Without :meth:`set_distill_loss` (``algorithm.distill.loss=sampled``) every method is verl's.
"""

from __future__ import annotations

from functools import partial

import torch
from tensordict import TensorDict
from verl.single_controller.base.decorator import Dispatch, make_nd_compute_dataproto_dispatch_fn, register
from verl.utils import tensordict_utils as tu

from verl_ext.distill.actor import PASS_FLAG, ROW, TEACHER_TOPK, TOPK_IDS, TopkRecorder, self_distill_loss
from verl_ext.distill.config import DistillOptions

_OUTPUT_FIELD = {"student": TOPK_IDS, "teacher": TEACHER_TOPK, "teacher_topk": TEACHER_TOPK}


class DistillWorkerMixin:
    """Put before ``ActorRolloutRefWorker`` in the bases; inert until :meth:`set_distill_loss`."""

    _distill: DistillOptions | None = None

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def set_distill_loss(self, options: dict, estimator: str, coef: float = 1.0) -> bool:
        self._distill = DistillOptions(**options)
        if self.actor is None:
            return False
        base = self.loss_fn
        actor_config = base.keywords["config"] if isinstance(base, partial) else None
        if actor_config is None:
            raise RuntimeError("the actor's loss function carries no actor config to build the distillation loss from")
        self.loss_fn = partial(
            self_distill_loss, config=actor_config, options=self._distill, estimator=estimator, coef=float(coef)
        )
        self.actor.set_loss_fn(self.loss_fn)
        return True

    def _topk_pass(self, training_worker, data: TensorDict, call):
        mode = tu.get_non_tensor_data(data=data, key=PASS_FLAG, default=None)
        if mode is None or self._distill is None:
            return call(data)
        recorder = TopkRecorder(mode, self._distill.topk, self._distill.chunk_rows)
        n = data.batch_size[0]
        data[ROW] = torch.arange(n)
        tu.assign_non_tensor(data, compute_loss=True, distillation_use_topk=True, distillation_only=False)
        previous = training_worker.loss_fn
        training_worker.loss_fn = recorder
        try:
            output = call(data)
        finally:
            training_worker.loss_fn = previous
        if output is None:  # ranks that do not return outputs
            return None
        output[_OUTPUT_FIELD[mode]] = recorder.nested(n)
        if mode == "teacher_topk":
            output[TOPK_IDS] = recorder.nested(n, ids=True)
        return output

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def compute_log_prob(self, data: TensorDict) -> TensorDict:
        return self._topk_pass(self.actor, data, super().compute_log_prob)

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="ref"))
    def compute_ref_log_prob(self, data: TensorDict) -> TensorDict:
        return self._topk_pass(self.ref, data, super().compute_ref_log_prob)

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def update_actor(self, data: TensorDict) -> TensorDict:
        if self._distill is not None and self._distill.logit_level:
            tu.assign_non_tensor(data, distillation_use_topk=True, distillation_only=False)
        return super().update_actor(data)
