"""The text CPU default's starting policy: the tiny text Qwen3 after a short supervised pass on the arithmetic set.

As the multimodal warm start (:mod:`verl_ext.warm_start`), built to leave a known gap for RL:

- ``add`` is taught: student-layout rows with their reference traces (``3 + 4 = 7, so the answer is \\boxed{7}.``);
- ``larger`` is left at chance: the target is a neutral sentence and a fair draw of the two numbers, so the model
  learns the format and the answer set but not the comparison, and groups of sampled responses mix rewards;
- a teacher that reads its hint: ``teacher_frac`` of each batch is rendered in the teacher's own layout
  (:class:`~verl_ext.privileged.PrivilegedPromptBuilder` with no processor: answer, reference and sibling hints)
  with the true trace as the response.

A fixed number of steps (no probe); greedy accuracies on the validation split are saved in ``warm_start.json``.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

TEXT_WARM_DEFAULTS = {"steps": 200, "batch_size": 16, "lr": 3e-3, "decay_after": 120, "halflife": 40, "seed": 0,
                      "rows": 1000, "gap_task": "larger", "teacher_frac": 0.5}  # fmt: skip
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
GAP_SENTENCE = "Comparing {a} and {b}, the answer is \\boxed{{{x}}}."


class TextWarmData:
    """Prompt and target token ids of arithmetic rows in the student's and the teacher's layouts."""

    def __init__(self, rows: list[dict], tokenizer, gap_task: str | None):
        from verl_ext.privileged import PrivilegedPromptBuilder, TeacherConfig

        self.rows, self.tok, self.gap_task = rows, tokenizer, gap_task
        config = {"format_instruction": BOXED_INSTRUCTION}
        self.builders = {hint: PrivilegedPromptBuilder(tokenizer, None, TeacherConfig.resolve({**config, "hint": hint}, "rlsd"))
                         for hint in ("answer", "reference", "sibling")}
        self._cache: dict = {}

    @staticmethod
    def info(row: dict) -> dict:
        return row.get("extra_info") or {}

    def numbers(self, i: int) -> list[int]:
        return [int(t) for t in self.info(self.rows[i])["question"].replace("?", " ").replace(",", " ").split() if t.isdigit()]

    def truth(self, i: int) -> str:
        return str(self.rows[i]["reward_model"]["ground_truth"])

    def trace(self, i: int) -> str:
        return str(self.info(self.rows[i])["qwen3vl_235b_thinking_response"])

    def student_target(self, i: int, rng: random.Random) -> str:
        if self.info(self.rows[i]).get("task") == self.gap_task:
            a, b = self.numbers(i)
            return GAP_SENTENCE.format(a=a, b=b, x=rng.choice([a, b]))
        return self.trace(i)

    def teacher_prompt(self, i: int, hint: str, rng: random.Random) -> list[int]:
        from verl_ext.privileged import StudentSample

        row = self.rows[i]
        builder = self.builders[hint]
        sample = StudentSample(messages=list(row["prompt"]), prompt_ids=[], response_ids=[],
                               ground_truth=self.truth(i), extra_info=self.info(row))
        context, history = builder.context(sample)
        text = {"answer": self.truth(i), "reference": self.trace(i), "sibling": self.trace(i)}[hint]
        failed = ""
        if hint == "sibling" and rng.random() < 0.5 and self.info(row).get("task") == self.gap_task:
            a, b = self.numbers(i)
            failed = GAP_SENTENCE.format(a=a, b=b, x=min(a, b))
        return builder.render_prompt_ids(builder.teacher_messages(context, text, failed, history), None)

    def student_prompt(self, i: int) -> list[int]:
        if i not in self._cache:
            self._cache[i] = self.tok.apply_chat_template(list(self.rows[i]["prompt"]), add_generation_prompt=True,
                                                          tokenize=False)
        return self.tok.encode(self._cache[i], add_special_tokens=False)

    def example(self, prompt: list[int], target: str) -> dict:
        import torch

        ids = prompt + self.tok.encode(target, add_special_tokens=False) + [self.tok.eos_token_id]
        return {"input_ids": torch.tensor(ids), "n_prompt": len(prompt)}

    def draw(self, i: int, rng: random.Random, teacher_frac: float) -> dict:
        if rng.random() < teacher_frac:
            return self.example(self.teacher_prompt(i, rng.choice(("answer", "reference", "sibling")), rng), self.trace(i))
        return self.example(self.student_prompt(i), self.student_target(i, rng))


def measure(model, data: TextWarmData, indices: list[int], batch_size: int = 32) -> dict[str, float]:
    """Greedy accuracy per task of the student and of the teacher given the answer, graded by the training reward."""
    import torch

    from verl_ext.reward import compute_score

    tok = data.tok

    def responses(prompts):
        out, side = [], tok.padding_side
        tok.padding_side = "left"
        try:
            for s in range(0, len(prompts), batch_size):
                enc = tok.pad({"input_ids": prompts[s:s + batch_size]}, return_tensors="pt")
                with torch.no_grad():
                    gen = model.generate(**enc, do_sample=False, max_new_tokens=32, pad_token_id=tok.pad_token_id,
                                         eos_token_id=tok.eos_token_id)
                out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        finally:
            tok.padding_side = side
        return out

    rng = random.Random(0)
    result: dict[str, float] = {}
    for who, prompts in (("student_acc", [data.student_prompt(i) for i in indices]),
                         ("teacher_answer_acc", [data.teacher_prompt(i, "answer", rng) for i in indices])):
        ok = [compute_score(data.rows[i].get("data_source"), text, data.truth(i), data.info(data.rows[i]))["acc"] >= 0.5
              for i, text in zip(indices, responses(prompts))]
        result[who] = sum(ok) / len(ok)
        for task in sorted({data.info(data.rows[i]).get("task") for i in indices}):
            k = [n for n, i in enumerate(indices) if data.info(data.rows[i]).get("task") == task]
            result[f"{who}/{task}"] = sum(ok[n] for n in k) / len(k)
    return result


def build_text_warm_start(model_dir, train_parquet, out_dir, val_parquet=None, overwrite: bool = False, log=print,
                          **options) -> Path:
    """Fine-tune the tiny text model in ``model_dir`` as the module docstring says and save it to ``out_dir``
    (reused when its ``warm_start.json`` has the same settings and inputs, unless ``overwrite``)."""
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_ext.warm_start import lr_at, sft_loss

    unknown = set(options) - set(TEXT_WARM_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown text warm-start options {sorted(unknown)}; valid: {sorted(TEXT_WARM_DEFAULTS)}")
    opts = {**TEXT_WARM_DEFAULTS, **options}
    out, record = Path(out_dir), Path(out_dir) / "warm_start.json"
    settings = {"base": str(Path(model_dir).resolve()), "train": str(Path(train_parquet).resolve()),
                "val": str(Path(val_parquet).resolve()) if val_parquet else None, **opts,
                "mtimes": [(Path(model_dir) / "model.safetensors").stat().st_mtime, Path(train_parquet).stat().st_mtime]}
    if record.is_file() and (out / "model.safetensors").is_file() and not overwrite:
        done = json.loads(record.read_text())
        if {k: done.get(k) for k in settings} == settings:
            return out
    start = time.time()
    torch.manual_seed(opts["seed"])
    rng = random.Random(opts["seed"])
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="sdpa")
    table = pq.read_table(str(train_parquet))
    n = min(opts["rows"] or table.num_rows, table.num_rows)
    data = TextWarmData(table.slice(0, n).to_pylist(), tok, opts["gap_task"])
    optim = torch.optim.AdamW(model.parameters(), lr=opts["lr"], weight_decay=0.0)
    losses = []
    model.train()
    for step in range(1, opts["steps"] + 1):
        batch = [data.draw(rng.randrange(n), rng, opts["teacher_frac"]) for _ in range(opts["batch_size"])]
        loss = sft_loss(model, batch, tok.pad_token_id)
        for group in optim.param_groups:
            group["lr"] = lr_at(step, opts["lr"], opts["decay_after"], opts["halflife"])
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        losses.append(loss.item())
        if log and (step % 20 == 0 or step == opts["steps"]):
            log(f"text warm start step {step}/{opts['steps']}: loss {sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    result = {**settings, "final_loss": losses[-1]}
    if val_parquet:
        val = TextWarmData(pq.read_table(str(val_parquet)).to_pylist(), tok, opts["gap_task"])
        result["validation"] = measure(model, val, list(range(len(val.rows))))
    result["seconds"] = round(time.time() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    record.write_text(json.dumps(result, indent=1))
    return out
