"""verl's FSDP engines registered for device ``cpu``.

verl 0.9.1 registers ``FSDPEngineWithLMHead`` / ``FSDPEngineWithValueHead`` for ``cuda`` and ``npu``
only. The engines are device-agnostic (device calls go through the platform) except one point:
a forward-only engine (the ref model, which also holds the self-distillation teacher) is always
sharded with ``CPUOffloadPolicy(pin_memory=True)``, and pinning host memory needs a CUDA driver
("Found no NVIDIA driver on your system"). On a CPU there is nothing to offload to, so the subclasses
below build the FSDP2 module as for a trainable engine; everything else is verl's code. Use
``actor.strategy=fsdp2``: FSDP1 refuses CPU parameters together with ``sync_module_states``.

The CPU engines also compute logits only where they are read. verl's padded (``use_remove_padding=false``)
forward builds the full-vocabulary logits, log-softmax and entropy at every prompt and response position,
while its losses and log-prob outputs read the response positions alone (``no_padding_2_padding``). With a
150K vocabulary and a tiny model that is nearly all of the pass (16 rows x 80 tokens: 5.7 s; the ~30
response positions: 1.3 s). :class:`_ResponseLogitsMixin` selects the hidden states of the positions that
predict a response token before the LM head and writes their log-probs (entropy) into verl's nested output
with zeros at the prompt positions; any other layout (packed, fused kernels, top-k distillation) runs verl's
code unchanged. In forward-only passes (old log-probs, the teacher) positions whose hidden states are the same
bits (the rows of a group share the prompt and usually the first response tokens: ~30% of the positions are
distinct on the CPU default) go through the LM head and log-softmax once; the values are those of verl's
per-row computation, bit for bit. With gradients every position keeps its own row. In the same passes
:class:`SharedImages` runs the vision tower once per distinct image (a group's rows carry the same one), and
:func:`forward_only_rows` lets them take more rows per micro-batch than configured (one per step on the CPU
default), since their memory follows the response positions, not the rows.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

import verl.utils.torch_functional as verl_F
from verl.utils import tensordict_utils as tu
from verl.utils.dataset.dataset_utils import DatasetPadMode
from verl.utils.torch_functional import logprobs_from_logits
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


def prompt_response_lens(data) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row prompt and response lengths, read as verl's ``no_padding_2_padding`` reads them."""
    prompts, responses = data["prompts"], data["responses"]
    if prompts.is_nested:
        return prompts.offsets().diff(), responses.offsets().diff()
    mask = data["attention_mask"]
    return mask[:, : prompts.shape[1]].sum(1), mask[:, prompts.shape[1] :].sum(1)


def response_positions(data) -> torch.Tensor | None:
    """``[B, T]`` mask of the padded positions whose logits predict a response token (row b: columns
    ``p_b - 1 .. p_b + r_b - 2``), or None when verl's full-logits path must run."""
    flags = {k: tu.get_non_tensor_data(data=data, key=k, default=d) for k, d in
             (("use_remove_padding", True), ("use_fused_kernels", False), ("distillation_use_topk", False),
              ("pad_mode", DatasetPadMode.NO_PADDING))}  # fmt: skip
    if flags["use_remove_padding"] or flags["use_fused_kernels"] or flags["distillation_use_topk"]:
        return None
    if flags["pad_mode"] != DatasetPadMode.NO_PADDING or "prompts" not in data or "responses" not in data:
        return None
    seq_lens = data["input_ids"].offsets().diff()
    prompt_lens, response_lens = prompt_response_lens(data)
    if not torch.equal(prompt_lens + response_lens, seq_lens) or bool((prompt_lens < 1).any()):
        return None  # a layout this shortcut does not know: verl's own path
    cols = torch.arange(int(seq_lens.max()), device=seq_lens.device)[None]
    return (cols >= prompt_lens[:, None] - 1) & (cols < (prompt_lens + response_lens)[:, None] - 1)


# Response positions per forward-only micro-batch: their [positions, 151,669] float32 logits are ~1.2 GB.
FORWARD_ONLY_POSITIONS = 2048


def forward_only_rows(data) -> int | None:
    """Rows per micro-batch of a forward-only pass on the response-logits path (old log-probs, the teacher):
    the most rows that divide the batch (verl's fixed micro-batches must) and hold at most
    ``FORWARD_ONLY_POSITIONS`` response positions, or None to keep the configured size (fewer rows than it,
    dynamic batch sizes, or verl's full-logits path, e.g. top-k passes). Their memory is set by the response
    positions, not by the rows, and each micro-batch pays verl's per-call costs: one micro-batch per step
    (64 rows) took the teacher pass 0.39 -> 0.29 s and the old log-probs 0.49 -> 0.42 s on the CPU default,
    with the 12-step run's metrics equal bit for bit (the rows are computed independently)."""
    if tu.get_non_tensor_data(data=data, key="use_dynamic_bsz", default=True):
        return None
    configured = tu.get_non_tensor_data(data=data, key="micro_batch_size_per_gpu", default=None)
    if configured is None or response_positions(data) is None:
        return None
    n, group = len(data), int(tu.get_non_tensor_data(data=data, key="force_group_size", default=1))
    longest = max(int(prompt_response_lens(data)[1].max()), 1)
    for rows in range(n, int(configured), -1):
        if n % (rows * group) == 0 and rows * longest <= FORWARD_ONLY_POSITIONS:
            return rows
    return None


