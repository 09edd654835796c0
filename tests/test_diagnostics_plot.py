"""examples/plot_token_credit.py on a dump of real estimator outputs (real tokenizer) and on a
hand-written verl file-logger log; the e2e test runs it on a dump from a real CPU training step."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from verl.trainer.ppo import core_algos

from verl_ext.diagnostics import TrainerDiagnostics, read_records
from verl_ext.diagnostics.render import plot_curves, read_metrics_jsonl
from verl_ext.tiny_model import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "plot_token_credit.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Sample:
    def __init__(self, response_ids, ground_truth):
        self.response_ids, self.ground_truth, self.extra_info = response_ids, ground_truth, {"data_source": "synthetic"}


def rlsd_dump(out_dir: Path) -> Path:
    """Dump of one RLSD step: 4 real-tokenizer responses (2 groups), seeded log-probs, verl's registry estimator."""
    tok = load_tokenizer()
    texts = [
        "<thought>The triangle has sides 3 and 4, so the hypotenuse is 5.\nCheck: 9 + 16 = 25.</thought>\n<answer>5</answer><|im_end|>",
        "<thought>Maybe 7?</thought>\n<answer>7</answer><|im_end|>",
        "<thought>角 ABC = 30°, twice is 60°.</thought>\n<answer>60</answer><|im_end|>",
        "<thought>Guess.</thought>\n<answer>45</answer><|im_end|>",
    ]
    ids = [tok.encode(t) for t in texts]
    width = max(map(len, ids))
    mask = torch.zeros(4, width)
    rewards = torch.zeros(4, width)
    for i, row in enumerate(ids):
        mask[i, : len(row)] = 1
        rewards[i, len(row) - 1] = [1.0, 0.0, 1.0, 0.0][i]
    g = torch.Generator().manual_seed(1)
    old = -torch.rand(4, width, generator=g) * 2 * mask
    teacher = (old + torch.randn(4, width, generator=g) * 0.4) * mask
    uids = np.array(["g0", "g0", "g1", "g1"], dtype=object)
    cfg = {"rlsd": {"clip_eps": 0.2}, "diagnostics": {"dump_every": 1, "num_responses": 4, "dir": str(out_dir)}}
    metrics: dict = {}
    adv, _ = core_algos.get_adv_estimator_fn("rlsd")(
        token_level_rewards=rewards, response_mask=mask, index=uids, config=cfg,
        teacher_log_probs=teacher, old_log_probs=old, global_step=1, metrics=metrics,
    )  # fmt: skip
    TrainerDiagnostics(cfg, tok, "rlsd").step(
        step=1, samples=[Sample(r, t) for r, t in zip(ids, ["5", "5", "60", "60"])], response_mask=mask,
        old_log_probs=old, teacher_log_probs=teacher, advantages=adv, token_level_rewards=rewards, uids=uids,
        lam=metrics["rlsd/lambda"],
    )  # fmt: skip
    return out_dir / "step_000001.jsonl"


