"""A verl FSDP checkpoint as ``--model``: written by verl's own ``FSDPCheckpointManager`` (FSDP2,
one gloo rank on CPU, mesh named ``fsdp`` as verl's engine names it), merged by
``python -m verl.model_merger``, then evaluated."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest

from verl_ext.eval.__main__ import main
from verl_ext.eval.checkpoint import resolve_model

SAVE = textwrap.dedent(
    """
    import os, sys
    import torch.distributed as dist
    from omegaconf import OmegaConf
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

    src, dst, port = sys.argv[1], sys.argv[2], sys.argv[3]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    dist.init_process_group("gloo", rank=0, world_size=1)
    model = AutoModelForImageTextToText.from_pretrained(src)
    fully_shard(model, mesh=init_device_mesh("cpu", (1,), mesh_dim_names=("fsdp",)))
    cfg = OmegaConf.create({"save_contents": ["model"], "load_contents": ["model"]})
    FSDPCheckpointManager(model=model, processing_class=AutoProcessor.from_pretrained(src), checkpoint_config=cfg).save_checkpoint(dst, global_step=1)
    dist.destroy_process_group()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def verl_checkpoint(tmp_path_factory):
    from verl_ext.tiny_model import build_tiny_qwen3vl

    root = tmp_path_factory.mktemp("ckpt")
    model = build_tiny_qwen3vl(root / "model")
    step = root / "global_step_1"
    proc = subprocess.run([sys.executable, "-c", SAVE, str(model), str(step / "actor"), str(free_port())],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return model, step


@pytest.mark.e2e
def test_command_merges_and_evaluates_a_verl_checkpoint(verl_checkpoint, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText

    from test_eval_command import FAST, make_fixtures

    model, step = verl_checkpoint
    assert resolve_model(str(model), tmp_path / "unused") == str(model)  # an HF dir is used as is
    make_fixtures(tmp_path / "data")
    main(["--model", str(step), "--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out"),
          "--benchmarks", "mathvista", "--limit", "1", *FAST])
    res = json.loads((tmp_path / "out" / "mathvista" / "results.json").read_text())
    assert res["model"] == str(step) and res["metrics"]["n"] == 1
    merged = tmp_path / "out" / "merged_model"
    a = AutoModelForImageTextToText.from_pretrained(model).state_dict()
    b = AutoModelForImageTextToText.from_pretrained(merged).state_dict()
    assert a.keys() == b.keys()
    for k in a:  # verl's merger stores bfloat16
        assert torch.equal(a[k].to(torch.bfloat16), b[k].to(torch.bfloat16)), k
    assert resolve_model(str(step), merged) == str(merged)  # merged once, reused on resume


def test_unknown_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="neither a Hugging Face model directory"):
        resolve_model(str(tmp_path), tmp_path / "m")
