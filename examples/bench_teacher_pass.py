"""Benchmark: the teacher log-prob pass against the old-log-prob pass on the same batch.

Both passes are one no-grad forward of the same model over the same responses; the teacher's
prompt is longer (hint + template) and the teacher pass also builds its inputs (template, tokenizer,
M-RoPE ids). Prints wall time (median of repeats), their ratio (goal <= 1.3x) and peak memory
(CUDA: max allocated; CPU: peak resident memory above the start of the pass, sampled).

    python examples/bench_teacher_pass.py                              # tiny random Qwen3-VL on CPU
    python examples/bench_teacher_pass.py --shape 8b --device cuda     # Qwen3-VL-8B shapes, random weights

Only torch, transformers and this package are used (plain forwards; no Ray cluster, no vLLM engine).
The teacher sees what training shows it (``algorithm.teacher.context``, default ``question``).
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import threading
import time

import torch
from PIL import Image


class _PeakRSS:
    """Peak resident memory above the starting point while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        import psutil

        self._proc, self._stop = psutil.Process(), threading.Event()
        self.base = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self.mib = (self.peak - self.base) / 2**20


def build(args):
    from transformers import AutoModelForImageTextToText
    from verl.utils import hf_processor, hf_tokenizer

    from verl_ext.tiny_model import build_tiny_qwen3vl

    path = str(build_tiny_qwen3vl(tempfile.gettempdir() + "/bench_tiny_qwen3vl"))
    tok, proc = hf_tokenizer(path), hf_processor(path)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.shape == "8b":
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        from verl_ext.tiny_model import tiny_config

        # Qwen3-VL-8B-Instruct's published sizes, random weights; the tiny tokenizer/processor.
        tiny = tiny_config(tok)
        text = dict(tiny.text_config.to_dict(), hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                     rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                                      "mrope_interleaved": True}, tie_word_embeddings=False)
        vision = dict(tiny.vision_config.to_dict(), depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16,
                      out_hidden_size=4096, deepstack_visual_indexes=[8, 16, 24])
        cfg = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=tiny.image_token_id,
                            video_token_id=tiny.video_token_id, vision_start_token_id=tiny.vision_start_token_id,
                            vision_end_token_id=tiny.vision_end_token_id, tie_word_embeddings=False)
        with torch.device(device):
            model = Qwen3VLForConditionalGeneration._from_config(cfg, attn_implementation=args.attn, dtype=torch.bfloat16)
    else:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, attn_implementation=args.attn)
    return tok, proc, model.to(device).eval(), device