def run_script(*args: str) -> subprocess.CompletedProcess:
    """The script as a user runs it (a fresh interpreter: ~20 s of imports, so used sparingly)."""
    proc = subprocess.run([sys.executable, "-W", "ignore", str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def script_main(*args: str, capsys=None) -> int:
    """The script's main() in this process."""
    spec = importlib.util.spec_from_file_location("plot_token_credit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(list(args))


def check_outputs(dump: Path, out: Path, by: str) -> None:
    records = read_records(dump)
    assert records
    for rec in records:
        png = out / f"{dump.stem}_r{rec.row}_{by}.png"
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    page = (out / f"{dump.stem}_{by}.html").read_text(encoding="utf-8")
    assert "<script" not in page and "src=" not in page and "href=" not in page  # self-contained
    spans = re.findall(r"<span title='([^']*)' style='background:rgb\((\d+),(\d+),(\d+)\)", page)
    assert len(spans) == sum(len(r) for r in records)  # one coloured span per token
    # tooltips carry the dumped numbers of the first token
    first = records[0].tokens
    assert f"delta={first['delta'][0]:.4f}" in spans[0][0] and f"advantage={first['advantage'][0]:.4f}" in spans[0][0]
    if by == "advantage":
        # RdBu: blame (A < 0) is red-dominant, credit (A > 0) blue-dominant, token by token
        k = 0
        for rec in records:
            for v in rec.tokens["advantage"]:
                _, r, _, b = spans[k]
                if abs(v) > 0.3 * max(abs(x) for x in rec.tokens["advantage"]):
                    assert (int(b) > int(r)) == (v > 0), (rec.row, v, r, b)
                k += 1


def test_plot_script_on_an_estimator_dump(tmp_path):
    dump = rlsd_dump(tmp_path / "dump")
    proc = run_script(str(dump), "--out", str(tmp_path / "plots"))  # --by advantage (default)
    assert "html:" in proc.stdout
    check_outputs(dump, tmp_path / "plots", "advantage")
    for by in ("weight", "delta"):
        assert script_main(str(dump), "--by", by, "--out", str(tmp_path / "plots")) == 0
        check_outputs(dump, tmp_path / "plots", by)


def test_plot_script_refuses_weights_without_rlsd(tmp_path):
    dump = rlsd_dump(tmp_path)
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    for d in lines:
        d["estimator"], d["tokens"]["w"], d["tokens"]["w_clipped"] = "opsd", None, None
    dump.write_text("".join(json.dumps(d) + "\n" for d in lines))
    with pytest.raises(ValueError, match="has no RLSD weights; use --by delta or advantage"):
        script_main(str(dump), "--by", "weight")


def test_curves_from_verl_file_logger(tmp_path):
    # verl's FileLogger writes {"step": s, "data": {...}} per log call; validation may come as its own line
    log = tmp_path / "rlsd.jsonl"
    lines = []
    for s in (1, 2, 3):
        lines.append({"step": s, "data": {
            "critic/score/mean": 0.1 * s, "rlsd/lambda": 0.5 - 0.01 * (s - 1), "rlsd/weight_clip_frac": 0.2,
            "rlsd/weight_clip_low_frac": 0.1, "rlsd/weight_clip_high_frac": 0.1, "rlsd/weight_mean": 1.01,
            "actor/entropy": 2.0 - 0.1 * s, "diag/answer_leak_frac": 0.25}})  # fmt: skip
    lines.append({"step": 3, "data": {"val-core/synthetic/reward/mean@1": 0.4, "val-core/mmmu/acc/mean@1": 0.3}})
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    metrics = read_metrics_jsonl(log)
    assert metrics[3]["val-core/mmmu/acc/mean@1"] == 0.3 and metrics[3]["critic/score/mean"] == pytest.approx(0.3)
    path, panels = plot_curves(metrics, tmp_path / "c.png")
    assert panels == [
        "reward", "validation (per benchmark)", "RLSD clip fractions", "RLSD mean weight / factor", "lambda",
        "entropy", "answer leakage",
    ]  # fmt: skip
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert script_main("--curves", str(log), "--out", str(tmp_path / "o")) == 0
    assert (tmp_path / "o" / "rlsd_curves.png").stat().st_size > 5000
    log.write_text('{"step": 1, "data": {}}\n{"data": {}}\n')
    with pytest.raises(ValueError, match=r"rlsd\.jsonl:2: not a verl file-logger record"):
        read_metrics_jsonl(log)


def test_curves_from_tensorboard_events(tmp_path):
    # verl's tensorboard backend writes through torch's SummaryWriter, add_scalar(key, value, step)
    from torch.utils.tensorboard import SummaryWriter

    from verl_ext.diagnostics.render import read_tensorboard

    writer = SummaryWriter(str(tmp_path / "tb"))
    for s in (1, 2):
        writer.add_scalar("critic/score/mean", 0.25 * s, s)
        writer.add_scalar("rlsd/lambda", 0.5 / s, s)
    writer.close()
    metrics = read_tensorboard(tmp_path / "tb")
    assert metrics == {1: {"critic/score/mean": 0.25, "rlsd/lambda": 0.5}, 2: {"critic/score/mean": 0.5, "rlsd/lambda": 0.25}}
    _, panels = plot_curves(metrics, tmp_path / "tb.png")
    assert panels == ["reward", "lambda"]
