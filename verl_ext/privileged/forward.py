"""Response log-probs of a batch of verl-layout rows with a plain transformers model (no verl engine).

This mirrors what verl's FSDP engine does without remove-padding (right-pad to the longest row,
attention mask from the lengths, ``[4, B, L]`` position ids, the rows' multimodal inputs
concatenated by verl's ``extract_multi_modal_inputs``), and is used by the tests and the benchmark
to check and time the teacher inputs outside a Ray cluster:

    log_probs[b, t] = log softmax(logits[b, P_b + t - 1])[y_{b,t}],   t < R_b,  0 beyond R_b
"""

from __future__ import annotations

from typing import Sequence

import torch


@torch.no_grad()
def response_log_probs(
    model,
    input_ids: Sequence[torch.Tensor],
    position_ids: Sequence[torch.Tensor],
    multi_modal_inputs: Sequence[dict | None],
    response_lengths: Sequence[int],
    pad_token_id: int = 0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``[B, max R]`` log-probs of each row's last ``R_b`` tokens (its response), zero-padded."""
    from verl.utils.model import extract_multi_modal_inputs

    bsz = len(input_ids)
    lengths = [int(x.numel()) for x in input_ids]
    width = max(lengths)
    ids = torch.full((bsz, width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((bsz, width), dtype=torch.long)
    three_d = position_ids[0].dim() == 2
    pos = torch.zeros((bsz, 4, width) if three_d else (bsz, width), dtype=torch.long)
    for b, (x, p) in enumerate(zip(input_ids, position_ids)):
        ids[b, : lengths[b]] = x
        mask[b, : lengths[b]] = 1
        pos[b, ..., : lengths[b]] = p
    if three_d:
        pos = pos.transpose(0, 1).contiguous()  # [4, B, L]
    mm = extract_multi_modal_inputs([m for m in multi_modal_inputs if m])
    mm.pop("images_seqlens", None)
    device = next(model.parameters()).device  # the batch is assembled on CPU; the model may be on a GPU
    ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
    mm = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in mm.items()}
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, **mm).logits
    out = torch.zeros((bsz, max(response_lengths)), dtype=torch.float32)
    for b, r in enumerate(response_lengths):
        n = lengths[b]
        targets = ids[b, n - r : n].to(logits.device)
        # only the response rows go through log-softmax (the full [B, L, V] one would double the memory)
        logp = torch.log_softmax(logits[b, n - r - 1 : n - 1].float() / temperature, dim=-1)
        out[b, :r] = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()
    return out