def make_rows(tok, proc, batch, prompt_words, response_tokens, image_size, seed=0):
    from verl_ext.privileged import StudentSample

    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(batch):
        img = Image.new("RGB", (image_size, image_size), (40 * i % 255, 90, 160))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        question = " ".join(f"word{k}" for k in range(prompt_words)) + f" question {i}?"
        # the student sees a task block around the question, as our student template renders it
        task = "[TASKS]\nGoal: answer.\nFormat: think in <thought> </thought>, answer in <answer> </answer>.\n\nQuestion:\n"
        msgs = [{"role": "user", "content": [{"type": "text", "text": task}, {"type": "image", "image": img},
                                             {"type": "text", "text": question}]}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        enc = proc(text=[text], images=[img], return_tensors="pt")
        r = response_tokens - (i % 4) * response_tokens // 8  # mixed lengths
        resp = torch.randint(0, 150000, (r,), generator=g).tolist()
        rows.append(StudentSample(messages=msgs, prompt_ids=enc["input_ids"][0].tolist(), response_ids=resp,
                                  multi_modal_inputs={k: enc[k] for k in ("pixel_values", "image_grid_thw")},
                                  ground_truth=f"{i * 7}", uid=f"g{i // 4}", score=1.0,
                                  extra_info={"question": "<image>" + question, "options": []}))
    return rows


def student_inputs(builder, rows):
    out = []
    for r in rows:
        ids = torch.tensor(list(r.prompt_ids) + list(r.response_ids))
        out.append((ids, builder.position_ids(ids, r.multi_modal_inputs), r.multi_modal_inputs))
    return out


def timed_once(fn, device):
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with _PeakRSS() as rss:
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else rss.mib
    return elapsed, peak


def timed_pair(fn_a, fn_b, repeats, device):
    """Alternate the two passes so that load from other processes hits both alike; medians, max peak."""
    runs = {"a": [], "b": []}
    for _ in range(repeats):
        runs["a"].append(timed_once(fn_a, device))
        runs["b"].append(timed_once(fn_b, device))
    return [(statistics.median(t for t, _ in r), max(m for _, m in r)) for r in (runs["a"], runs["b"])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-words", type=int, default=120)
    p.add_argument("--response-tokens", type=int, default=128)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--shape", choices=("tiny", "8b"), default="tiny", help="tiny model, or Qwen3-VL-8B shapes")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, flash_attention_2, eager)")
    p.add_argument("--context", choices=("question", "student_prompt"), default="question")
    p.add_argument("--teacher-first", action="store_true", help="run the teacher pass first in each pair")
    args = p.parse_args()

    from verl_ext.privileged import PrivilegedPromptBuilder, TeacherConfig
    from verl_ext.privileged.forward import response_log_probs

    tok, proc, model, device = build(args)
    rows = make_rows(tok, proc, args.batch, args.prompt_words, args.response_tokens, args.image_size)
    lengths = [len(r.response_ids) for r in rows]
    builder = PrivilegedPromptBuilder(tok, proc, TeacherConfig(hint="answer", context=args.context))

    def to_dev(mm):
        return {k: v.to(device) for k, v in mm.items()} if mm else mm

    student = student_inputs(builder, rows)

    def old_pass():
        response_log_probs(model, [x[0].to(device) for x in student], [x[1].to(device) for x in student],
                           [to_dev(x[2]) for x in student], lengths, pad_token_id=tok.pad_token_id)

    def teacher_pass():
        teacher, _, _ = builder.build(rows)
        response_log_probs(model, [t.input_ids.to(device) for t in teacher], [t.position_ids.to(device) for t in teacher],
                           [to_dev(t.multi_modal_inputs) for t in teacher], lengths, pad_token_id=tok.pad_token_id)

    def build_only():
        builder.build(rows)

    old_pass(), teacher_pass()  # warm-up
    if args.teacher_first:
        (t_teacher, m_teacher), (t_old, m_old) = timed_pair(teacher_pass, old_pass, args.repeats, device)
    else:
        (t_old, m_old), (t_teacher, m_teacher) = timed_pair(old_pass, teacher_pass, args.repeats, device)
    t_build = statistics.median(timed_once(build_only, device)[0] for _ in range(args.repeats))
    teacher, _, _ = builder.build(rows)
    tok_old = sum(x[0].numel() for x in student)
    tok_teacher = sum(t.input_ids.numel() for t in teacher)
    unit = "MiB CUDA (max allocated above baseline)" if device == "cuda" else "MiB peak RSS above the start (sampled)"
    print(f"device={device} model={'Qwen3-VL-8B shapes (random)' if args.shape == '8b' else 'tiny Qwen3-VL'} "
          f"context={args.context} "
          f"batch={args.batch} tokens old={tok_old} teacher={tok_teacher} ({tok_teacher / tok_old:.2f}x)")
    print(f"old-log-prob pass : {t_old * 1e3:8.1f} ms   peak {m_old:8.1f} {unit}")
    print(f"teacher pass      : {t_teacher * 1e3:8.1f} ms   peak {m_teacher:8.1f} {unit}")
    print(f"  of which inputs : {t_build * 1e3:8.1f} ms (template, tokenizer, M-RoPE ids)")
    print(f"ratio teacher/old : {t_teacher / t_old:.2f}x (goal <= 1.3x)")


if __name__ == "__main__":
    main()
