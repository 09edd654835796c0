"""Shared fixtures: the tiny Qwen3-VL and a small synthetic data set, each built once per session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen3-VL with the real Qwen3 tokenizer and processor (~50 MB, ~7 s)."""
    from verl_ext.tiny_model import build_tiny_qwen3vl

    return build_tiny_qwen3vl(tmp_path_factory.mktemp("tiny_qwen3vl"))


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """``<dir>/synthetic/{train,test}.parquet`` from the project's own builder (16 + 4 rows)."""
    out = tmp_path_factory.mktemp("data")
    cmd = [
        sys.executable, str(ROOT / "data_prep" / "build_parquet.py"), "synthetic", "--out-dir", str(out),
        "--synthetic-train-size", "16", "--synthetic-test-size", "4", "--quiet",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out
