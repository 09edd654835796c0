"""The CPU default's cached artefacts (tiny model, warm start) are reused only when they match what
would be built now; a directory left by another version or other settings is rebuilt."""

from __future__ import annotations

import json
import os
import shutil

from verl_ext.tiny_model import build_tiny_qwen3vl, tiny_config
from verl_ext.warm_start import build_warm_start


def _mtime(path):
    return os.stat(path / "model.safetensors").st_mtime_ns


def test_tiny_model_rebuilt_when_its_config_differs(tmp_path):
    out = tmp_path / "tiny"
    build_tiny_qwen3vl(out)
    before = _mtime(out)
    assert build_tiny_qwen3vl(out) == out and _mtime(out) == before  # same config: reused

    cfg = json.loads((out / "config.json").read_text())
    cfg["vision_config"]["depth"] = 1  # as an older tiny model
    (out / "config.json").write_text(json.dumps(cfg))
    build_tiny_qwen3vl(out)
    assert _mtime(out) != before
    assert json.loads((out / "config.json").read_text())["vision_config"]["depth"] == tiny_config().vision_config.depth


def test_warm_start_rebuilt_when_settings_or_inputs_change(tmp_path, tiny_model_dir, synthetic_data_dir, monkeypatch):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    train = tmp_path / "train.parquet"
    shutil.copy(synthetic_data_dir / "synthetic" / "train.parquet", train)
    out = tmp_path / "warm"
    kw = {"max_steps": 1, "batch_size": 2, "rows": 4, "probe_rows": 0, "log": None}

    build_warm_start(base, train, out, **kw)
    first = _mtime(out)
    build_warm_start(base, train, out, **kw)
    assert _mtime(out) == first, "same settings and inputs: reused"
    monkeypatch.chdir(tmp_path)
    build_warm_start("base", "train.parquet", out, **kw)
    assert _mtime(out) == first, "the same files by relative paths: reused"

    build_warm_start(base, train, out, **{**kw, "max_steps": 2})
    second = _mtime(out)
    assert second != first and json.loads((out / "warm_start.json").read_text())["max_steps"] == 2

    st = os.stat(train)
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the train file rebuilt
    build_warm_start(base, train, out, **{**kw, "max_steps": 2})
    assert _mtime(out) != second
