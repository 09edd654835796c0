"""Benchmark: one training step's model work with the top-k JSD loss against the sampled-token form.

A step is the three passes the trainer runs on the same batch: the old-log-prob forward (no grad),
the teacher forward on a longer privileged prompt + the same responses (no grad), and the update
(forward + backward). ``sampled`` gathers the sampled tokens' log-probs and backpropagates a
``-delta_t * log pi`` loss; ``jsd_topk`` runs the project's own code on the same logits: the student's
top-k ids recorded in the old pass, the teacher's log-probs gathered at them, and the update's
per-token JSD + tail with the importance weight (:mod:`verl_ext.distill.actor`). The logits are laid
out as verl's engine hands them to its logits processor (``[1, N, V]``, N packed tokens).
torch + transformers only (no Ray, no vLLM). Prints the median step time of each form (the two
alternate, so load from other processes hits both alike), their ratio (goal <= 1.3x) and the peak
memory ratio (goal <= 1.5x; CUDA: max allocated above the start; CPU: peak resident memory, sampled).

    python examples/bench_distill_loss.py                       # tiny random Qwen3-VL (CPU or GPU)
    python examples/bench_distill_loss.py --full-size --batch 4 --response-tokens 4096 --topk 100   # 8B shape, GPU
"""

from __future__ import annotations

import argparse

import torch

from bench_teacher_pass import build, timed_pair  # same model builder and timing as the teacher-pass benchmark


def padded(seqs, device):
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for b, s in enumerate(seqs):
        ids[b, : len(s)], mask[b, : len(s)] = s, 1
    return ids, mask


def packed_logits(model, seqs, device):
    """``[1, N, V]`` logits of the valid tokens, as verl's engine passes them to its logits processor."""
    ids, mask = padded(seqs, device)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return torch.cat([logits[b, : len(s)] for b, s in enumerate(seqs)]).unsqueeze(0)


def micro_batch(prompts, responses, device, **fields):
    from tensordict import TensorDict

    from verl_ext.distill.actor import ROW

    nest = lambda ts: torch.nested.as_nested_tensor([t.to(device) for t in ts], layout=torch.jagged)  # noqa: E731
    return TensorDict(
        {"input_ids": nest([torch.cat([p, r]) for p, r in zip(prompts, responses)]), "prompts": nest(prompts),
         "responses": nest(responses), ROW: torch.arange(len(prompts)), **fields},
        batch_size=len(prompts),
    )  # fmt: skip


def sampled_log_probs(logits, data):
    """Log-probs of the sampled response tokens from packed logits (verl's log-prob gather), flat."""
    from verl_ext.distill.actor import response_rows
    from verl_ext.distill.losses import gather_log_probs

    rows, _ = response_rows(data, logits.shape[1])
    targets = data["responses"].values().unsqueeze(-1)
    return gather_log_probs(logits[0], targets, rows=rows).squeeze(-1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--hint-tokens", type=int, default=64, help="extra tokens of the teacher's privileged prompt")
    p.add_argument("--response-tokens", type=int, default=128)
    p.add_argument("--topk", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--full-size", action="store_true", help="Qwen3-VL-8B config, random weights (a GPU)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, flash_attention_2, eager)")
    args = p.parse_args()
    args.shape = "8b" if args.full_size else "tiny"  # build() (bench_teacher_pass) reads shape, device, attn

    from verl_ext.distill.actor import TEACHER_TOPK, TOPK_IDS, TopkRecorder, response_rows, self_distill_loss
    from verl_ext.distill.config import DistillOptions

    _, _, model, device = build(args)
    vocab = model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, vocab, (args.prompt_tokens,), generator=g) for _ in range(args.batch)]
    hints = [torch.randint(10, vocab, (args.hint_tokens,), generator=g) for _ in range(args.batch)]
    responses = [torch.randint(10, vocab, (args.response_tokens - i * args.response_tokens // 8,), generator=g)
                 for i in range(args.batch)]  # fmt: skip
    t_prompts = [torch.cat([p_, h]) for p_, h in zip(prompts, hints)]
    student = micro_batch(prompts, responses, device)
    teacher = micro_batch(t_prompts, responses, device)
    seqs = [torch.cat([p_, r]).to(device) for p_, r in zip(prompts, responses)]
    t_seqs = [torch.cat([p_, r]).to(device) for p_, r in zip(t_prompts, responses)]
    opts = DistillOptions(loss="jsd_topk", topk=args.topk)
    model.train()  # dropout is 0 in Qwen3-VL; train() as in the update

    def step_sampled():
        with torch.no_grad():
            old = sampled_log_probs(packed_logits(model, seqs, device), student)
            t_lp = sampled_log_probs(packed_logits(model, t_seqs, device), teacher)
        logp = sampled_log_probs(packed_logits(model, seqs, device), student)
        (-((t_lp - old) * torch.exp(logp - old)).mean()).backward()
        model.zero_grad(set_to_none=True)

    def step_topk():
        with torch.no_grad():
            logits = packed_logits(model, seqs, device)
            old = sampled_log_probs(logits, student)
            rec = TopkRecorder("student", opts.topk, opts.chunk_rows)
            rec(student_logits=logits, data=student)
            del logits
            ids = rec.nested(args.batch)
            teacher[TOPK_IDS] = torch.nested.as_nested_tensor([t.to(device) for t in ids.unbind()], layout=torch.jagged)
            rec_t = TopkRecorder("teacher", opts.topk, opts.chunk_rows)
            rec_t(student_logits=packed_logits(model, t_seqs, device), data=teacher)
            student[TOPK_IDS] = teacher[TOPK_IDS]
            student[TEACHER_TOPK] = torch.nested.as_nested_tensor(
                [t.to(device) for t in rec_t.nested(args.batch).unbind()], layout=torch.jagged
            )
        logits = packed_logits(model, seqs, device)
        per_token = self_distill_loss(None, opts, "sdpo", student_logits=logits, data=student)["distill_losses"][0]
        logp = sampled_log_probs(logits, student)
        weight = torch.exp(logp.detach() - old).clamp(max=opts.is_clip)
        rows, _ = response_rows(student, per_token.shape[0])
        (per_token[rows] * weight).mean().backward()  # token-mean of the weighted divergence
        model.zero_grad(set_to_none=True)

    step_sampled(), step_topk()  # warm-up
    (t_s, m_s), (t_k, m_k) = timed_pair(step_sampled, step_topk, args.repeats, device)
    unit = "MiB CUDA (max allocated above start)" if device == "cuda" else "MiB peak RSS above start (sampled)"
    n_tok = sum(len(s) for s in seqs)
    print(f"device={device} model={'Qwen3-VL-8B config (random)' if args.full_size else 'tiny Qwen3-VL'} vocab={vocab} "
          f"batch={args.batch} tokens student={n_tok} teacher={sum(len(s) for s in t_seqs)} topk={args.topk}")
    print(f"sampled step : {t_s * 1e3:9.1f} ms   peak {m_s:9.1f} {unit}")
    print(f"jsd_topk step: {t_k * 1e3:9.1f} ms   peak {m_k:9.1f} {unit}")
    print(f"ratio jsd_topk/sampled: time {t_k / t_s:.2f}x (goal <= 1.3x), peak memory {m_k / max(m_s, 1e-9):.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