def unique_rows(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The bitwise-distinct rows of ``hidden`` ``[N, H]`` and each row's index among them; ``(hidden, None)``
    when all differ. The rows of a group share the prompt, and often the start of their responses: their hidden
    states there are the same bits, hence the same logits (the LM head and log-softmax work row by row)."""
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}.get(hidden.element_size())
    if bits is None or hidden.shape[0] < 2:
        return hidden, None
    distinct, inverse = torch.unique(hidden.contiguous().view(bits), dim=0, return_inverse=True)
    if distinct.shape[0] == hidden.shape[0]:
        return hidden, None
    return distinct.view(hidden.dtype), inverse


# Distinct rows per batched log-softmax in half precision: the kernel works row by row (the same bits as verl's
# one-row calls), spreads rows over the threads, and 16 rows of 151,669 bf16 values stay within a core's cache.
LOG_SOFTMAX_ROWS = 16


def shared_row_log_probs(logits: torch.Tensor, inverse: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``logprobs_from_logits(logits[inverse], labels)`` as verl computes it on CPU (``logprobs_from_logits_v2``:
    label logit minus the row's logsumexp in float32/64, the label's entry of the row's log-softmax otherwise),
    with each distinct row's normaliser computed once."""
    if logits.dtype in (torch.float32, torch.float64):
        lse = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
        return logits[inverse, labels] - lse[inverse]
    out = torch.empty(labels.shape, dtype=logits.dtype, device=logits.device)
    order = torch.argsort(inverse, stable=True)
    # positions of distinct rows start..end-1 are order[first[start]:first[end]]
    first = torch.cumsum(torch.bincount(inverse, minlength=logits.shape[0]), 0).tolist()
    first.insert(0, 0)
    for start in range(0, logits.shape[0], LOG_SOFTMAX_ROWS):
        end = min(start + LOG_SOFTMAX_ROWS, logits.shape[0])
        idx = order[first[start] : first[end]]
        out[idx] = F.log_softmax(logits[start:end], dim=-1)[inverse[idx] - start, labels[idx]]
    return out


class SharedImages:
    """Forward hooks on a vision tower (Qwen-VL's ``visual(pixel_values, grid_thw=...)``) that encode each distinct
    image once in forward-only passes and hand every row its copy. The 8 rows of a group carry the same image, so
    old log-probs and the teacher pass ran the tower 8 times per image (~24 % of the teacher's forward on the CPU
    default). Images are compared bit for bit, with their grid; the tower attends within an image only, so an
    image's outputs do not depend on the others in the call (tested equal, bit for bit). With gradients enabled the
    hooks do nothing."""

    def __init__(self, visual: torch.nn.Module):
        self._inverse: list[int] | None = None
        self._patches: list[int] = []
        self.merge = int(getattr(visual, "spatial_merge_size", 1)) ** 2
        self.handles = [visual.register_forward_pre_hook(self._before, with_kwargs=True),
                        visual.register_forward_hook(self._after, with_kwargs=True)]  # fmt: skip

    def _before(self, module, args, kwargs):
        self._inverse = None
        grid = kwargs.get("grid_thw")
        if torch.is_grad_enabled() or grid is None or not args or grid.shape[0] < 2:
            return None
        patches = grid.prod(-1).tolist()
        images = args[0].split(patches)
        first: dict[tuple, int] = {}
        inverse = []
        for i, image in enumerate(images):
            key = (tuple(grid[i].tolist()), image.dtype, image.contiguous().view(torch.uint8).numpy().tobytes())
            inverse.append(first.setdefault(key, len(first)))
        if len(first) == len(images):
            return None
        order = [inverse.index(u) for u in range(len(first))]  # each distinct image's first occurrence
        self._inverse, self._patches = inverse, [patches[i] for i in order]
        return (torch.cat([images[i] for i in order]), *args[1:]), {**kwargs, "grid_thw": grid[order]}

    def _expand(self, values: torch.Tensor, per_image: list[int]) -> torch.Tensor:
        parts = values.split(per_image)
        return torch.cat([parts[u] for u in self._inverse])

    def _after(self, module, args, kwargs, output):
        if self._inverse is None:
            return None
        patches, tokens = self._patches, [n // self.merge for n in self._patches]
        for name, sizes in (("last_hidden_state", patches), ("pooler_output", tokens)):
            value = getattr(output, name, None)
            if isinstance(value, torch.Tensor):
                setattr(output, name, self._expand(value, sizes))
        deepstack = getattr(output, "deepstack_features", None)
        if deepstack is not None:
            output.deepstack_features = [self._expand(v, tokens) for v in deepstack]
        self._inverse = None
        return output


class _ResponseLogitsMixin:
    """LM head, log-softmax and entropy at the response positions only (see the module docstring)."""

    _pending_rows: torch.Tensor | None = None
    _rows_hook = None
    _inverse: torch.Tensor | None = None
    _dedupe_next = False
    _images_hook = None

    def _select_rows_hook(self, module, args):
        rows, self._pending_rows = self._pending_rows, None
        if rows is None:
            return None
        hidden = args[0][rows]  # [N, hidden]: the selected positions in row order
        self._inverse = None
        if self._dedupe_next:
            hidden, self._inverse = unique_rows(hidden)
        return (hidden.unsqueeze(0), *args[1:])

    def prepare_model_inputs(self, micro_batch):
        model_inputs, output_args = super().prepare_model_inputs(micro_batch)
        if self._images_hook is None:
            visual = getattr(getattr(self.module, "model", None), "visual", None)
            self._images_hook = SharedImages(visual) if isinstance(visual, torch.nn.Module) else False
        rows = response_positions(micro_batch)
        if rows is not None:
            if self._rows_hook is None:
                head = self.module.get_output_embeddings()
                self._rows_hook = head.register_forward_pre_hook(self._select_rows_hook)
            self._pending_rows = rows
            # forward-only passes with one temperature: equal hidden states share one LM-head row
            temperature = micro_batch["temperature"]
            self._dedupe_next = not torch.is_grad_enabled() and (
                not isinstance(temperature, torch.Tensor) or bool((temperature == temperature.flatten()[0]).all()))
            output_args["response_rows"] = rows
        return model_inputs, output_args

    def forward_backward_batch(self, data, loss_function, forward_only=False):
        rows = forward_only_rows(data) if forward_only else None
        if rows is not None:
            tu.assign_non_tensor(data, micro_batch_size_per_gpu=rows)
        return super().forward_backward_batch(data, loss_function, forward_only=forward_only)

    def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        rows = output_args.get("response_rows")
        inverse, self._pending_rows, self._inverse = self._inverse, None, None
        if rows is None:
            return super().prepare_model_outputs(output, output_args, micro_batch, logits_processor_func)
        offsets = micro_batch["input_ids"].offsets()
        logits = output.logits.squeeze(0)  # [N, V], or [U, V] for the U distinct hidden states
        row_of = rows.nonzero()  # [N, 2]: (row, column), row-major as the hook selected them
        expected = int(rows.sum()) if inverse is None else int(inverse.max()) + 1
        if logits.shape[0] != expected:
            raise RuntimeError(f"LM head returned {logits.shape[0]} positions for {expected} response positions")
        flat = offsets[row_of[:, 0]] + row_of[:, 1]  # index into the packed (total_nnz,) layout
        if not output_args.get("temperature_is_one", False):
            # in place: the same division without a second [N, V] tensor (a fresh one costs its page faults, as
            # long as the division itself on CPU); the LM head's backward does not read its output
            temperature = output_args["temperature"].to(logits.dtype)[row_of[:, 0], None]
            logits = logits.div_(temperature if inverse is None else temperature[: logits.shape[0]])
        total = int(offsets[-1])

        def packed(values: torch.Tensor) -> torch.Tensor:
            full = values.new_zeros(total).index_copy(0, flat, values)
            return torch.nested.nested_tensor_from_jagged(full, offsets)

        model_output = {}
        if not tu.get_non_tensor_data(data=micro_batch, key="distillation_only", default=False):
            labels = output_args["input_ids_rmpad_rolled"][flat]
            if inverse is None:
                model_output["log_probs"] = packed(logprobs_from_logits(logits=logits, labels=labels))
            else:
                model_output["log_probs"] = packed(shared_row_log_probs(logits, inverse, labels))
        expand = (lambda v: v) if inverse is None else (lambda v: v[inverse])  # noqa: E731
        if tu.get_non_tensor_data(data=micro_batch, key="calculate_entropy", default=False):
            model_output["entropy"] = packed(expand(verl_F.entropy_from_logits(logits)))
        if tu.get_non_tensor_data(data=micro_batch, key="calculate_sum_pi_squared", default=False):
            model_output["sum_pi_squared"] = packed(expand(verl_F.calculate_sum_pi_squared_from_logits(logits)))
        return model_output


class CPUFSDPEngineWithLMHead(_NoHostOffloadMixin, _ResponseLogitsMixin, FSDPEngineWithLMHead):
    """verl's FSDP LM-head engine; forward-only instances are not host-offloaded; logits at response positions."""


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
